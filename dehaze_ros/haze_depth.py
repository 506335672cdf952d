"""Depth from the haze: the transmission's -ln t fused with the depth network's metres. No ROS.

The atmospheric scattering model ties the transmission to distance, t = exp(-beta d), so wherever
the air is hazy the optical depth -ln t is proportional to depth with one unknown factor, beta.
A monocular network knows metres but gets the shape of a scene wrong (which surface is behind
which, how far the back wall is); -ln t has no metres but, in haze, often gets the shape right
(docs/depth.md, "Depth from the haze"). This module takes the metres from one and as much of
the shape from the other as each pixel's transmission can be trusted with:

1. Informative pixels: network depth finite and inside the model's range, and
   T_LOW < t < T_HIGH. Near 1 the air is clear and -ln t is noise; near the t0 floor that the
   DCP and the physics heads clamp t to only airlight arrives and -ln t says "far", not how far.
2. beta is the median of -ln t / d over them (the Theil-Sen slope through the origin, as in
   dehaze_ros.visibility): a minority of wrong pixels cannot move it, and it ties -ln t to the
   network's metres, so the fused depth keeps the network's overall scale; a scale source
   (ground plane, anchors) then rescales both together.
3. The haze's depth d_h = -ln t / beta and the network's d are averaged in log space, each pixel
   weighted by the inverse of its error variance:
      w = e_net^2 / (e_net^2 + e_haze^2),   fused = d * (d_h / d)^w.
   e_net is the network's typical relative error (NETWORK_ERROR). e_haze has two parts, the larger
   counts: an error of sigma in t is an error of sigma / (t * -ln t) in ln d_h (large near t = 1,
   smallest at t = 1/e), and the local disagreement between the two beyond what the network's
   own error explains. The second part is the agreement test: the transmission reads a white
   wall or a pale pavement as haze (from one image an albedo and haze look alike), and where the
   haze contradicts the network over a whole region, the network is kept.
4. Everything else keeps the network's value: clear air, saturated haze, sky, NaN, values outside
   the range (the engine turns those into REP-117's +inf / -inf afterwards).

The constants were chosen on tuning scenes (Middlebury 2014 training scenes, RGB-D frames
that are not validation items, the renderer's outdoor views of seed 1) and are reported on
others; docs/depth.md has the ablation and the commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

T_LOW = 0.11  # above the 0.1 floor (t0) of the DCP and the physics heads
T_FULL = 0.2  # the weight ramps up from T_LOW to here: no step where t crosses T_LOW
T_HIGH = 0.97  # beyond, -ln t < 0.03: clear air, nothing to read
# Error of t. The log errors of -ln t on the tuning scenes imply 0.05-0.06 at t 0.4 and 0.85;
# 0.03 and 0.045 tied on the tuning grid (the agreement test takes over the larger errors).
TRANSMISSION_NOISE = 0.045
NETWORK_ERROR = 0.25  # typical error of the network's ln depth after scaling (0.2-0.3 measured)
AGREEMENT_WINDOW = 0.075  # disagreement averaged over this share of the longer side (sigma)
MIN_PIXELS = 200  # informative pixels needed to fit beta at all
MIN_PIXEL_FRACTION = 0.005  # ... and at least this share of the frame

FUSED, NETWORK = "fused", "network"


@dataclass(frozen=True)
class HazeDepth:
    """The fused depth and what went into it.

    ``status`` fused: ``depth_m`` mixes the network and -ln t / ``beta_per_unit``; network:
    ``depth_m`` is the network's depth unchanged and ``reason`` says why.
    ``haze_weight`` is each pixel's share of the haze in log space, [0, 1] (0: the network's
    value), at the depth's resolution: how much of that pixel's depth the transmission decided.
    """

    depth_m: np.ndarray
    haze_weight: np.ndarray
    status: str
    beta_per_unit: float  # -ln t per unit of depth_m (per metre for metric depth); NaN: none
    pixels: int  # informative pixels the fit used
    mean_weight: float  # haze_weight averaged over the pixels with a finite depth
    reason: str = ""

    @property
    def fused(self) -> bool:
        return self.status == FUSED


def fuse_depth_with_haze(
    depth_m: np.ndarray,
    transmission: np.ndarray,
    depth_range_m: tuple[float, float] = (0.0, math.inf),
    *,
    transmission_noise: float = TRANSMISSION_NOISE,
    network_error: float = NETWORK_ERROR,
    agreement_window: float = AGREEMENT_WINDOW,
    t_low: float = T_LOW,
    t_full: float = T_FULL,
    t_high: float = T_HIGH,
) -> HazeDepth:
    """Fuse a network's depth (H x W, metres; NaN unknown, +-inf outside the range) with the
    transmission of the same frame (any resolution: resampled to the depth's, bilinear: t is
    smooth). ``depth_range_m``: what the model can measure; depths outside it are kept as they
    are. ``agreement_window`` 0 leaves out the agreement test (the t-noise part only)."""
    depth = np.asarray(depth_m, dtype=np.float32)
    transmission = np.asarray(transmission, dtype=np.float32)
    if depth.ndim != 2 or transmission.ndim != 2 or 0 in depth.shape or 0 in transmission.shape:
        raise ValueError(
            f"depth and transmission must be non-empty H x W arrays, got {depth.shape} "
            f"and {transmission.shape}"
        )
    if not (0.0 < t_low < t_full < t_high < 1.0):
        raise ValueError(f"need 0 < t_low < t_full < t_high < 1, got {t_low}, {t_full}, {t_high}")
    if transmission_noise <= 0 or network_error <= 0 or agreement_window < 0:
        raise ValueError(
            "transmission_noise and network_error must be > 0 and agreement_window >= 0, "
            f"got {transmission_noise}, {network_error}, {agreement_window}"
        )
    if transmission.shape != depth.shape:
        transmission = cv2.resize(
            transmission, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_LINEAR
        )
    near, far = depth_range_m
    with np.errstate(invalid="ignore"):
        has_depth = np.isfinite(depth) & (depth > max(near, 0.0)) & (depth <= far)
        informative = (
            has_depth & np.isfinite(transmission) & (transmission > t_low) & (transmission < t_high)
        )
    count = int(informative.sum())
    needed = max(MIN_PIXELS, int(MIN_PIXEL_FRACTION * depth.size))
    if count < needed:
        return _network_only(
            depth,
            f"{count} pixels with depth and {t_low} < t < {t_high} (clear air, "
            f"saturated haze or sky elsewhere); {needed} needed",
            count,
        )
    # Whole-array arithmetic with the non-informative pixels neutralised (t = 1/e, depth 1) is
    # cheaper than indexing the mask again for every step; they are masked out at the end.
    t_used = np.where(informative, transmission, np.float32(1.0 / math.e))
    depth_used = np.where(informative, depth, np.float32(1.0))
    optical_depth = -np.log(t_used)
    beta = float(np.median(optical_depth[informative] / depth_used[informative]))
    if not (math.isfinite(beta) and beta > 0.0):
        return _network_only(depth, f"no usable beta ({beta})", count)

    # ln(d_h / d) at the informative pixels, 0 elsewhere (so the windowed averages below see
    # only those).
    log_ratio = np.where(informative, np.log(optical_depth / (beta * depth_used)), np.float32(0.0))
    # d ln(-ln t) / dt = 1 / (t ln t): the same error of t costs most near t = 1.
    haze_variance = (transmission_noise / (t_used * optical_depth)) ** 2
    if agreement_window > 0:
        sigma = agreement_window * max(depth.shape)
        local_disagreement = _smooth(log_ratio * log_ratio, sigma) / np.maximum(
            _smooth(informative.astype(np.float32), sigma), 1e-6
        )
        haze_variance = np.maximum(haze_variance, local_disagreement - network_error**2)
    haze_weight = network_error**2 / (network_error**2 + haze_variance)
    haze_weight *= np.clip((t_used - t_low) / (t_full - t_low), 0.0, 1.0)
    haze_weight = np.where(informative, haze_weight, np.float32(0.0)).astype(np.float32, copy=False)
    fused = np.where(informative, depth * np.exp(haze_weight * log_ratio), depth).astype(
        np.float32, copy=False
    )
    finite = np.isfinite(depth)
    mean_weight = float(haze_weight[finite].mean()) if finite.any() else 0.0
    return HazeDepth(fused, haze_weight, FUSED, beta, count, mean_weight)


def _network_only(depth: np.ndarray, reason: str, pixels: int) -> HazeDepth:
    return HazeDepth(
        depth.copy(), np.zeros(depth.shape, np.float32), NETWORK, math.nan, pixels, 0.0, reason
    )


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian-like average of standard deviation ``sigma`` px: two box filters (each of
    variance (k^2 - 1) / 12), a tenth of the time of cv2.GaussianBlur at this width."""
    size = max(3, int(round(math.sqrt(6.0 * sigma * sigma + 1.0))) | 1)
    once = cv2.boxFilter(values, cv2.CV_32F, (size, size), borderType=cv2.BORDER_REFLECT)
    return cv2.boxFilter(once, cv2.CV_32F, (size, size), borderType=cv2.BORDER_REFLECT)
