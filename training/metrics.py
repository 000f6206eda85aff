"""Evaluation metrics: clip/video top-1 and top-5 accuracy, per-class accuracy and the confusion matrix, and
nearest-neighbour retrieval recall (as in VCOP and PRP).

A ranking metric at k (top-k accuracy, recall@k) says nothing once k reaches the number of items ranked (the
classes, the gallery): every item is then "in the top k". Such k are reported, and named by :func:`k_at_least`
so that eval.json flags them instead of presenting a 1.0 as a result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

RECALL_KS = (1, 5, 10, 20, 50)
#: The top-k accuracies reported besides top-1.
TOP_KS = (5,)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy of ``logits (N, C)`` against ``target (N,)``; entries with target < 0 are ignored."""
    return accuracy_tensor(logits, target).item()


def accuracy_tensor(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`accuracy` as a 0-dim float tensor on the logits' device, without a host sync (NaN when every
    target is ignored: 0 / 0)."""
    keep = target >= 0
    correct = ((logits.argmax(-1) == target) & keep).sum()
    return correct.float() / keep.sum().float()


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """Share of ``target (N,)`` found among the ``k`` largest ``logits (N, C)`` (k larger than C counts as C);
    entries with target < 0 are ignored (NaN when all are)."""
    keep = target >= 0
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # (N, k)
    hit = (top == target[:, None]).any(-1) & keep
    return (hit.sum().float() / keep.sum().float()).item()


def k_at_least(ks: Sequence[int], n: int, name: str) -> list[str]:
    """The metric names ``f"{name}{k}"`` of the ``ks`` that are at least ``n`` items ranked (see the module docstring)."""
    return [f"{name}{k}" for k in ks if k >= n]


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts: row = true class, column = predicted class; entries with target < 0 are ignored."""
    keep = target >= 0
    flat = target[keep].long() * num_classes + predicted[keep].long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Recall of each class from a :func:`confusion_matrix`: its diagonal over its row; None for a class with no sample."""
    totals = confusion.sum(1)
    return [None if n == 0 else (confusion[c, c] / n).item() for c, n in enumerate(totals.tolist())]


def group_by_video(video_ids: Sequence[str], values: torch.Tensor, labels: torch.Tensor) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Average per-sample rows over samples that share a video id (a video split into segments).

    ``values (N, K, D)`` (K clips per sample) -> ``(V, D)``: the mean over every clip of every segment, so a
    video's score weighs all its clips equally. Returns ``(ids, means, labels)`` sorted by id.
    """
    rows: dict[str, list[int]] = defaultdict(list)
    for i, vid in enumerate(video_ids):
        rows[vid].append(i)
    ids = sorted(rows)
    means = torch.stack([values[rows[v]].flatten(0, 1).mean(0) for v in ids])
    first = torch.tensor([rows[v][0] for v in ids], dtype=torch.long)
    return ids, means, labels[first]


def clip_and_video_accuracy(video_ids: Sequence[str], logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``logits (N, K, C)`` for N samples of K evenly spaced clips; ``labels (N,)``.

    clip_acc: every clip on its own. video_acc: the mean of a video's clip logits (all its segments).
    """
    n, k, _ = logits.shape
    clip_acc = accuracy(logits.flatten(0, 1), labels.repeat_interleave(k))
    _, video_logits, video_labels = group_by_video(video_ids, logits, labels)
    return {"clip_acc": clip_acc, "video_acc": accuracy(video_logits, video_labels), "num_videos": len(video_labels), "num_clips": n * k}


def classification_report(video_ids: Sequence[str], logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> tuple[dict, torch.Tensor]:
    """Everything eval reports for a classifier, from ``logits (N, K, C)`` of N samples of K clips and ``labels (N,)``:
    :func:`clip_and_video_accuracy`, clip and video top-k for ``TOP_KS`` (``clip_top5``, ``video_top5``),
    per-class video accuracy (by class name; None for a class without test videos) and its mean over the
    classes that have videos (``mean_class_acc``), and ``k_at_least_classes`` (see :func:`k_at_least`).
    Returns ``(report, confusion)``: the confusion matrix :func:`confusion_matrix` of the videos' predictions.
    """
    _, k, c = logits.shape
    if len(classes) != c:
        raise ValueError(f"{c} logits per clip but {len(classes)} class names")
    report = clip_and_video_accuracy(video_ids, logits, labels)
    _, video_logits, video_labels = group_by_video(video_ids, logits, labels)
    for top in TOP_KS:
        report[f"clip_top{top}"] = topk_accuracy(logits.flatten(0, 1), labels.repeat_interleave(k), top)
        report[f"video_top{top}"] = topk_accuracy(video_logits, video_labels, top)
    report["k_at_least_classes"] = k_at_least(TOP_KS, c, "top")
    confusion = confusion_matrix(video_logits.argmax(-1), video_labels, c)
    per_class = per_class_accuracy(confusion)
    scored = [a for a in per_class if a is not None]
    report["mean_class_acc"] = sum(scored) / len(scored) if scored else float("nan")
    report["per_class_acc"] = dict(zip(classes, per_class))
    return report, confusion


def retrieval_recall(
    query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor, ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Recall@k of cosine nearest-neighbour retrieval: a query is a hit at k when any of its k most similar
    gallery items has the query's label. ``query (Q, D)``, ``gallery (G, D)``; k larger than G counts as G
    (then R@k only says whether the query's class is in the gallery at all: :func:`k_at_least` names those k).
    """
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T  # (Q, G)
    order = sim.argsort(dim=1, descending=True)
    match = gallery_labels[order] == query_labels[:, None]  # (Q, G), ranked
    first_hit = torch.where(match.any(1), match.float().argmax(1), torch.full_like(query_labels, gallery.shape[0]))
    return {f"R@{k}": (first_hit < min(k, gallery.shape[0])).float().mean().item() for k in ks}
