"""model/networks.py: a backbone carried from one classifier into another (fine-tuning on a second dataset)."""

from __future__ import annotations

import pytest
import torch

from model import PretextModel, VideoClassifier, build_backbone, load_pretrained_backbone

TINY = 4


def _classifier(num_classes: int, seed: int) -> VideoClassifier:
    torch.manual_seed(seed)
    return VideoClassifier(build_backbone("r3d_18", base_width=TINY), num_classes=num_classes)


def test_a_classifier_checkpoint_gives_its_backbone_and_its_head_is_dropped():
    ucf = _classifier(101, seed=1)
    ucf(torch.randn(2, 3, 8, 32, 32))  # running statistics away from their initial values
    hmdb = _classifier(51, seed=2)
    head_before = {k: v.clone() for k, v in hmdb.head.state_dict().items()}
    dropped = load_pretrained_backbone(hmdb, {f"module.{k}": v for k, v in ucf.state_dict().items()})
    assert dropped == ["head"]
    for key, value in ucf.backbone.state_dict().items():
        assert torch.equal(hmdb.backbone.state_dict()[key], value), key
    for key, value in hmdb.head.state_dict().items():  # the new head keeps its own init (51 classes, not 101)
        assert torch.equal(value, head_before[key]), key
    assert hmdb.head.fc.weight.shape == (51, ucf.backbone.out_features)


def test_pretext_heads_are_named_and_anything_else_is_still_refused():
    pretext = PretextModel(build_backbone("r3d_18", base_width=TINY), num_clips=3, num_speeds=4, head="both")
    assert load_pretrained_backbone(_classifier(5, seed=0), pretext.state_dict()) == ["sort_head", "speed_head"]
    speed_only = PretextModel(build_backbone("r3d_18", base_width=TINY), num_clips=3, num_speeds=4, head="speed")
    assert load_pretrained_backbone(_classifier(5, seed=0), speed_only.state_dict()) == ["speed_head"]
    with pytest.raises(ValueError, match=r"neither backbone.\* nor head keys.*classifier\.weight"):
        load_pretrained_backbone(_classifier(5, seed=0), {**pretext.state_dict(), "classifier.weight": torch.zeros(1)})
