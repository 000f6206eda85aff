"""Video ResNets: R3D-18 and R(2+1)D-18 (Tran et al., "A Closer Look at Spatiotemporal Convolutions", CVPR 2018).

One generic :class:`VideoResNet` of basic blocks ``[2, 2, 2, 2]`` with pluggable conv builders (3D or (2+1)D)
and a pluggable ``norm_layer: Callable[[int], nn.Module]``. Layer names, shapes and the (2+1)D mid-channel rule
follow torchvision's ``models/video/resnet.py``, so at ``base_width=64`` the parameter counts equal torchvision's
``r3d_18`` / ``r2plus1d_18`` minus their 400-way ``fc``. ``base_width`` scales every channel count (also the
R(2+1)D stem's 45), so tiny variants of the same code run on a CPU.

The norm layer may be one callable or one per stage ``(stem, layer1, layer2, layer3, layer4)``; that is how
layer-dependent temporal group normalization plugs in (``[tgn_norm_layer(g) for g in (4, 4, 2, 1, 1)]``).
With 16-frame clips the temporal lengths of those stages are 16, 16, 8, 4, 2.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = ["NormLayer", "VideoResNet", "Conv3DSimple", "Conv2Plus1D", "BasicBlock", "r3d_18", "r2plus1d_18"]

NormLayer = Callable[[int], nn.Module]
NormLayers = Union[NormLayer, Sequence[NormLayer]]

NUM_STAGES = 5  # stem + 4 residual stages


def per_stage(norm_layer: NormLayers, num_stages: int) -> list[NormLayer]:
    """Expand one norm layer to ``num_stages`` copies, or check a per-stage sequence's length."""
    if callable(norm_layer):
        return [norm_layer] * num_stages
    layers = list(norm_layer)
    if len(layers) != num_stages:
        raise ValueError(f"need one norm layer per stage ({num_stages}), got {len(layers)}")
    return layers


def r2plus1d_mid_channels(in_channels: int, out_channels: int) -> int:
    """Mid channels of a (2+1)D conv so its parameter count is close to a full 3x3x3 conv's."""
    return (in_channels * out_channels * 3 * 3 * 3) // (in_channels * 3 * 3 + 3 * out_channels)


class Conv3DSimple(nn.Conv3d):
    """A 3x3x3 conv (no bias); ``mid_channels`` and ``norm_layer`` are unused (shared builder signature)."""

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int, stride: int, norm_layer: NormLayer
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return (stride, stride, stride)


class Conv2Plus1D(nn.Sequential):
    """A (1,3,3) spatial conv to ``mid_channels`` -> norm -> ReLU -> a (3,1,1) temporal conv (no biases)."""

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int, stride: int, norm_layer: NormLayer
    ) -> None:
        super().__init__(
            nn.Conv3d(in_channels, mid_channels, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            norm_layer(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid_channels, out_channels, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return (stride, stride, stride)


ConvBuilder = Union[type[Conv3DSimple], type[Conv2Plus1D]]


class BasicBlock(nn.Module):
    """Two convs with a residual connection; ``stride`` 2 halves T, H and W (first block of layers 2-4)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        conv_builder: ConvBuilder,
        norm_layer: NormLayer,
        stride: int = 1,
    ) -> None:
        super().__init__()
        # As torchvision: one mid width from (in, out), used by both convs of the block.
        mid = r2plus1d_mid_channels(in_channels, out_channels)
        self.conv1 = nn.Sequential(
            conv_builder(in_channels, out_channels, mid, stride, norm_layer),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            conv_builder(out_channels, out_channels, mid, 1, norm_layer),
            norm_layer(out_channels),
        )
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(
                    in_channels,
                    out_channels,
                    kernel_size=1,
                    stride=conv_builder.downsample_stride(stride),
                    bias=False,
                ),
                norm_layer(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, T, H, W) -> (B, C_out, T/s, H/s, W/s)``."""
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class VideoResNet(nn.Module):
    """Stem -> 4 stages of basic blocks -> global average pool. Returns ``(B, out_features)`` features.

    Args:
        stem: maps ``(B, 3, T, H, W)`` to ``(B, widths[0], T, H/2, W/2)``.
        conv_builder: :class:`Conv3DSimple` or :class:`Conv2Plus1D`.
        layers: blocks per stage.
        widths: output channels per stage.
        norm_layers: one norm-layer factory per residual stage (4).
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        conv_builder: ConvBuilder,
        layers: Sequence[int],
        widths: Sequence[int],
        norm_layers: Sequence[NormLayer],
    ) -> None:
        super().__init__()
        if not (len(layers) == len(widths) == len(norm_layers) == 4):
            raise ValueError("layers, widths and norm_layers need 4 entries each")
        self.stem = stem
        in_channels = widths[0]
        for index, (num_blocks, width, norm_layer) in enumerate(zip(layers, widths, norm_layers)):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(num_blocks):
                blocks.append(
                    BasicBlock(
                        in_channels,
                        width,
                        conv_builder=conv_builder,
                        norm_layer=norm_layer,
                        stride=stride if block_index == 0 else 1,
                    )
                )
                in_channels = width
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.out_features = in_channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):  # also the BatchNorm3d inside TemporalGroupNorm
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W) -> (B, out_features)``."""
        x = self.stem(x)  # (B, w, T, H/2, W/2)
        x = self.layer1(x)  # (B, w, T, H/2, W/2)
        x = self.layer2(x)  # (B, 2w, T/2, H/4, W/4)
        x = self.layer3(x)  # (B, 4w, T/4, H/8, W/8)
        x = self.layer4(x)  # (B, 8w, T/8, H/16, W/16)
        return torch.flatten(self.avgpool(x), 1)


def _widths(base_width: int) -> tuple[int, int, int, int]:
    if base_width < 1:
        raise ValueError(f"base_width must be >= 1, got {base_width}")
    return (base_width, 2 * base_width, 4 * base_width, 8 * base_width)


def r3d_18(*, base_width: int = 64, norm_layer: NormLayers = nn.BatchNorm3d) -> VideoResNet:
    """R3D-18: stem conv (3,7,7) stride (1,2,2) to ``base_width`` channels, then 3x3x3 basic blocks.

    ``norm_layer``: one factory, or five (stem, layer1..layer4). 33,166,272 parameters at ``base_width=64``
    with BatchNorm3d (torchvision's 33,371,472 minus its 205,200-parameter fc).
    """
    widths = _widths(base_width)
    norms = per_stage(norm_layer, NUM_STAGES)
    stem = nn.Sequential(
        nn.Conv3d(3, widths[0], (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        norms[0](widths[0]),
        nn.ReLU(inplace=True),
    )
    return VideoResNet(stem=stem, conv_builder=Conv3DSimple, layers=(2, 2, 2, 2), widths=widths, norm_layers=norms[1:])


def r2plus1d_18(*, base_width: int = 64, norm_layer: NormLayers = nn.BatchNorm3d) -> VideoResNet:
    """R(2+1)D-18: stem (1,7,7) conv to ``45 * base_width / 64`` channels, then (3,1,1) to ``base_width``.

    31,300,125 parameters at ``base_width=64`` with BatchNorm3d (torchvision's 31,505,325 minus its fc).
    """
    widths = _widths(base_width)
    norms = per_stage(norm_layer, NUM_STAGES)
    stem_mid = max(1, round(45 * base_width / 64))
    stem = nn.Sequential(
        nn.Conv3d(3, stem_mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        norms[0](stem_mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(stem_mid, widths[0], (3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        norms[0](widths[0]),
        nn.ReLU(inplace=True),
    )
    return VideoResNet(stem=stem, conv_builder=Conv2Plus1D, layers=(2, 2, 2, 2), widths=widths, norm_layers=norms[1:])
