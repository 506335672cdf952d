"""A synthetic spinning LiDAR made from an exact depth image: the anchor points of evaluations and
tests (issue 26: 32 beams, 0.2 degree azimuth steps, +-3 cm noise, 10 % dropout, range limited
as fog limits it). The sensor sits at the camera's optical centre; its points are returned in the
camera optical frame (REP-103: x right, y down, z forward), metres. No rclpy, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LidarModel:
    beams: int = 32
    # Elevation of the top and bottom beam (degrees, up positive): a common 32-beam vehicle sensor.
    top_deg: float = 10.67
    bottom_deg: float = -30.67
    azimuth_step_deg: float = 0.2
    noise_m: float = 0.03  # uniform in +-noise_m along the beam
    dropout: float = 0.1  # share of returns lost at random
    max_range_m: float = 30.0  # returns beyond are lost (fog: 20-30 m)


def synthetic_lidar(
    depth_m: np.ndarray,
    fx: float,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    model: LidarModel = LidarModel(),
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """N x 3 float32 points of the returns ``model`` gets from the scene whose exact depth (along
    the optical axis, metres; +inf sky, NaN unknown) is ``depth_m``, seen by a pinhole camera
    (fy defaults to fx, the principal point to the image centre). Only beams inside the camera's
    view are cast: the points a camera-LiDAR pair can use."""
    rng = rng if rng is not None else np.random.default_rng(0)
    height, width = depth_m.shape
    fy = fx if fy is None else fy
    cx = (width - 1) / 2.0 if cx is None else cx
    cy = (height - 1) / 2.0 if cy is None else cy
    half_width = math.atan(max(cx + 0.5, width - 0.5 - cx) / fx)
    azimuth = np.radians(
        np.arange(-math.degrees(half_width), math.degrees(half_width), model.azimuth_step_deg)
    )
    elevation = np.radians(np.linspace(model.top_deg, model.bottom_deg, model.beams))
    elevation, azimuth = np.meshgrid(elevation, azimuth, indexing="ij")
    direction = np.stack(
        [
            np.cos(elevation) * np.sin(azimuth),
            -np.sin(elevation),
            np.cos(elevation) * np.cos(azimuth),
        ],
        axis=-1,
    ).reshape(-1, 3)
    direction = direction[direction[:, 2] > 1e-3]
    u = np.rint(cx + fx * direction[:, 0] / direction[:, 2]).astype(np.int64)
    v = np.rint(cy + fy * direction[:, 1] / direction[:, 2]).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    direction, u, v = direction[inside], u[inside], v[inside]
    z = depth_m[v, u].astype(np.float64)
    hit = np.isfinite(z) & (z > 0)
    direction, z = direction[hit], z[hit]
    distance = z / direction[:, 2]
    distance = distance + rng.uniform(-model.noise_m, model.noise_m, distance.shape)
    kept = (distance <= model.max_range_m) & (rng.random(distance.shape) >= model.dropout)
    return (direction[kept] * distance[kept, None]).astype(np.float32)
