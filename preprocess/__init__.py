"""Offline shard builder: videos in, WebDataset shards (+ DALI index files, manifest, rejects) out.

``build_shards`` is the Python API; ``preprocess SRC OUT`` (or ``python -m preprocess``) the CLI.
"""

from .build import BuildResult, PreprocessError, build_shards
from .media import CODECS, EncodeParams

__all__ = ["BuildResult", "CODECS", "EncodeParams", "PreprocessError", "build_shards"]
