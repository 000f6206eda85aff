"""The offline bundle's layout and the limits of the transfers that carry it (docs/gpu.md "The GPU check
without Docker or network"), shared by the builder (``bundle.py``, on a CPU machine with network), the
installer (``install.py``) and the check (``check.py``, on the GPU machine). Standard library only: the
installer runs before anything is installed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

BUNDLE = ".device"
"""The bundle's folder, relative to the repository root (git-ignored)."""
WHEELS, DALI_PARTS, SHARDS, SITE, OUT, CACHE = "wheels", "dali", "shards", "site", "out", "cache"
"""Its sub-folders: wheels to install, the DALI wheel's parts, the check's shard sets, the private install
target, the check's default output folder, and downloads kept for the next build (never carried)."""
MANIFEST, RUN = "manifest.json", "run.sh"
INSTALLED = "INSTALLED.json"
"""Written into ``SITE`` by the installer: what it installed, from which bundle, how."""

MIB = 2**20
TRANSFER_LIMIT = 64 * MIB
"""Bytes one transfer may carry in all: the repository's copy plus the bundle paths it names."""
PART_LIMIT = 60 * MIB
"""Largest DALI wheel part."""
REPO_MARGIN = 2 * MIB
"""Room kept for the repository growing between the build and the transfers (a note, a new test)."""

#: The check's shard sets: name -> what it is (built by bundle.py, read by check.py).
SETS = {
    "vp9": "frame-numbered VP9, GOP 16, 300-frame videos (frame identity, pixel agreement)",
    "h264": "frame-numbered H.264 with B-frames, GOP 16, 300-frame videos (frame identity, pixel agreement)",
    "mjpeg": "frame-numbered MJPEG (the mixed decoder refuses it: routed to a host path)",
    "small": "frame-numbered VP9 at 96x96 (below NVDEC's 128x128: routed to a host path)",
    "motion": "motion classes, 128 px, 300-frame videos: train split (pretrain, loader rates) and labelled test split (eval)",
    "colour": "ffmpeg's testsrc2 (saturated colour), 64 frames, in VP9 (split vp9) and H.264 (split h264): pixel agreement",
}


def read_manifest(bundle: Path) -> dict:
    return json.loads((Path(bundle) / MANIFEST).read_text())


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (the DALI parts are tens of MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
