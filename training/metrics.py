"""Evaluation metrics: clip/video accuracy and nearest-neighbour retrieval recall (as in VCOP and PRP)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

RECALL_KS = (1, 5, 10, 20, 50)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy of ``logits (N, C)`` against ``target (N,)``; entries with target < 0 are ignored."""
    return accuracy_tensor(logits, target).item()


def accuracy_tensor(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`accuracy` as a 0-dim float tensor on the logits' device, without a host sync (NaN when every
    target is ignored: 0 / 0)."""
    keep = target >= 0
    correct = ((logits.argmax(-1) == target) & keep).sum()
    return correct.float() / keep.sum().float()


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


def retrieval_recall(
    query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor, ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Recall@k of cosine nearest-neighbour retrieval: a query is a hit at k when any of its k most similar
    gallery items has the query's label. ``query (Q, D)``, ``gallery (G, D)``; k larger than G counts as G.
    """
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T  # (Q, G)
    order = sim.argsort(dim=1, descending=True)
    match = gallery_labels[order] == query_labels[:, None]  # (Q, G), ranked
    first_hit = torch.where(match.any(1), match.float().argmax(1), torch.full_like(query_labels, gallery.shape[0]))
    return {f"R@{k}": (first_hit < min(k, gallery.shape[0])).float().mean().item() for k in ks}
