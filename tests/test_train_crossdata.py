"""``train.py finetune --init`` a checkpoint fine-tuned on another dataset (e.g. HMDB51 from a UCF101-fine-tuned
network): the backbone is taken, the old classifier head is dropped, one log line says so."""

from __future__ import annotations

import shutil

import pytest
import torch

import train
from preprocess import build_shards
from train_helpers import QUIET, TINY_DATA, TINY_MODEL, build_motion_shards

FOUR_CLASSES = ["down_fast", "down_slow", "up_fast", "up_slow"]


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """The 6-class motion shards, and a second dataset of 4 of its classes (another label map)."""
    first = build_motion_shards(tmp_path_factory.getbasetemp() / "train_motion")
    src, root = first.parent / "src", tmp_path_factory.mktemp("four_classes")
    for split in ("train", "test"):
        for name in FOUR_CLASSES:
            shutil.copytree(src / split / name, root / "src" / split / name)
        build_shards(root / "src" / split, root / "shards", split=split, labels_from_dirs=True, short_side=32, min_frames=8, progress=False)
    return first, root / "shards"


def test_finetune_from_a_checkpoint_fine_tuned_on_other_classes(two_datasets, tmp_path, capsys):
    first, second = two_datasets
    common = [*TINY_DATA, *QUIET, "--no-tensorboard", "--val-fraction", "0"]
    train.main(["finetune", "--data", str(first), "--arch", "c3d", *TINY_MODEL, *common, "--init", "scratch", "--max-steps", "2",
                "--out", str(tmp_path / "six")])
    six = torch.load(tmp_path / "six" / "checkpoint.pt", weights_only=True)
    capsys.readouterr()
    # a vanishing learning rate: the backbone must come out as it went in
    train.main(["finetune", "--data", str(second), *common, "--init", str(tmp_path / "six" / "checkpoint.pt"), "--max-steps", "1",
                "--lr", "1e-12", "--weight-decay", "0", "--out", str(tmp_path / "four")])
    log = " ".join(capsys.readouterr().out.split())
    assert "its classifier head (6 classes) is dropped, a new one for 4 classes is trained" in log
    four = torch.load(tmp_path / "four" / "checkpoint.pt", weights_only=True)
    assert four["classes"] == FOUR_CLASSES and four["config"]["model"]["arch"] == "c3d"  # the network of the checkpoint
    assert four["model"]["head.fc.weight"].shape[0] == 4 and six["model"]["head.fc.weight"].shape[0] == 6
    weights = [k for k in six["model"] if k.startswith("backbone.") and six["model"][k].dim() == 5]
    assert weights
    for k in weights:
        assert torch.allclose(four["model"][k], six["model"][k], atol=1e-7), k
    res = train.main(["eval", "--data", str(second), "--init", str(tmp_path / "four" / "checkpoint.pt"), *TINY_DATA, *QUIET, "--no-tensorboard"])
    assert sorted(res["per_class_acc"]) == FOUR_CLASSES and res["k_at_least_classes"] == ["top5"]  # 4 classes: top-5 is every class
