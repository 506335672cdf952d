"""The structure branch of the dehazer: a UNet (Ronneberger et al. 2015) on the hazy image.

Four 2x max-pool levels with widths base, 2, 4, 8, 8 x base (the bottleneck keeps 8 x base
because bilinear upsampling, unlike a transposed conv, cannot halve channels), decoded with
bilinear upsampling, concatenated skips and double convs. DIACMPN taps three decoder outputs
(1/4 and 1/2 resolution features and the full-resolution 3-channel output map) and feeds them
into every backbone stage of the same scale. With base 64 this is the 13.4 M-parameter branch
of the paper. Height and width must be multiples of 16 (the dehazer pads its input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dehaze_ros.models.blocks import cat_channels

LEVELS = 4


class DoubleConv(nn.Sequential):
    """(3x3 conv, batch norm, ReLU) twice; conv bias off because the norm's shift replaces it."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class StructureUNet(nn.Module):
    """``forward(image) -> (quarter, half, full)``: 2*base channels at 1/4 resolution, base
    channels at 1/2, and a 3-channel map at full resolution."""

    def __init__(self, base_channels: int = 64, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        widths = [base_channels * 2**level for level in range(LEVELS)] + [
            base_channels * 2 ** (LEVELS - 1)
        ]
        self.input_conv = DoubleConv(in_channels, widths[0])
        self.encoder = nn.ModuleList(
            DoubleConv(widths[level], widths[level + 1]) for level in range(LEVELS)
        )
        # Decoder level l (coarse to fine) takes [skip at l, upsampled] = 2 * widths[l] channels.
        decoder_out = [widths[level - 1] if level else widths[0] for level in range(LEVELS)]
        self.decoder = nn.ModuleList(
            DoubleConv(2 * widths[level], decoder_out[level]) for level in reversed(range(LEVELS))
        )
        self.output_conv = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.input_conv(image)
        skips = []
        for block in self.encoder:
            skips.append(features)
            features = block(F.max_pool2d(features, 2))
        decoded = []
        for block, skip in zip(self.decoder, reversed(skips)):
            upsampled = F.interpolate(
                features, size=skip.shape[-2:], mode="bilinear", align_corners=True
            )
            features = block(cat_channels([skip, upsampled]))
            decoded.append(features)
        # decoded: 1/8, 1/4, 1/2, full resolution.
        return decoded[1], decoded[2], self.output_conv(decoded[3])
