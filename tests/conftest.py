"""Shard sets read by more than one test file, built once per session by the real shard builder
(``preprocess.build_shards``) from videos made at run time. Tests only read them: a test that needs a
changed shard writes its own copy under ``tmp_path``. A set that one file alone reads is that file's
fixture."""

from __future__ import annotations

import json
import tarfile

import pytest

from pipeline import list_shards
from pipeline_helpers import LONG_VIDEOS, build_numbered_shards
from reliability_helpers import build_tiny_shards, tar_samples
from train_helpers import build_motion_shards


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    """The loader tests' output folder: ``pipeline_helpers.VIDEOS`` (8 frame-numbered videos, 12 to 160
    frames, classes walk/run) as VP9 GOP 16, at most 3 per shard. Served by nginx in the remote tests."""
    return build_numbered_shards(tmp_path_factory.mktemp("pipeline_shards"))


@pytest.fixture(scope="session")
def shards(shard_dir):
    """The train split's tar paths of ``shard_dir`` (3 shards)."""
    return list_shards(shard_dir)


@pytest.fixture(scope="session")
def key_info(shard_dir, shards):
    """key -> (source name, frames, label) from the shards' json."""
    info = {}
    for tar_path in shards:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    name = meta["source"].rsplit("/", 1)[-1].split(".")[0]
                    info[member.name[: -len(".json")]] = (name, meta["frames"], meta["label"])
    return info


@pytest.fixture(scope="session")
def vp9_long(tmp_path_factory):
    """Tar paths of ``pipeline_helpers.LONG_VIDEOS`` (60 to 300 frames) as VP9 with a closed GOP of 16."""
    return list_shards(build_numbered_shards(tmp_path_factory.mktemp("vp9_long"), videos=LONG_VIDEOS, gop=16))


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> dict[str, bytes]:
    """One valid sample's members (VP9 mp4, json, cls; 24 frames of 96x64) as the real builder wrote them:
    what the loaders read, and what the fuzz and hostile-shard tests damage."""
    out = build_tiny_shards(tmp_path_factory.mktemp("tiny_sample"), videos={"a/v0": 24})
    (tar,) = sorted((out / "shards").glob("*.tar"))
    ((_key, members),) = tar_samples(tar).items()
    return members


@pytest.fixture(scope="session")
def motion_shards(tmp_path_factory):
    """Motion-class shards (32x32, 24 frames; labelled ``train`` and ``test`` splits) for train.py's tests."""
    return build_motion_shards(tmp_path_factory.mktemp("train_motion"))
