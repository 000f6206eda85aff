"""``OUT/manifest.json``: what a shard set holds, and the label map its splits share.

Layout (JSON object)::

    {"format": "speedssl-shards/1",
     "label_map": {"<class name>": <int>, ...},          # one map for every split of OUT
     "splits": {"<split>": {"shards": [{"tar": "shards/train-000000.tar", "index": "shards/train-000000.idx",
                                        "samples": int, "frames": int, "bytes": int}, ...],
                            "samples", "videos", "inputs", "rejected", "frames", "bytes", "video_ext",
                            "params", "input_fingerprint", "tools"}}}

Paths inside are relative to OUT. Writers hold :func:`manifest_lock` around a read-modify-write, so
concurrent ``preprocess`` runs of different splits of one OUT do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from shardformat.files import atomic_write, locked

MANIFEST_FORMAT = "speedssl-shards/1"
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """A manifest (or its label map) that breaks the contract; the message names the file."""


def load_manifest(out: str | Path) -> dict:
    """The manifest of shard set ``out``; an empty one (no labels, no splits) if it has none yet."""
    path = Path(out) / MANIFEST_NAME
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "label_map": {}, "splits": {}}
    return parse_manifest(path.read_bytes(), str(path))


def parse_manifest(data: bytes | str, source: str) -> dict:
    """A manifest from its bytes; ``source`` (a path or URL) names it in errors."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"{source} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{source} is not a {MANIFEST_FORMAT} manifest")
    return manifest


def save_manifest(out: str | Path, manifest: dict) -> None:
    """Write the manifest atomically (sorted keys, so equal content gives equal bytes)."""
    atomic_write(Path(out) / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def manifest_lock(out: str | Path) -> Iterator[None]:
    """Hold this while reading, changing and saving ``out``'s manifest (blocks until free)."""
    with locked(Path(out) / ".manifest.lock"):
        yield


def check_label_map(label_map: dict, source: str) -> None:
    """A label map is ``{name: int}`` with distinct non-negative ints; raise :class:`ManifestError` if not."""
    for name, value in label_map.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ManifestError(f"{source}: label map value for {name!r} must be a non-negative int, got {value!r}")
    if len(set(label_map.values())) != len(label_map):
        raise ManifestError(f"{source}: label map gives two names the same integer")


def names_in_label_order(label_map: dict, source: str) -> list[str]:
    """Class names in label order (index = label) of a label map whose labels are exactly 0..C-1."""
    check_label_map(label_map, source)
    names = sorted(label_map, key=label_map.get)
    if [label_map[n] for n in names] != list(range(len(names))):
        raise ManifestError(f"{source}: labels are not 0..C-1: {label_map}")
    return names


def split_tars(out: str | Path, split: str) -> list[Path] | None:
    """The tar paths of ``split`` as the manifest lists them, or None when ``out`` has no manifest.
    Raises ``FileNotFoundError`` if the manifest exists but has no such split."""
    out = Path(out)
    if not (out / MANIFEST_NAME).is_file():
        return None
    splits = load_manifest(out)["splits"]
    if split not in splits:
        raise FileNotFoundError(f"{out / MANIFEST_NAME} has no split {split!r} (has {sorted(splits)})")
    return [out / entry["tar"] for entry in splits[split]["shards"]]
