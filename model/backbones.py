"""Backbone choice by name: a plain dict of builders plus :func:`build_backbone` (BN or layer-dependent TGN)."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from .c3d import c3d
from .resnet3d import NormLayer, r2plus1d_18, r3d_18
from .tgn import tgn_norm_layer

__all__ = ["BACKBONES", "build_backbone", "DEFAULT_TGN_GROUPS"]

# Each builder: (*, base_width: int, norm_layer: NormLayer | Sequence[NormLayer] (5)) -> nn.Module with
# .out_features == 8 * base_width, mapping (N, 3, T, H, W) -> (N, out_features).
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "c3d": c3d,
    "r3d_18": r3d_18,
    "r2plus1d_18": r2plus1d_18,
}

# Temporal groups per stage (ResNets: stem, layer1..4; C3D: conv blocks 1..5). With 16-frame clips the stages
# see 16, 16, 8, 4, 2 frames, so each grouped stage normalizes 4 frames per group.
DEFAULT_TGN_GROUPS: tuple[int, int, int, int, int] = (4, 4, 2, 1, 1)


def build_backbone(
    name: str,
    *,
    base_width: int = 64,
    norm: str = "bn",
    tgn_groups: Sequence[int] = DEFAULT_TGN_GROUPS,
) -> nn.Module:
    """Build backbone ``name`` (a key of :data:`BACKBONES`).

    Args:
        name: ``"c3d"``, ``"r3d_18"`` or ``"r2plus1d_18"``.
        base_width: channels of the first stage (64 = the published networks); every stage scales with it.
        norm: ``"bn"`` (BatchNorm3d) or ``"tgn"`` (temporal group norm with ``tgn_groups``).
        tgn_groups: temporal groups for each of the 5 stages (ignored for ``norm="bn"``).

    Returns a module mapping ``(N, 3, T, H, W)`` float clips to ``(N, 8 * base_width)`` features.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    norm_layer: NormLayer | list[NormLayer]
    if norm == "bn":
        norm_layer = nn.BatchNorm3d
    elif norm == "tgn":
        groups = tuple(int(g) for g in tgn_groups)
        if len(groups) != 5 or min(groups) < 1:
            raise ValueError(f"tgn_groups needs 5 positive entries (one per stage), got {tuple(tgn_groups)}")
        norm_layer = [tgn_norm_layer(g) for g in groups]
    else:
        raise ValueError(f"unknown norm {norm!r}; choose 'bn' or 'tgn'")
    return BACKBONES[name](base_width=base_width, norm_layer=norm_layer)
