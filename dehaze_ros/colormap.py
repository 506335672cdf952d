"""Depth -> false-colour bgr8 image for people (RViz, rqt, the demo), over a FIXED range.

The range comes from parameters, never from the frame's own min/max: a per-frame stretch makes
the same distance change colour whenever something enters the view, and loses the metres.
Metric depth is mapped on a log scale between ``near`` and ``far`` (a metre matters more at 2 m
than at 40 m); near is red, far is blue (OpenCV's Turbo, reversed). REP-117 values get fixed
colours: NaN (unknown) black, -inf (too close) the nearest colour, +inf (too far / sky) the
farthest.
"""

from __future__ import annotations

import cv2
import numpy as np


def depth_to_colormap(
    depth: np.ndarray, near: float, far: float, log_scale: bool = True
) -> np.ndarray:
    """H x W float depth -> H x W x 3 uint8 BGR. ``log_scale`` needs ``near`` > 0."""
    if not far > near:
        raise ValueError(f"colormap range needs far > near, got near={near}, far={far}")
    if log_scale and near <= 0:
        raise ValueError(f"a log-scale colormap needs near > 0, got {near}")
    depth = np.asarray(depth, dtype=np.float32)
    unknown = np.isnan(depth)
    with np.errstate(invalid="ignore", divide="ignore"):
        clipped = np.clip(np.nan_to_num(depth, nan=far, posinf=far, neginf=near), near, far)
        if log_scale:
            fraction = np.log(clipped / near) / np.log(far / near)
        else:
            fraction = (clipped - near) / (far - near)
    # Turbo runs blue -> red; reversed so that near things are red (warm = close, as usual).
    levels = ((1.0 - fraction) * 255.0 + 0.5).astype(np.uint8)
    colored = cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)
    colored[unknown] = 0
    return colored
