"""The on-disk contract between ``preprocess`` (writes shard sets), ``pipeline`` (reads them) and
``training`` (reads their label map): one home for the file formats, imported by all three and
importing none of them. The format itself is described in docs/design.md §1.

A shard set ``OUT/`` holds:

- ``shards/{split}-{NNNNNN}.tar``: WebDataset tars, one sample per video (``KEY.mp4|webm|avi``,
  ``KEY.json``, ``KEY.cls``; names and the json schema: :mod:`shardformat.sample`);
- ``shards/{split}-{NNNNNN}.idx``: the DALI index of each tar (:mod:`shardformat.index`);
- ``manifest.json``: parameters, tool versions, every shard with its sample and frame counts, and the
  label map shared by all splits (:mod:`shardformat.manifest`);
- ``rejects.jsonl``: one line per rejected input.

Every file is published atomically (:mod:`shardformat.files`).
"""

from shardformat.files import FileLockedError, atomic_file, atomic_write, fsync_dir, locked
from shardformat.index import INDEX_VERSION, IndexMember, format_index, index_path, parse_index, read_index
from shardformat.sample import (
    SAMPLE_FIELDS,
    VIDEO_EXTS,
    VIDEO_FORMATS,
    encode_sample_json,
    member_name,
    sample_json_problem,
    split_member_name,
)
from shardformat.manifest import (
    MANIFEST_FORMAT,
    ManifestError,
    check_label_map,
    load_manifest,
    manifest_lock,
    names_in_label_order,
    parse_manifest,
    save_manifest,
    split_tars,
)

__all__ = [
    "FileLockedError", "atomic_file", "atomic_write", "fsync_dir", "locked",
    "INDEX_VERSION", "IndexMember", "format_index", "index_path", "parse_index", "read_index",
    "MANIFEST_FORMAT", "ManifestError", "check_label_map", "load_manifest", "manifest_lock", "names_in_label_order", "parse_manifest",
    "save_manifest", "split_tars",
    "SAMPLE_FIELDS", "VIDEO_EXTS", "VIDEO_FORMATS", "encode_sample_json", "member_name", "sample_json_problem", "split_member_name",
]
