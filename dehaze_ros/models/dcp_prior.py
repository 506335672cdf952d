"""The Dark Channel Prior as a batched torch layer: the physics-structured head's starting point.

The same estimate as ``dehaze_ros.dcp.dehaze_dcp`` (He et al. 2009; patch, omega, t0, guided
filter eps and radius rule taken from that module), computed on the network's device for a
whole batch, without parameters and without gradients. The dehazer's ``asm`` head corrects
this transmission and airlight instead of learning them from nothing, so an untrained network
reproduces the DCP and training starts from its quality.

Differences from the numpy baseline, all at image borders or in ties: the erosion ignores
pixels outside the image (as cv2.erode's default border does); the guided filter's box means
average over the pixels inside the image instead of reflecting it; the airlight's candidate
set is the top ``k`` of the dark channel by ``topk`` (ties broken differently).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dehaze_ros import dcp


@dataclass
class DcpPrior:
    transmission: torch.Tensor  # B x 1 x H x W in [t_min, 1]
    airlight: torch.Tensor  # B x 3 x 1 x 1


def dark_channel(image: torch.Tensor, patch: int) -> torch.Tensor:
    """min over colour channels, then over a patch x patch window: B x 1 x H x W."""
    darkest = image.amin(dim=1, keepdim=True)
    pad = patch // 2
    # A separable erosion (min-pool = -max-pool(-x)); -inf padding ignores the outside.
    rows = -F.max_pool2d(
        F.pad(-darkest, (0, 0, pad, pad), value=float("-inf")), (patch, 1), stride=1
    )
    return -F.max_pool2d(F.pad(-rows, (pad, pad, 0, 0), value=float("-inf")), (1, patch), stride=1)


def box_mean(values: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window clipped to the image, by cumulative sums: O(1) per pixel."""

    def along(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        size = tensor.shape[dim]
        summed = F.pad(tensor.cumsum(dim), (0, 0, 1, 0) if dim == 2 else (1, 0))
        index = torch.arange(size, device=tensor.device)
        upper = (index + radius + 1).clamp(max=size)
        lower = (index - radius).clamp(min=0)
        return summed.index_select(dim, upper) - summed.index_select(dim, lower)

    sums = along(along(values, 2), 3)
    ones = torch.ones(1, 1, *values.shape[-2:], dtype=values.dtype, device=values.device)
    return sums / along(along(ones, 2), 3)


def guided_filter(
    guide: torch.Tensor, source: torch.Tensor, radius: int, eps: float
) -> torch.Tensor:
    """He et al.'s guided filter with a gray guide: B x 1 x H x W each."""
    mean_guide, mean_source = box_mean(guide, radius), box_mean(source, radius)
    covariance = box_mean(guide * source, radius) - mean_guide * mean_source
    variance = box_mean(guide * guide, radius) - mean_guide * mean_guide
    gain = covariance / (variance + eps)
    offset = mean_source - gain * mean_guide
    return box_mean(gain, radius) * guide + box_mean(offset, radius)


def linear_quantile(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """``torch.quantile(values, quantile, dim=1, keepdim=True)`` (linear interpolation), B x N -> B x 1.

    The same arithmetic as torch's (the rank q * (N - 1) in the values' dtype, truncated and
    rounded up, lerp between), written out because the ONNX export of ``aten.quantile`` freezes
    N at the example's count, and N here grows with the image.
    """
    ordered = values.sort(dim=1).values
    rank = torch.full_like(ordered[:, :1], quantile) * (ordered.shape[1] - 1)
    below = rank.long()
    low, high = ordered.gather(1, below), ordered.gather(1, rank.ceil().long())
    return torch.lerp(low, high, rank - below)


def estimate_airlight(
    image: torch.Tensor, dark: torch.Tensor, top_fraction: float = dcp.AIRLIGHT_TOP_FRACTION
) -> torch.Tensor:
    """Per image: mean colour of the brightest 10% among the haziest ``top_fraction`` pixels."""
    batch = image.shape[0]
    flat_dark = dark.reshape(batch, -1)
    # Integer arithmetic: pixels // 1000 equals int(pixels * 0.001) at every size up to 4096 x 4096
    # (checked), and unlike the float product it stays a function of the image size when the
    # graph is exported to ONNX (the float one is frozen at the example's count).
    one_in = round(1.0 / top_fraction)
    if abs(one_in * top_fraction - 1.0) > 1e-9:
        raise ValueError(f"top_fraction must be 1 / N for an integer N, got {top_fraction}")
    count = max(1, flat_dark.shape[1] // one_in)
    # The haziest ``count`` pixels, and where several share the count-th value the first of them
    # in row-major order: torch.topk leaves the choice among ties to its implementation (they are
    # common, the erosion makes plateaus), and the ONNX graph must pick the pixels torch picks.
    kth_value = flat_dark.topk(count, dim=1).values[:, -1:]
    above = flat_dark > kth_value
    tied = flat_dark == kth_value
    room = count - above.sum(dim=1, keepdim=True)
    candidate = above | (tied & (tied.long().cumsum(dim=1) <= room))  # B x HW, count set
    pixels = image.reshape(batch, 3, -1)
    brightness = pixels.sum(dim=1)  # B x HW
    candidate_brightness = torch.where(candidate, brightness, -1.0).topk(count, dim=1).values
    threshold = linear_quantile(candidate_brightness, 0.9)
    chosen = (candidate & (brightness >= threshold)).to(image.dtype)[:, None]
    airlight = (pixels * chosen).sum(dim=2) / chosen.sum(dim=2)
    return airlight.clamp(0.05, 1.0).view(batch, 3, 1, 1)


@torch.no_grad()
def dcp_prior(
    hazy: torch.Tensor,
    patch: int = dcp.PATCH,
    omega: float = dcp.OMEGA,
    t_min: float = dcp.T_MIN,
    eps: float = dcp.GUIDED_EPS,
) -> DcpPrior:
    """DCP transmission and airlight of a B x 3 x H x W RGB [0, 1] batch (float32 inside)."""
    image = hazy.float().clamp(0.0, 1.0)
    height, width = image.shape[-2:]
    if min(height, width) < patch:
        # Only images smaller than a patch shrink it (to the largest odd size that fits). Kept a
        # branch rather than a min(): the ONNX export (dynamic height/width >= 16) then sees a
        # constant kernel size, which MaxPool needs.
        patch = max(1, min(height, width) | 1)
    airlight = estimate_airlight(image, dark_channel(image, patch))
    raw = 1.0 - omega * dark_channel(image / airlight, patch)
    weights = torch.tensor(dcp.GRAY_WEIGHTS, dtype=image.dtype, device=image.device).view(
        1, 3, 1, 1
    )
    gray = (image * weights).sum(dim=1, keepdim=True)
    transmission = guided_filter(gray, raw, dcp.guided_radius(height, width, patch), eps)
    return DcpPrior(transmission.clamp(t_min, 1.0), airlight)
