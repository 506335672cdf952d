"""Building blocks of the dehazer's backbone, after DehazeFormer (Song et al., TIP 2023).

A backbone block is: RescaleNorm (only where attention is used) -> token mixer (5x5 depth-wise
conv on V, plus shifted-window self-attention in the attention blocks) -> residual; then a 1x1
MLP -> residual. Stages stack blocks; patch merging / splitting change the scale; selective-kernel
fusion merges a skip with the upsampled decoder stream. All tensors are B x C x H x W.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dehaze_ros.compat import is_exporting


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom and right so that height and width are multiples of ``multiple``.

    Reflection continues the image's own statistics, so the global normalisations and pooled
    attentions see no artificial border; a side shorter than its padding cannot be reflected and
    is replicated instead. Crop the result back with ``[..., :height, :width]``.
    """
    height, width = image.shape[-2:]
    # ceil(size / multiple) * multiple - size, not -size % multiple: the same number, but written so
    # that the padded size is visibly a multiple (torch.export then proves the window views valid
    # for every height and width, and the ONNX graph keeps them dynamic).
    pad_h = (height + multiple - 1) // multiple * multiple - height
    pad_w = (width + multiple - 1) // multiple * multiple - width
    # While exporting (ONNX), always pad, by zero where nothing is missing: the shortcut would
    # make the graph valid only for sizes that are multiples, like the example it was traced with.
    if not is_exporting() and pad_h == 0 and pad_w == 0:
        return image
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def cat_channels(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)``, the result channels-last (the networks' layout, see the dehazer).

    torch.cat picks its output layout from its inputs, and a one-channel map (the depth branch's)
    is both NCHW- and NHWC-contiguous, so a cat that includes one came out NCHW: a transposing
    copy, and the next convolution copied it back (the largest cat and copy of a frame in the
    CPU profile, docs/performance.md "Where the time goes"). Concatenating the NHWC views along
    their last axis writes the channels-last result directly; the values are the same copies.
    While exporting, the plain cat: the graph has no memory layout, only extra transposes.
    """
    if is_exporting():
        return torch.cat(tensors, dim=1)
    return torch.cat([tensor.permute(0, 2, 3, 1) for tensor in tensors], dim=3).permute(0, 3, 1, 2)


def trunc_normal_scaled_(conv: nn.Conv2d, gain: float = 1.0) -> None:
    """Truncated-normal Xavier init times ``gain``; bias zero (DehazeFormer's scheme)."""
    receptive = conv.weight[0, 0].numel()
    fan_in, fan_out = conv.weight.shape[1] * receptive, conv.weight.shape[0] * receptive
    nn.init.trunc_normal_(conv.weight, std=gain * math.sqrt(2.0 / (fan_in + fan_out)))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def residual_gain(network_depth: int) -> float:
    """Down-scales residual-branch weights so a deep stack of residual blocks starts stable."""
    return (8 * network_depth) ** -0.25


class RescaleNorm(nn.Module):
    """DehazeFormer's rescale layer norm: normalise over C, H, W, and give the mean/std back.

    Haze is largely a per-image shift in brightness and contrast. A plain LayerNorm before the
    attention would discard exactly that, so the block multiplies its output by ``rescale`` and
    adds ``rebias``: learned affine maps of the removed std and mean (start: 1 x std, 0 x mean).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.std_to_rescale = nn.Linear(1, channels)
        self.mean_to_rebias = nn.Linear(1, channels)
        nn.init.trunc_normal_(self.std_to_rescale.weight, std=0.02)
        nn.init.ones_(self.std_to_rescale.bias)
        nn.init.trunc_normal_(self.mean_to_rebias.weight, std=0.02)
        nn.init.zeros_(self.mean_to_rebias.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = features.shape[0]
        mean = features.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((features - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        normalized = (features - mean) / std * self.weight + self.bias
        rescale = self.std_to_rescale(std.view(batch, 1)).view(batch, -1, 1, 1)
        rebias = self.mean_to_rebias(mean.view(batch, 1)).view(batch, -1, 1, 1)
        return normalized, rescale, rebias


def log_relative_positions(window_size: int) -> torch.Tensor:
    """(N, N, 2) offsets between the N = window_size**2 positions of a window, log-compressed
    so that the bias MLP sees near and far offsets on a similar scale."""
    axis = torch.arange(window_size)
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij")).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).float()
    return torch.sign(offsets) * torch.log1p(offsets.abs())


class TokenMixer(nn.Module):
    """Spatial mixing of one block: depth-wise 5x5 conv on V, plus windowed attention if enabled.

    The attention windows are shifted by padding (reflect) ``shift`` pixels on the top/left, as in
    DehazeFormer, instead of Swin's cyclic roll: no attention mask, and no window mixes pixels from
    opposite borders. Height and width must be multiples of the window (the dehazer pads its input).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        window_size: int,
        shift: int,
        use_attention: bool,
        network_depth: int,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.value = nn.Conv2d(channels, channels, 1)
        self.local = nn.Conv2d(
            channels, channels, 5, padding=2, groups=channels, padding_mode="reflect"
        )
        self.project = nn.Conv2d(channels, channels, 1)
        gain = residual_gain(network_depth)
        for conv in (self.value, self.local, self.project):
            trunc_normal_scaled_(conv, gain)
        self.query_key = None
        if use_attention:
            self.query_key = nn.Conv2d(channels, 2 * channels, 1)
            trunc_normal_scaled_(self.query_key)  # no gain: it is not on the residual path
            self.position_bias = nn.Sequential(
                nn.Linear(2, 256), nn.ReLU(inplace=True), nn.Linear(256, num_heads)
            )
            self.register_buffer(
                "relative_positions", log_relative_positions(window_size), persistent=False
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        value = self.value(features)
        mixed = self.local(value)
        if self.query_key is not None:
            mixed = mixed + self._window_attention(
                torch.cat([self.query_key(features), value], dim=1)
            )
        return self.project(mixed)

    def _window_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        batch, three_channels, height, width = qkv.shape
        channels, size, shift = three_channels // 3, self.window_size, self.shift
        if shift:
            qkv = F.pad(qkv, (shift, size - shift, shift, size - shift), mode="reflect")
        rows, cols = qkv.shape[2] // size, qkv.shape[3] // size
        head_dim = channels // self.num_heads
        # Channels-last view (B, H, W, 3C) -> (3, windows, heads, tokens, head_dim).
        windows = (
            qkv.permute(0, 2, 3, 1)
            .view(batch, rows, size, cols, size, 3, self.num_heads, head_dim)
            .permute(5, 0, 1, 3, 6, 2, 4, 7)
            .reshape(3, batch * rows * cols, self.num_heads, size * size, head_dim)
        )
        bias = self.position_bias(self.relative_positions).permute(2, 0, 1).to(windows.dtype)
        attended = F.scaled_dot_product_attention(
            windows[0], windows[1], windows[2], attn_mask=bias
        )
        attended = (
            attended.view(batch, rows, cols, self.num_heads, size, size, head_dim)
            .permute(0, 1, 4, 2, 5, 3, 6)
            .reshape(batch, rows * size, cols * size, channels)
        )
        return attended[:, shift : shift + height, shift : shift + width].permute(0, 3, 1, 2)


class ConvMlp(nn.Module):
    """Per-pixel MLP (1x1 conv, ReLU, 1x1 conv)."""

    def __init__(self, channels: int, hidden: int, network_depth: int):
        super().__init__()
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.contract = nn.Conv2d(hidden, channels, 1)
        for conv in (self.expand, self.contract):
            trunc_normal_scaled_(conv, residual_gain(network_depth))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.contract(F.relu(self.expand(features), inplace=True))


class DehazeBlock(nn.Module):
    """One backbone block. Blocks without attention skip the norm (a depth-wise conv needs none)."""

    def __init__(
        self,
        channels: int,
        mlp_ratio: float,
        num_heads: int,
        window_size: int,
        shift: int,
        use_attention: bool,
        network_depth: int,
    ):
        super().__init__()
        self.norm = RescaleNorm(channels) if use_attention else None
        self.mixer = TokenMixer(
            channels, num_heads, window_size, shift, use_attention, network_depth
        )
        self.mlp = ConvMlp(channels, int(channels * mlp_ratio), network_depth)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.norm is None:
            features = features + self.mixer(features)
        else:
            normalized, rescale, rebias = self.norm(features)
            features = features + self.mixer(normalized) * rescale + rebias
        return features + self.mlp(features)


class DehazeStage(nn.Sequential):
    """``depth`` blocks at one scale; the last ``attn_ratio`` of them use window attention, with
    every second block's windows shifted by half a window so information crosses window borders."""

    def __init__(
        self,
        channels: int,
        depth: int,
        mlp_ratio: float,
        num_heads: int,
        attn_ratio: float,
        window_size: int,
        network_depth: int,
    ):
        first_attention_block = depth - attn_ratio * depth
        super().__init__(
            *(
                DehazeBlock(
                    channels,
                    mlp_ratio,
                    num_heads,
                    window_size,
                    shift=window_size // 2 if index % 2 else 0,
                    use_attention=attn_ratio > 0 and index >= first_attention_block,
                    network_depth=network_depth,
                )
                for index in range(depth)
            )
        )


class PatchMerge(nn.Sequential):
    """Halve the resolution: a 2x2 stride-2 conv (no overlap, so no padding question)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 2, stride=2))


class PatchSplit(nn.Sequential):
    """Double the resolution: 1x1 conv to 4x the channels, then pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels * 4, 1), nn.PixelShuffle(2))


class SelectiveKernelFusion(nn.Module):
    """Per-channel softmax choice between two same-shaped maps, from their pooled sum (SKNet)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.choose = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2 * channels, 1, bias=False),
        )

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        batch, channels = first.shape[:2]
        weights = self.choose((first + second).mean(dim=(2, 3), keepdim=True))
        weights = weights.view(batch, 2, channels, 1, 1).softmax(dim=1)
        return first * weights[:, 0] + second * weights[:, 1]
