"""Offline shard builder: videos in, WebDataset shards (+ DALI index files, manifest, rejects) out.

``build_shards`` is the Python API; ``preprocess SRC OUT`` (or ``python -m preprocess``) the CLI.
"""

from __future__ import annotations

import importlib

__all__ = ["BuildResult", "CODECS", "EncodeParams", "PreprocessError", "build_shards"]

_HOMES = {"BuildResult": "build", "PreprocessError": "build", "build_shards": "build", "CODECS": "media", "EncodeParams": "media"}


def __getattr__(name: str):
    # Imported on first use: a pool worker (a fresh interpreter per process) imports only what it runs
    # (preprocess.pool and preprocess.media, about 0.1 s of CPU less per worker than the whole builder).
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
