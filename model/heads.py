"""Heads on top of per-clip features: speed sorting (K! orderings), per-clip speed class, action classification."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

__all__ = ["num_orderings", "SpeedSortHead", "SpeedClassHead", "ClassifierHead"]


def num_orderings(num_clips: int) -> int:
    """Number of sort-permutation classes for ``num_clips`` clips: ``K!``."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    return math.factorial(num_clips)


class SpeedSortHead(nn.Module):
    """VCOP-style order head: which of the ``K!`` permutations sorts the ``K`` clips (by signed speed).

    For every pair ``i < j`` (``itertools.combinations`` order), ``[f_i, f_j]`` (2D) -> shared ``Linear(2D, hidden)``
    -> ReLU; the ``K(K-1)/2`` pair vectors are concatenated -> dropout -> ``Linear(P * hidden, K!)``.
    """

    def __init__(self, in_features: int, *, num_clips: int, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        if num_clips < 2:
            raise ValueError(f"sorting needs num_clips >= 2, got {num_clips}")
        self.num_clips = num_clips
        pairs = list(itertools.combinations(range(num_clips), 2))
        # Non-persistent: follows .to(device) but stays out of state dicts.
        self.register_buffer("pair_i", torch.tensor([i for i, _ in pairs]), persistent=False)
        self.register_buffer("pair_j", torch.tensor([j for _, j in pairs]), persistent=False)
        self.pair_fc = nn.Linear(2 * in_features, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(len(pairs) * hidden, num_orderings(num_clips))

    def forward(self, features: Tensor) -> Tensor:
        """``(B, K, D) -> (B, K!)`` logits."""
        b = features.shape[0]
        pairs = torch.cat([features[:, self.pair_i], features[:, self.pair_j]], dim=2)  # (B, P, 2D)
        hidden = self.relu(self.pair_fc(pairs))  # (B, P, hidden)
        return self.fc(self.dropout(hidden.reshape(b, -1)))  # (B, P * hidden) -> (B, K!)


class SpeedClassHead(nn.Module):
    """Per-clip speed classification: dropout -> ``Linear(D, num_speeds)`` applied to every clip."""

    def __init__(self, in_features: int, *, num_speeds: int, dropout: float = 0.5) -> None:
        super().__init__()
        if num_speeds < 2:
            raise ValueError(f"num_speeds must be >= 2, got {num_speeds}")
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_speeds)

    def forward(self, features: Tensor) -> Tensor:
        """``(B, K, D) -> (B, K, num_speeds)`` logits."""
        return self.fc(self.dropout(features))


class ClassifierHead(nn.Module):
    """Fine-tuning head: dropout -> ``Linear(D, num_classes)``."""

    def __init__(self, in_features: int, *, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """``(B, D) -> (B, num_classes)`` logits."""
        return self.fc(self.dropout(features))
