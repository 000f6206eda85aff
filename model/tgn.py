"""Temporal group normalization (TGN).

TGN splits the time axis of a ``(B, C, T, H, W)`` activation into ``g`` contiguous groups of frames and
normalizes each group with its own batch statistics and its own affine parameters, i.e. it behaves exactly
like ``g`` separate ``nn.BatchNorm3d(C)`` modules applied to the temporal chunks and concatenated again
before the activation (Cho et al., arXiv 2003.02692, "temporal group normalization").

Implementation: one ``nn.BatchNorm3d(C * g)`` held as ``self.bn``. For an even split (``T % g == 0``)
the input is *viewed* (no copy for a contiguous tensor) as ``(B, C * g, T // g, H, W)``, where channel
``c * g + j`` is channel ``c`` restricted to temporal group ``j``; a single batch norm over that view is
per-(channel, group) normalization. So the cost equals plain BatchNorm3d (a ``channels_last_3d`` input cannot
be viewed this way and costs one copy per grouped layer; keep TGN networks in the default format), and DDP
synchronisation is ``nn.SyncBatchNorm.convert_sync_batchnorm`` of the inner module (see
:func:`convert_sync_batchnorm`).

Parameter layout: ``bn.weight``, ``bn.bias``, ``bn.running_mean``, ``bn.running_var`` have ``C * g``
entries; group ``j``'s values for the ``C`` channels are ``tensor[j::g]`` (:meth:`TemporalGroupNorm.group_state`).
With ``g = 1`` the inner module *is* a ``BatchNorm3d(C)``: identical outputs, running statistics and
state-dict entries (keys carry the extra ``bn.`` prefix: ``norm.bn.weight`` instead of ``norm.weight``).

Group sizes (:func:`temporal_group_sizes`): the first ``T % g`` groups get ``ceil(T / g)`` frames, the rest
``floor(T / g)`` (the ``numpy.array_split`` rule), e.g. ``T=5, g=2 -> (3, 2)``. If ``g > T`` the groups
``T..g-1`` would be empty: they are skipped at forward time (frame ``t`` is normalized by group ``t``; the
parameters and running statistics of the empty groups are neither used nor updated), so the effective
number of groups is ``min(g, T)`` and a group never has zero frames.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TemporalGroupNorm", "tgn_norm_layer", "temporal_group_sizes", "convert_sync_batchnorm"]


def temporal_group_sizes(num_frames: int, num_groups: int) -> tuple[int, ...]:
    """Frames per temporal group: the first ``num_frames % num_groups`` groups get one extra frame.

    Examples: ``(16, 4) -> (4, 4, 4, 4)``, ``(5, 2) -> (3, 2)``, ``(2, 4) -> (1, 1, 0, 0)``.
    """
    if num_frames < 0 or num_groups < 1:
        raise ValueError(f"need num_frames >= 0 and num_groups >= 1, got {num_frames}, {num_groups}")
    base, extra = divmod(num_frames, num_groups)
    return tuple(base + 1 if j < extra else base for j in range(num_groups))


class TemporalGroupNorm(nn.Module):
    """Batch normalization with separate statistics and affine parameters per temporal group.

    Args:
        num_features: channels ``C`` of the ``(B, C, T, H, W)`` input.
        num_groups: temporal groups ``g`` (contiguous chunks of frames); ``1`` is plain BatchNorm3d.
        eps, momentum, affine, track_running_stats: as in ``nn.BatchNorm3d`` (``momentum=None`` is the
            cumulative average), applied per (channel, group).
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int = 1,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if num_features < 1 or num_groups < 1:
            raise ValueError(f"need num_features >= 1 and num_groups >= 1, got {num_features}, {num_groups}")
        self.num_features = num_features
        self.num_groups = num_groups
        # (C * g) channels, index c * g + j: the layout that a contiguous (B, C, T, H, W) tensor takes when
        # viewed as (B, C * g, T // g, H, W), so the even-split path needs no copy.
        self.bn = nn.BatchNorm3d(
            num_features * num_groups,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_groups={self.num_groups}"

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W) -> (B, C, T, H, W)``."""
        if x.dim() != 5 or x.shape[1] != self.num_features:
            raise ValueError(
                f"TemporalGroupNorm({self.num_features}) expects (B, {self.num_features}, T, H, W), "
                f"got {tuple(x.shape)}"
            )
        g = self.num_groups
        if g == 1:
            return self.bn(x)
        b, c, t, h, w = x.shape
        if t % g == 0:
            # (B, C, T, H, W) -> (B, C, g, T/g, H, W) -> (B, C*g, T/g, H, W): a view when x is contiguous
            y = self.bn(x.reshape(b, c * g, t // g, h, w))
            # Back to (B, C, T, H, W) without an autograd view: the ReLU(inplace=True) that follows would
            # otherwise modify a view and autograd would add a full copy (CopySlices) to the backward pass.
            # Safe because y is private here and batch norm's backward does not read its output.
            return torch.ops.aten._unsafe_view(y, (b, c, t, h, w))
        return self._forward_uneven(x)

    def _forward_uneven(self, x: Tensor) -> Tensor:
        """Uneven split (or ``g > T``): one ``F.batch_norm`` per non-empty group on strided parameter slices.

        Mirrors ``nn.BatchNorm3d.forward``'s bookkeeping: ``num_batches_tracked`` advances once per call.
        """
        bn = self.bn
        if (
            isinstance(bn, nn.SyncBatchNorm)
            and self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(bn.process_group or dist.group.WORLD) > 1
        ):
            raise NotImplementedError(
                f"SyncBatchNorm-converted TemporalGroupNorm needs T divisible by num_groups={self.num_groups}, "
                f"got T={x.shape[2]}; use per-rank statistics (do not convert) or change the clip length"
            )
        g = self.num_groups
        update_stats = self.training and bn.track_running_stats
        factor = 0.0 if bn.momentum is None else bn.momentum
        if update_stats:
            assert bn.num_batches_tracked is not None
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                factor = 1.0 / float(bn.num_batches_tracked.item())
        use_batch_stats = self.training or bn.running_mean is None

        outputs = []
        start = 0
        for j, size in enumerate(temporal_group_sizes(x.shape[2], g)):
            if size == 0:  # g > T: this group has no frames; skip it rather than normalize an empty chunk
                continue
            chunk = x[:, :, start : start + size]  # (B, C, size, H, W)
            start += size
            group = slice(j, None, g)
            mean = bn.running_mean[group].clone() if bn.running_mean is not None else None
            var = bn.running_var[group].clone() if bn.running_var is not None else None
            weight = bn.weight[group] if bn.weight is not None else None
            bias = bn.bias[group] if bn.bias is not None else None
            outputs.append(F.batch_norm(chunk, mean, var, weight, bias, use_batch_stats, factor, bn.eps))
            if update_stats and mean is not None and var is not None:
                with torch.no_grad():  # F.batch_norm updated the contiguous copies in place
                    bn.running_mean[group] = mean
                    bn.running_var[group] = var
        return torch.cat(outputs, dim=2)

    def group_state(self, group: int) -> dict[str, Tensor]:
        """Copies of group ``group``'s ``weight``, ``bias``, ``running_mean``, ``running_var`` (each ``(C,)``),
        the state a standalone ``BatchNorm3d(C)`` for that group would hold (absent entries are left out)."""
        if not 0 <= group < self.num_groups:
            raise IndexError(f"group {group} out of range for num_groups={self.num_groups}")
        names = ("weight", "bias", "running_mean", "running_var")
        tensors = {name: getattr(self.bn, name) for name in names}
        return {name: t[group :: self.num_groups].detach().clone() for name, t in tensors.items() if t is not None}


def tgn_norm_layer(num_groups: int, **kwargs: object) -> Callable[[int], nn.Module]:
    """A ``norm_layer(num_channels)`` factory (timm style) making ``TemporalGroupNorm(num_channels, num_groups)``."""
    return functools.partial(TemporalGroupNorm, num_groups=num_groups, **kwargs)


def convert_sync_batchnorm(module: nn.Module, process_group: dist.ProcessGroup | None = None) -> nn.Module:
    """Convert every BatchNorm in ``module`` to ``nn.SyncBatchNorm``, TGN included, for DDP.

    A :class:`TemporalGroupNorm` keeps its inner ``BatchNorm3d(C * g)`` as ``.bn``, so the standard conversion
    turns that into a ``SyncBatchNorm(C * g)`` fed with the ``(B, C * g, T / g, H, W)`` view: statistics are then
    synchronised per (channel, temporal group) across ranks, and state-dict keys are unchanged. Only even
    splits (``T % g == 0``, true for the default 16-frame clips and groups ``(4, 4, 2, 1, 1)``) can be
    synchronised; an uneven split under multi-rank training raises. Without conversion each rank normalizes
    with its own per-rank statistics (like plain DDP BatchNorm). Returns the converted module (call it before
    wrapping in DDP).
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
