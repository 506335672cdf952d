"""Metric depth in a canonical camera (after Metric3D, ICCV 2023): one rule for training and engine.

From one image, metres exist only relative to a focal length: an object of size S at depth d
spans f * S / d pixels, so a network that sees pixels can only know d / f. The depth networks
therefore learn the *canonical* depth d_c = d * f_c / f that the scene would have if the image
had the canonical focal length f_c (ModelConfig.canonical_focal_px), with f the focal length in
pixels of the image exactly as the network sees it (after every crop and resize), and metres
come back as d = d_c * f / f_c. A camera whose focal length is not known gets one from an
assumed horizontal field of view.
"""

from __future__ import annotations

import math

DEFAULT_HFOV_DEG = 70.0  # assumed when no CameraInfo says otherwise (the built-in camera's)


def focal_from_hfov(width: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> float:
    """Focal length in pixels of a pinhole camera ``width`` pixels wide with this field of view."""
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"horizontal field of view must lie in (0, 180) degrees, got {hfov_deg}")
    return (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)


def canonical_from_metric(depth_m, focal_px, canonical_focal_px: float):
    """d_c = d * f_c / f (numpy arrays, torch tensors or floats; ``focal_px`` broadcasts)."""
    return depth_m * (canonical_focal_px / focal_px)


def metric_from_canonical(depth_c, focal_px, canonical_focal_px: float):
    """d = d_c * f / f_c, the inverse of ``canonical_from_metric``."""
    return depth_c * (focal_px / canonical_focal_px)
