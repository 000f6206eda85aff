"""C3D, the 5-block version used by VCOP / PRP / Pace (Tran et al. 2015 without the fc6/fc7 layers).

``conv1 64 -> pool(1,2,2) -> conv2 128 -> pool -> conv3a/b 256 -> pool -> conv4a/b 512 -> pool -> conv5a/b 512 ->
pool -> global average pool``: 512 features per clip at ``base_width=64`` (channels are
``base_width * (1, 2, 4, 8, 8)``).
Every conv is 3x3x3 (padding 1, no bias: a norm follows) -> norm -> ReLU. Pools 2-5 are 2x2x2 max pools with
``ceil_mode=True``: at 16x112x112 that gives 1x4x4 after pool5 (the size VCOP gets from its pool5 padding (0,1,1)),
and short or small clips (e.g. 8x32x32 in tests) never pool a dimension down to zero.

The norm layer may be one callable or one per conv block (5); with 16-frame clips the blocks see 16, 16, 8, 4, 2
frames, so the default TGN groups ``(4, 4, 2, 1, 1)`` give 4 frames per group in the first three blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .resnet3d import NormLayer, NormLayers, per_stage

__all__ = ["C3D", "c3d"]


def _conv(in_channels: int, out_channels: int, norm_layer: NormLayer) -> list[nn.Module]:
    return [
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    ]


class C3D(nn.Module):
    """Five conv blocks, each ending in a max pool; returns ``(B, out_features)`` features.

    Args:
        base_width: channels of conv1; the blocks have ``base_width * (1, 2, 4, 8, 8)``.
        norm_layer: one ``norm_layer(num_channels)`` factory, or one per block (5).
    """

    def __init__(self, *, base_width: int = 64, norm_layer: NormLayers = nn.BatchNorm3d) -> None:
        super().__init__()
        if base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        w1, w2, w3, w4, w5 = (base_width * m for m in (1, 2, 4, 8, 8))
        n1, n2, n3, n4, n5 = per_stage(norm_layer, 5)
        pool = nn.MaxPool3d(kernel_size=2, stride=2, ceil_mode=True)  # stateless: one instance serves all blocks
        self.block1 = nn.Sequential(*_conv(3, w1, n1), nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2)))
        self.block2 = nn.Sequential(*_conv(w1, w2, n2), pool)
        self.block3 = nn.Sequential(*_conv(w2, w3, n3), *_conv(w3, w3, n3), pool)
        self.block4 = nn.Sequential(*_conv(w3, w4, n4), *_conv(w4, w4, n4), pool)
        self.block5 = nn.Sequential(*_conv(w4, w5, n5), *_conv(w5, w5, n5), pool)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.out_features = w5
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W) -> (B, out_features)``."""
        x = self.block1(x)  # (B, w, T, H/2, W/2)
        x = self.block2(x)  # (B, 2w, T/2, H/4, W/4)
        x = self.block3(x)  # (B, 4w, T/4, H/8, W/8)
        x = self.block4(x)  # (B, 8w, T/8, H/16, W/16)
        x = self.block5(x)  # (B, 8w, T/16, H/32, W/32), sizes rounded up
        return torch.flatten(self.avgpool(x), 1)


def c3d(*, base_width: int = 64, norm_layer: NormLayers = nn.BatchNorm3d) -> C3D:
    """The VCOP-style C3D backbone (see module docstring)."""
    return C3D(base_width=base_width, norm_layer=norm_layer)
