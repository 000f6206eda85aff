"""``pipeline/io/shard_reader.py``: listing a shard folder's split from its manifest (hostile shards are in
``test_untrusted_shards.py``, URLs in ``test_remote_shards.py``)."""

from __future__ import annotations

import json

import pytest

from pipeline import list_shards


def test_list_shards_reads_manifest(shard_dir, shards):
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    assert shards == [str(shard_dir / e["tar"]) for e in manifest["splits"]["train"]["shards"]]
    assert len(shards) == 3  # 8 videos, at most 3 per shard
    assert list_shards(shards[:2]) == shards[:2]
    with pytest.raises(FileNotFoundError, match="split"):
        list_shards(shard_dir, split="val")
