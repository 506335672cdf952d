"""The depth network E of DIACMPN: image -> metric depth, from dilated residual dense blocks.

Layout (widths from ``ModelConfig.depth_net_channels``, four entries in the presets): a dense
block at full resolution, then per entry a stride-2 conv and a dense block; back up with one
stride-2 transposed conv per level and a dense block; a last transposed conv gives one channel.
The decoder adds the encoder's features of the same scale before each dense block (parameter
free; the public code has no skips and its depth maps blur across object edges).

Conventions (ARCHITECTURE.md): input RGB in [0, 1], mapped to [-1, 1] inside (the public
training data range); any height and width (reflect-padded to a multiple of 2**levels and
cropped back); output depth in metres, B x 1 x H x W.

Output parametrisation: the last layer predicts ``log(depth / depth_scale_m)`` and the output is
``depth_scale_m * exp(log_depth)``, so depth is positive by construction, the network works in
the scale in which 0.5 m and 80 m are equally far from the start value (``depth_scale_m`` when
the head outputs 0; the head starts near 0), and a relative error costs the same at every
distance. Train with a loss on ``log_depth`` (e.g. scale-invariant log or L1 of log): it is
returned by ``DepthNet.log_depth`` and equals ``log(depth_m / depth_scale_m)``. The exponent is
clamped to +-LOG_DEPTH_LIMIT only so that a diverging network cannot return inf; the clamp is
far beyond any real scene (10 m * e^15 = 3.3e7 m).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dehaze_ros import dcp
from dehaze_ros.models.blocks import cat_channels, pad_to_multiple

LOG_DEPTH_LIMIT = 15.0
TRANSMISSION_FLOOR = dcp.T_MIN  # the physics heads' t0
OPTICAL_DEPTH_HALF_RANGE = -math.log(TRANSMISSION_FLOOR) / 2.0


class DilatedResidualDenseBlock(nn.Module):
    """Densely connected dilated 3x3 convs, fused by a 1x1 conv and added to the input.

    Dilation 2 doubles each conv's reach at the same cost, which depth (a large-context
    quantity) needs; the dense connections let the fuse conv mix every receptive field size.
    The fused residual is added linearly, as in RDN's residual dense block. (The public code puts
    a ReLU there: on the one-channel depth map a fuse output below zero everywhere then blocks
    every gradient, and the refinement never trains; test_models catches that.)
    """

    def __init__(self, channels: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv2d(channels + index * growth, growth, 3, padding=2, dilation=2)
            for index in range(layers)
        )
        self.fuse = nn.Conv2d(channels + layers * growth, channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        dense = features
        for conv in self.layers:
            dense = cat_channels([dense, F.relu(conv(dense), inplace=True)])
        return features + self.fuse(dense)


class DepthNet(nn.Module):
    """Encoder-decoder of dilated residual dense blocks; ``forward(image) -> depth_m``."""

    def __init__(
        self,
        channels: tuple[int, ...] = (24, 48, 96, 128),
        growth: int = 32,
        dense_layers: int = 5,
        depth_scale_m: float = 10.0,
        transmission_input: bool = False,
    ):
        super().__init__()
        self.depth_scale_m = depth_scale_m
        self.size_multiple = 2 ** len(channels)
        # Optionally a fourth input channel: the optical depth -ln t of a physics head.
        self.transmission_input = transmission_input
        inputs = 4 if transmission_input else 3
        widths = (inputs, *channels)
        self.input_block = DilatedResidualDenseBlock(inputs, growth, dense_layers)
        self.downsamples = nn.ModuleList(
            nn.Conv2d(widths[level], widths[level + 1], 3, stride=2, padding=1)
            for level in range(len(channels))
        )
        self.encoder_blocks = nn.ModuleList(
            DilatedResidualDenseBlock(width, growth, dense_layers) for width in channels
        )
        # Decoder, coarse to fine: up from level+1 to level, then a dense block at that level.
        self.upsamples = nn.ModuleList(
            nn.ConvTranspose2d(channels[level + 1], channels[level], 4, stride=2, padding=1)
            for level in reversed(range(len(channels) - 1))
        )
        self.decoder_blocks = nn.ModuleList(
            DilatedResidualDenseBlock(channels[level], growth, dense_layers)
            for level in reversed(range(len(channels) - 1))
        )
        self.log_depth_head = nn.ConvTranspose2d(channels[0], 1, 4, stride=2, padding=1)
        nn.init.trunc_normal_(self.log_depth_head.weight, std=0.02)
        nn.init.zeros_(self.log_depth_head.bias)
        self.to(memory_format=torch.channels_last)  # see the dehazer's docstring, "Memory layout"

    def forward(
        self, image: torch.Tensor, transmission: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.metres_from_log_depth(self.log_depth(image, transmission))

    def load_image_only_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load the weights of an image-only depth network (``depth_inputs: image``) into this one,
        built with ``transmission_input``. Every weight that reads the optical-depth channel, and
        the input block's fused output of that channel, starts at zero: the network computes
        exactly what the image-only one did, whatever -ln t is, and training teaches it to read t
        from there (a fine-tune, not a new network)."""
        if not self.transmission_input:
            raise ValueError(
                "load_image_only_state is for a DepthNet built with transmission_input; "
                "load an image-only state into an image-only network with load_state_dict"
            )
        ours = self.state_dict()
        if set(state) != set(ours):
            raise ValueError(
                f"not the state of a DepthNet of this layout: missing {sorted(set(ours) - set(state))}, "
                f"unexpected {sorted(set(state) - set(ours))}"
            )
        widened = {}
        for key, target in ours.items():
            value = state[key]
            for dim, (old, new) in enumerate(zip(value.shape, target.shape)):
                if new == old + 1:  # the channel list is RGB, then -ln t: insert it at index 3
                    zero = torch.zeros_like(value.narrow(dim, 0, 1))
                    value = torch.cat(
                        [value.narrow(dim, 0, 3), zero, value.narrow(dim, 3, old - 3)], dim=dim
                    )
            if value.shape != target.shape:
                raise ValueError(
                    f"{key}: shape {tuple(state[key].shape)} does not widen to {tuple(target.shape)}"
                )
            widened[key] = value
        self.load_state_dict(widened)

    def log_depth(
        self, image: torch.Tensor, transmission: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``log(depth_m / depth_scale_m)``, B x 1 x H x W, unclamped (for losses and the dehazer).

        ``transmission`` (B x 1 x H x W in (0, 1]) is read only by a network built with
        ``transmission_input``; None there means t = 1 (no haze, e.g. a clear image)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(
                f"DepthNet expects a B x 3 x H x W RGB batch, got shape {tuple(image.shape)}"
            )
        height, width = image.shape[-2:]
        signed = image * 2.0 - 1.0
        if self.transmission_input:
            if transmission is None:
                transmission = torch.ones_like(image[:, :1])
            # -ln t of t in [0.1, 1] is 0 .. 2.3: mapped to about [-1, 1] like the image.
            optical_depth = -torch.log(transmission.to(image.dtype).clamp(TRANSMISSION_FLOOR, 1.0))
            signed = torch.cat([signed, optical_depth / OPTICAL_DEPTH_HALF_RANGE - 1.0], dim=1)
        signed = pad_to_multiple(signed, self.size_multiple).contiguous(
            memory_format=torch.channels_last
        )
        features = self.input_block(signed)
        skips = []
        for downsample, block in zip(self.downsamples, self.encoder_blocks):
            skips.append(features)
            features = block(downsample(features))
        # skips[0] is the 3-channel full-resolution map: the head's output has no skip to add.
        for upsample, block, skip in zip(self.upsamples, self.decoder_blocks, reversed(skips[1:])):
            features = block(upsample(features) + skip)
        return self.log_depth_head(features)[..., :height, :width]

    def metres_from_log_depth(self, log_depth: torch.Tensor) -> torch.Tensor:
        # float32: under fp16 autocast exp() overflows already at 11.
        return self.depth_scale_m * torch.exp(
            log_depth.float().clamp(-LOG_DEPTH_LIMIT, LOG_DEPTH_LIMIT)
        )
