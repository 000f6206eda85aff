"""``python -m preprocess SRC OUT``: same as the ``preprocess`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
