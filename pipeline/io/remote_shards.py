"""A shard set at a URL (read through ``remote.py``): its split's tars from its manifest, its label names,
each shard's index (one read; a remote tar is never scanned) and its samples' jsons (concurrent ranged reads).
``shards.py`` turns these into sample records exactly as for local shards."""

from __future__ import annotations

from pathlib import Path

from pipeline.io.remote import RemoteOptions, RemoteReadError, is_url, join, read, read_many, sibling
from shardformat import IndexMember, ManifestError, load_manifest, names_in_label_order, parse_index, parse_manifest
from shardformat.manifest import MANIFEST_NAME


def list_remote_shards(paths: list[str], split: str, remote: RemoteOptions) -> list[str]:
    """Tar URLs (and paths) as given, or the ``split`` of the one OUT folder URL in ``paths`` (from its manifest)."""
    if len(paths) > 1 or paths[0].endswith(".tar"):
        return paths
    url = join(paths[0], MANIFEST_NAME)
    splits = read_manifest(paths[0], remote)["splits"]
    if split not in splits:
        raise FileNotFoundError(f"{url} has no split {split!r} (has {sorted(splits)})")
    tars = [join(paths[0], entry["tar"]) for entry in splits[split]["shards"]]
    if not tars:
        raise FileNotFoundError(f"no {split!r} shards in {url}")
    return tars


def read_manifest(out_dir, remote: RemoteOptions | None = None) -> dict:
    """``OUT/manifest.json`` of a local folder or of a folder URL (read with ``remote``)."""
    if not is_url(str(out_dir)):
        return load_manifest(out_dir)
    url = join(str(out_dir), MANIFEST_NAME)
    try:
        return parse_manifest(read(url, remote or RemoteOptions()), url)
    except RemoteReadError as e:
        raise FileNotFoundError(f"cannot read the manifest of the remote folder {out_dir} ({e}); "
                                "give the shard URLs (.tar) instead if it has none") from None


def label_names(out_dir, remote: RemoteOptions | None = None) -> list[str]:
    """Class names in label order (index = label) of a shard set, local or at a URL, whose labels are
    exactly 0..C-1. Raises ManifestError naming the manifest."""
    if is_url(str(out_dir)):
        source = join(str(out_dir), MANIFEST_NAME)
    else:
        source = str(Path(out_dir) / MANIFEST_NAME)
        if not Path(source).exists():
            raise ManifestError(f"{source} not found: a labelled shard set written by `preprocess` is needed")
    return names_in_label_order(read_manifest(out_dir, remote)["label_map"], source)


def read_remote_index(shard: str, remote: RemoteOptions) -> list[list[IndexMember]]:
    """The parsed index file beside a URL shard (one read). Raises ValueError naming the shard."""
    idx = sibling(shard, ".idx")
    try:
        text = read(idx, remote).decode()
    except RemoteReadError as e:
        raise ValueError(f"unreadable shard {shard}: its index file could not be read ({e}); a remote shard needs "
                         "the index file that preprocess writes beside it (scanning would download the whole tar)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"unreadable shard {shard} ({idx}): {e}") from None
    try:
        return parse_index(text, idx)
    except ValueError as e:
        raise ValueError(f"unreadable shard {shard}: {e}") from None


def read_jsons(shard: str, remote: RemoteOptions, entries: list[tuple[str, dict]], max_bytes: int) -> dict:
    """key -> the bytes of its json member (or its RemoteReadError), for the members of at most ``max_bytes``."""
    wanted = [(key, members["json"]) for key, members in entries if "json" in members and members["json"][1] <= max_bytes]
    return dict(zip((key for key, _ in wanted), read_many(shard, remote, [r for _, r in wanted])))
