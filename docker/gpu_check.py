"""The GPU check in the image: ``device/check.py`` (its rows: docs/gpu.md "The GPU check"), run by docker/gpu_check.sh
on shard sets it builds first (the image has ffmpeg and every package; the offline bundle is for machines without)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
