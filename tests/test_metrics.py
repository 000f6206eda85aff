"""training/metrics.py on hand-made logits: top-k, per-class accuracy, the confusion matrix, and the flags on
ranking metrics whose k reaches the number of items ranked."""

from __future__ import annotations

import math

import pytest
import torch

from training.metrics import (RECALL_KS, classification_report, confusion_matrix, k_at_least, per_class_accuracy, retrieval_recall,
                              topk_accuracy)

CLASSES = ["a", "b", "c", "d", "e", "f"]


def test_topk_accuracy_counts_the_target_anywhere_in_the_k_best():
    logits = torch.tensor([
        [0.9, 0.8, 0.7, 0.1, 0.0, 0.0],  # target 2: third best
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # target 0: last
        [5.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # target 0: best
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # unlabelled: ignored
    ])
    target = torch.tensor([2, 0, 0, -1])
    assert topk_accuracy(logits, target, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, target, 2) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, target, 3) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, target, 5) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, target, 6) == 1.0
    assert topk_accuracy(logits, target, 50) == 1.0  # k beyond the classes counts as all of them
    assert math.isnan(topk_accuracy(logits, torch.full((4,), -1), 5))


def test_confusion_matrix_rows_are_true_classes_and_per_class_accuracy_is_its_diagonal_share():
    predicted = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    target = torch.tensor([0, 1, 1, 2, 2, 0, -1])
    m = confusion_matrix(predicted, target, 4)
    assert m.tolist() == [[1, 0, 1, 0],
                          [1, 1, 0, 0],
                          [0, 0, 2, 0],
                          [0, 0, 0, 0]]
    assert per_class_accuracy(m) == [0.5, 0.5, 1.0, None]  # class 3 has no sample: no accuracy, not 0


def test_classification_report_on_a_hand_made_case():
    # Four videos, the first in two segments; K = 2 clips per sample; 6 classes.
    logits = torch.zeros(5, 2, 6)
    logits[0, :, 1], logits[0, :, 0] = 1.0, 0.5  # video v0 (label 0), segment 1: both clips say 1, then 0
    logits[1, :, 0] = 3.0  # v0, segment 2: both say 0, strongly -> v0's mean says 0
    logits[2, 0, 2], logits[2, 0, 3] = 2.0, 1.0  # v1 (label 3): one clip says 2 (then 3), the other 3
    logits[2, 1, 3] = 0.5  # -> v1's mean says 2 (1.0), then 3 (0.75)
    logits[3, 0, 4], logits[3, 1, 4] = 1.0, 1.0  # v2 (label 4): right
    logits[4, 0] = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])  # v3 (label 5): 5 is last of six
    logits[4, 1] = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    report, confusion = classification_report(["v0", "v0", "v1", "v2", "v3"], logits, torch.tensor([0, 0, 3, 4, 5]), CLASSES)
    assert report["clip_acc"] == pytest.approx(5 / 10)  # v0: 2 of 4 clips; v1: 1 of 2; v2: 2 of 2; v3: 0 of 2
    assert report["video_acc"] == pytest.approx(2 / 4)  # v0 and v2
    assert report["num_videos"] == 4 and report["num_clips"] == 10
    assert report["video_top5"] == pytest.approx(3 / 4)  # v1's 3 is second; v3's 5 is sixth
    assert report["clip_top5"] == pytest.approx(8 / 10)  # every clip but v3's two
    assert report["per_class_acc"] == {"a": 1.0, "b": None, "c": None, "d": 0.0, "e": 1.0, "f": 0.0}
    assert report["mean_class_acc"] == pytest.approx(2 / 4)
    assert report["k_at_least_classes"] == []  # 6 classes: top-5 still ranks
    expected = torch.zeros(6, 6, dtype=torch.long)
    expected[0, 0] = expected[3, 2] = expected[4, 4] = expected[5, 0] = 1
    assert torch.equal(confusion, expected)
    with pytest.raises(ValueError, match="6 logits per clip but 5 class names"):
        classification_report(["v0"], logits[:1], torch.tensor([0]), CLASSES[:5])


def test_top5_of_five_classes_or_fewer_is_flagged():
    logits = torch.randn(3, 1, 5)
    report, _ = classification_report(["x", "y", "z"], logits, torch.tensor([0, 1, 4]), CLASSES[:5])
    assert report["video_top5"] == 1.0 and report["k_at_least_classes"] == ["top5"]


def test_recall_at_k_is_flagged_when_k_reaches_the_gallery_size():
    gallery = torch.eye(4)
    query = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    r = retrieval_recall(query, torch.tensor([1, 9]), gallery, torch.tensor([0, 1, 2, 3]), RECALL_KS)
    # query 0 finds its class at rank 2; query 1's class is not in the gallery at all.
    assert r == {"R@1": 0.0, "R@5": 0.5, "R@10": 0.5, "R@20": 0.5, "R@50": 0.5}
    assert k_at_least(RECALL_KS, 4, "R@") == ["R@5", "R@10", "R@20", "R@50"]
    assert k_at_least(RECALL_KS, 5, "R@") == ["R@5", "R@10", "R@20", "R@50"]  # R@5 of 5 items: every item
    assert k_at_least(RECALL_KS, 6, "R@") == ["R@10", "R@20", "R@50"]
    assert k_at_least(RECALL_KS, 51, "R@") == []
