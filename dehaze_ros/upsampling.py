"""Full-resolution recovery of a dehazed image from a model that ran below input resolution.

Every backend's low-resolution result goes through here (``DehazeEngine``), in one of three modes:

``guided`` -- the fast guided filter (He, Sun, Tang, TPAMI 2013; He & Sun 2015; Wu et al.,
CVPR 2018): fit, at the low resolution, a local linear model ``target ~ a * guide + b`` in every
(2r+1)^2 window, average a and b over the windows that cover each pixel, upsample the two smooth
maps bilinearly and apply them to the full-resolution guide. Where the target follows the guide
(an edge in t at an edge of the image) the result has the sharp full-resolution edge; where the
guide is flat, a -> 0 and it falls back to a smooth upsampling of the target.

* t and A (physics heads, DCP): target t, guide the gray hazy image; then the inverse scattering
  model J = (I - A) / max(t, t0) + A at full resolution.
* only J (the paper's residual head): per colour channel, target J_small, guide I_small. For the
  scattering model with a locally constant t this relation is exact (a = 1/t, b = A(1 - 1/t)),
  so the fine detail of I is kept and amplified by 1/t, as the model says.

``affine`` -- the per-channel J ~ a I + b fit for every model that returns J, t and A or not
(t and A only: as ``guided``). It also carries what a single gray-guided t cannot: colour-
dependent gain and the clipping of J.

``bilinear`` -- the earlier path, kept for comparison: t bilinearly upsampled, and for J-only
heads ``I_full + bilinear(J_small - I_small)`` (the detail of I is kept but not amplified).

``DEFAULT`` is ``guided``: on the dev sets (docs/performance.md, "Full-resolution recovery below the input
size") it gains over ``bilinear`` for the shipped network on every set, where ``affine`` loses
SSIM on O-HAZE; for the DCP ``guided`` is within 0.005 dB and 0.0004 SSIM of ``bilinear`` (SOTS)
or better, ``affine`` better on every set.

Depth is never blended: nearest-neighbour, so no value between a foreground and a background
(a "flying" point) is invented.
"""

from __future__ import annotations

import cv2
import numpy as np

from dehaze_ros.dcp import GRAY_WEIGHTS, T_MIN, guided_coefficients
from dehaze_ros.haze import recover_scene

UPSAMPLING = ("auto", "guided", "affine", "bilinear")
# auto: the mode the backend measured best with (Backend.preferred_upsampling): guided for the
# networks, affine for the DCP (docs/performance.md, "Full-resolution recovery": each wins on every dev set).
DEFAULT = "auto"
MODES = UPSAMPLING[1:]
# Window radius at the network's resolution and regularisation of the local fits. r = 2 (5 x 5)
# keeps the fits local (t of a physics head changes within a few pixels); the eps are the guide
# variance below which a window counts as flat: 1e-3 (std 0.03) for t, the DCP's value; 1e-5
# (std 0.003, under a grey level, just above 8-bit quantisation noise, 1.3e-6) for the J ~ I
# fit, whose slope 1/t must survive in the weakly textured windows of thick haze (haze scales
# the texture's variance by t^2). Chosen on the dev sets, where r 1/2/4, eps_t 1e-2/1e-3/1e-4
# and eps_J 1e-4/1e-5/3e-6/1e-6 were measured (docs/performance.md).
RADIUS = 2
EPS_TRANSMISSION = 1e-3
EPS_AFFINE = 1e-5


def resize_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    if values.shape[:2] == (height, width):
        return values
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)


def guided_upsample(
    guide_small: np.ndarray,
    target_small: np.ndarray,
    guide_full: np.ndarray,
    radius: int = RADIUS,
    eps: float = EPS_TRANSMISSION,
) -> np.ndarray:
    """``target`` at the size of ``guide_full``, its edges taken from the guide (fast guided filter)."""
    gain, offset = guided_coefficients(guide_small, target_small, radius, eps)
    height, width = guide_full.shape[:2]
    return resize_bilinear(gain, height, width) * guide_full + resize_bilinear(
        offset, height, width
    )


def gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of a float32 RGB image (the DCP's guide)."""
    weights = np.asarray(GRAY_WEIGHTS, np.float32)
    return rgb @ weights


def upsample_transmission(
    transmission: np.ndarray, hazy_small: np.ndarray, hazy_full: np.ndarray, mode: str = "guided"
) -> np.ndarray:
    """t (h x w) at the size of ``hazy_full`` (H x W x 3 float32 [0, 1]), clipped to [0, 1]."""
    height, width = hazy_full.shape[:2]
    if transmission.shape == (height, width):
        full = transmission
    elif mode == "bilinear":
        full = resize_bilinear(transmission, height, width)
    elif mode in ("guided", "affine"):
        full = guided_upsample(
            gray(hazy_small), transmission, gray(hazy_full), RADIUS, EPS_TRANSMISSION
        )
    else:
        raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {mode!r}")
    return np.clip(full, 0.0, 1.0)


def recover_from_transmission(
    hazy_full: np.ndarray,
    hazy_small: np.ndarray,
    transmission: np.ndarray,
    airlight: np.ndarray,
    mode: str = "guided",
    t_min: float = T_MIN,
) -> np.ndarray:
    """J = (I - A) / max(t, t_min) + A at full resolution from the low-resolution t: float32 [0, 1]."""
    full_t = upsample_transmission(transmission, hazy_small, hazy_full, mode)
    return recover_scene(hazy_full, full_t, np.asarray(airlight, np.float32), t_min)


def recover_from_dehazed(
    hazy_full: np.ndarray, hazy_small: np.ndarray, dehazed_small: np.ndarray, mode: str = "guided"
) -> np.ndarray:
    """Full-resolution J from a low-resolution J of a model without t and A: float32 [0, 1]."""
    height, width = hazy_full.shape[:2]
    if dehazed_small.shape[:2] == (height, width):
        full = dehazed_small
    elif mode == "bilinear":
        full = hazy_full + resize_bilinear(dehazed_small - hazy_small, height, width)
    elif mode in ("guided", "affine"):
        full = guided_upsample(hazy_small, dehazed_small, hazy_full, RADIUS, EPS_AFFINE)
    else:
        raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {mode!r}")
    return np.clip(full, 0.0, 1.0)


def recover_full_resolution(
    hazy_full: np.ndarray,
    hazy_small: np.ndarray,
    dehazed_small: np.ndarray | None,
    transmission: np.ndarray | None,
    airlight: np.ndarray | None,
    mode: str = "guided",
) -> np.ndarray:
    """The dehazed image at the size of ``hazy_full`` (float32 [0, 1]) from whatever the model gave
    at the size of ``hazy_small``: J, or t and A, or all three (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(
            f"upsampling must be one of {MODES} here ('auto' is resolved by the engine), got {mode!r}"
        )
    if dehazed_small is None and transmission is None:
        raise ValueError("nothing to recover from: neither a dehazed image nor a transmission map")
    if dehazed_small is not None and (
        transmission is None or mode == "affine" or dehazed_small.shape[:2] == hazy_full.shape[:2]
    ):
        return recover_from_dehazed(hazy_full, hazy_small, dehazed_small, mode)
    return recover_from_transmission(hazy_full, hazy_small, transmission, airlight, mode)


def upsample_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest neighbour: every output value is one the model gave (no flying points)."""
    if depth.shape == (height, width):
        return depth.copy()
    return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
