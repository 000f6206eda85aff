"""``train.py finetune --freeze-backbone`` (linear probe): only the classifier learns; the backbone's weights
and its BN/TGN running statistics come out bit for bit as they went in."""

from __future__ import annotations

import pytest
import torch

import train
from train_helpers import QUIET, TINY_DATA, TINY_MODEL


@pytest.fixture(scope="module")
def pretrained(motion_shards, tmp_path_factory):
    shards = motion_shards
    out = tmp_path_factory.mktemp("probe_pre")
    train.main(["pretrain", "--data", str(shards), "--arch", "r3d_18", "--norm", "tgn", "--tgn-groups", "2,2,1,1,1",
                *TINY_DATA, *TINY_MODEL, *QUIET, "--no-tensorboard", "--max-steps", "2", "--out", str(out)])
    return shards, out / "checkpoint.pt"


def _backbone(ckpt_path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt_path, weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.parametrize("frozen", [True, False])
def test_linear_probe_leaves_the_backbone_bit_identical(pretrained, tmp_path, frozen):
    shards, ckpt = pretrained
    args = ["finetune", "--data", str(shards), *TINY_DATA, *QUIET, "--no-tensorboard", "--max-steps", "4", "--lr", "0.5",
            "--warmup-steps", "0", "--init", str(ckpt), "--out", str(tmp_path / "ft")]
    summary = train.main([*args, "--freeze-backbone"] if frozen else args)
    assert summary["step"] == 4
    before, after = _backbone(ckpt), _backbone(tmp_path / "ft" / "checkpoint.pt")
    assert before.keys() == after.keys()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in before if k.endswith("weight") and before[k].dim() == 5]
    assert stats and weights
    if frozen:
        for k in before:  # weights, biases, running statistics, batch counters
            assert torch.equal(before[k], after[k]), k
    else:  # the same run without the flag does move them: the comparison above can fail
        assert not all(torch.equal(before[k], after[k]) for k in weights)
        assert not all(torch.equal(before[k], after[k]) for k in stats)
    head = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=True)
    assert head["config"]["optim"]["freeze_backbone"] is frozen and head["mode"] == "finetune"


def test_freeze_backbone_is_refused_for_pretraining(pretrained, tmp_path):
    shards, _ = pretrained
    with pytest.raises(ValueError, match="--freeze-backbone is for finetune"):
        train.main(["pretrain", "--data", str(shards), "--freeze-backbone", "--out", str(tmp_path)])
