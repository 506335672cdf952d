"""Dark Channel Prior dehazing (He, Sun, Tang, CVPR 2009) with guided-filter refinement.

The no-weights fallback of the engine and the classic peer every benchmark compares against.
In haze-free outdoor patches at least one colour channel is nearly black; haze lifts that
"dark channel" towards the airlight, which gives the transmission:

    t(x) = 1 - omega * min_{y in patch(x)} min_c I_c(y) / A_c

refined by a guided filter (He et al. 2010) that snaps it to the image's edges. Depth is only
known up to the unknown scattering coefficient: -ln t = beta * d, so the depth DCP reports is
*relative* (beta * metres) and is labelled as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


# The paper's parameters (patch 15, omega 0.95, t0 0.1) and the guided filter's eps. The same
# values drive the network's DCP prior (dehaze_ros.models.dcp_prior), so the untrained network
# starts exactly where this baseline is.
PATCH = 15
OMEGA = 0.95
T_MIN = 0.1
GUIDED_EPS = 1e-3
AIRLIGHT_TOP_FRACTION = 0.001
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY


def guided_radius(height: int, width: int, patch: int = PATCH) -> int:
    """4 patches (the paper's 60 px at 600 px width), scaled down for small images."""
    return max(2, min(4 * patch, min(height, width) // 8))


@dataclass(frozen=True)
class DCPResult:
    dehazed: np.ndarray  # H x W x 3 float32 RGB [0, 1]
    transmission: np.ndarray  # H x W float32 (0, 1]
    airlight: np.ndarray  # (3,) float32
    relative_depth: np.ndarray  # H x W float32, -ln t = beta * depth


def dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    """Per-pixel minimum over colour channels, then over a patch x patch window (an erosion)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(image.min(axis=2), kernel)


def estimate_airlight(
    image: np.ndarray, dark: np.ndarray, top_fraction: float = AIRLIGHT_TOP_FRACTION
) -> np.ndarray:
    """Mean colour of the brightest input pixels among the haziest 0.1% of the dark channel.

    Averaging the few brightest candidates (rather than taking the single brightest pixel) keeps a
    lone specular highlight or lamp from becoming the airlight.
    """
    flat_dark = dark.reshape(-1)
    count = max(1, int(flat_dark.size * top_fraction))
    # The haziest ``count`` pixels; where several share the count-th value, the first of them in
    # row-major order. The erosion makes plateaus, so ties are common, and np.argpartition leaves
    # the choice among them to numpy's implementation (a fresh install with numpy 2.4.6 picked
    # other pixels than the earlier ones: the airlight of a test scene moved by 0.06). The
    # network's prior (models/dcp_prior.py) uses the same rule, so its untrained start is this DCP.
    kth_value = np.partition(flat_dark, -count)[-count]
    above = flat_dark > kth_value
    tied = flat_dark == kth_value
    room = count - int(above.sum())
    candidates = np.flatnonzero(above | (tied & (np.cumsum(tied) <= room)))
    pixels = image.reshape(-1, 3)[candidates]
    brightness = pixels.sum(axis=1)
    brightest = pixels[brightness >= np.quantile(brightness, 0.9)]
    return np.clip(brightest.mean(axis=0), 0.05, 1.0).astype(np.float32)


def box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over (2 radius + 1)^2 windows, per channel, reflected at the borders."""
    size = (2 * radius + 1, 2 * radius + 1)
    return cv2.boxFilter(values, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)


def guided_coefficients(
    guide: np.ndarray, target: np.ndarray, radius: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Window-averaged (a, b) of the local fits target ~ a * guide + b (same shapes as the inputs:
    H x W, or H x W x C for one fit per channel); the guided filter's output is a * guide + b.
    ``eps`` is the variance below which a window counts as flat (a -> 0, b -> the mean target)."""
    if guide.shape != target.shape:
        raise ValueError(f"guide {guide.shape} and target {target.shape} must have the same shape")
    guide = guide.astype(np.float32, copy=False)
    target = target.astype(np.float32, copy=False)
    mean_guide, mean_target = box_mean(guide, radius), box_mean(target, radius)
    covariance = box_mean(guide * target, radius) - mean_guide * mean_target
    # E[g^2] - E[g]^2 can round below zero in flat float32 windows.
    variance = np.maximum(box_mean(guide * guide, radius) - mean_guide * mean_guide, 0.0)
    gain = covariance / (variance + eps)
    offset = mean_target - gain * mean_guide
    return box_mean(gain, radius), box_mean(offset, radius)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-preserving smoothing of ``source`` steered by the gray ``guide`` (box-filter form)."""
    gain, offset = guided_coefficients(guide, source, radius, eps)
    return gain * guide + offset


def dehaze_dcp(
    image: np.ndarray,
    patch: int = PATCH,
    omega: float = OMEGA,
    t_min: float = T_MIN,
    radius: int = 0,
    guided_eps: float = GUIDED_EPS,
) -> DCPResult:
    """Dehaze an RGB float32 [0, 1] (or uint8) image. ``radius`` 0 = ``guided_radius`` of the image.

    Defaults are the paper's (patch 15, omega 0.95, t0 0.1); the guided-filter radius is 4 patches
    (the paper's 60 px at 600 px width), scaled down for small images.
    """
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"DCP needs an H x W x 3 RGB image, got shape {image.shape}")
    height, width = image.shape[:2]
    patch = max(1, min(patch, min(height, width) | 1))
    airlight = estimate_airlight(image, dark_channel(image, patch))
    raw_transmission = 1.0 - omega * dark_channel(image / airlight, patch)
    radius = radius or guided_radius(height, width, patch)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    transmission = np.clip(guided_filter(gray, raw_transmission, radius, guided_eps), t_min, 1.0)
    dehazed = (image - airlight) / transmission[..., None] + airlight
    return DCPResult(
        dehazed=np.clip(dehazed, 0.0, 1.0).astype(np.float32),
        transmission=transmission.astype(np.float32),
        airlight=airlight,
        relative_depth=(-np.log(transmission)).astype(np.float32),
    )
