"""The metric scale sources training.evaluate reports (``--scale-sources``), a row each per view:
which camera mounting a source uses on a view and the synthetic LiDAR of the anchor rows."""

from __future__ import annotations

import math

import numpy as np

from dehaze_ros.anchor_scale import AnchorCloud
from dehaze_ros.metric_scale import Mounting
from dehaze_ros.sim.lidar import LidarModel, synthetic_lidar
from training.data.common import Sample

# The scale sources training.evaluate can report, each a row per view (module docstring).
SCALE_SOURCES = ("learned", "ground", "ground-height", "anchors", "anchors-scale", "anchors-shift")
SCALE_LABELS = {
    "ground": "ground plane",
    "ground-height": "ground plane, pitch estimated",
    "anchors": "anchors",
    "anchors-scale": "anchors, scale only",
    "anchors-shift": "anchors, scale + inverse-depth shift",
}
# How each anchor row fits the points (EngineConfig.anchor_fit, anchor_refine): the node's
# default, and the two simpler fits it is measured against.
ANCHOR_VARIANTS = {
    "anchors": ("scale", True),
    "anchors-scale": ("scale", False),
    "anchors-shift": ("scale_shift", False),
}


def view_mounting(
    sample: Sample, source: str, height_m: float, pitch_deg: float
) -> Mounting | None:
    """The camera mounting a scale source uses for this view (the view's own, else the options'),
    or None when the source cannot run on it (no known camera height)."""
    if source == "learned" or source in ANCHOR_VARIANTS:
        return Mounting()
    height = sample.camera_height_m if math.isfinite(sample.camera_height_m) else height_m
    if not (math.isfinite(height) and height > 0):
        return None
    if source == "ground-height":
        return Mounting(height)
    pitch = sample.camera_pitch_deg if math.isfinite(sample.camera_pitch_deg) else pitch_deg
    return Mounting(height, pitch)


def view_anchors(sample: Sample, range_m: float, seed: int) -> AnchorCloud | None:
    """The synthetic LiDAR of a view (its exact depth, its focal length, principal point at the
    centre as the sets' cameras have it), or None when the view has no metric depth or focal."""
    if not (sample.has_depth and sample.metric_depth and sample.focal_px > 0):
        return None
    points = synthetic_lidar(
        sample.depth_m,
        sample.focal_px,
        model=LidarModel(max_range_m=range_m),
        rng=np.random.default_rng(seed),
    )
    return AnchorCloud.of(points)
