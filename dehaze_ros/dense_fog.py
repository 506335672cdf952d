"""Dense fog: where the network's own transmission says the frame is deep in fog, lean halfway
on the Dark Channel Prior (EngineConfig.dense_fog "blend"). No rclpy, no torch.

Why. The physics head's t sits above the truth and its airlight above the sky's in dense haze
(docs/results.md, "Known limitations": on hazed Middlebury scenes at t = 0.2 its median t is
0.27-0.35, DCP's 0.19-0.27), and there the DCP is ahead: on the Middlebury validation scenes
at the road's optical depth for a 30 m visibility (training.road_fog) 20.70 dB against DCP's
22.36 at the node's defaults, and the issue behind this module measured 1.4-2 dB behind DCP on
real street frames in fog. Averaging the two estimates, t and A together (the head trades one
against the other, so neither is replaced alone: mixing the network's t with DCP's A measured
worse than either), takes a part of each one's error away. Where the haze is light the network
is ahead of DCP on every set measured, and it is left untouched.

The gate is the median optical depth -ln t of the network's transmission over the frame (at the
networks' resolution): 0 below ``START_OPTICAL_DEPTH`` (t 0.37 at the median pixel), rising
linearly to ``MAX_WEIGHT`` at ``FULL_OPTICAL_DEPTH`` (t 0.22). Every development set at its
default density stays below the start (the network's median -ln t is at most 0.88 on the
Middlebury validation scenes at t = 0.4, 0.84 on RESIDE outdoor, 0.76 on O-HAZE, 0.70 on SOTS;
2 of the 53 real hazy photographs reach 1.0), so they are not changed. The DCP runs only when the
weight is above zero: light haze costs nothing. The measurements that chose these numbers, and
what the blend costs on the renderer's road scenes (whose fog the network was trained on), are in
docs/dense_fog.md.
"""

from __future__ import annotations

import numpy as np

from dehaze_ros.dcp import T_MIN, dehaze_dcp
from dehaze_ros.haze import recover_scene

MODES = ("blend", "off")
# Off: on the renderer's road scenes, where issue 29's gates are measured, the blend costs
# 0.3-1.8 dB at 30-50 m visibility, more than it gains on the Middlebury scenes
# (docs/dense_fog.md).
DEFAULT = "off"
START_OPTICAL_DEPTH = 1.0
FULL_OPTICAL_DEPTH = 1.5
MAX_WEIGHT = 0.5


def median_optical_depth(transmission: np.ndarray) -> float:
    """Median of -ln t over the frame; t is clipped at 1e-3 so a zero does not make it infinite."""
    return float(np.median(-np.log(np.clip(transmission, 1e-3, 1.0))))


def dcp_weight(transmission: np.ndarray) -> float:
    """How much of the DCP's t and A the blend takes for a frame whose network t is this: 0 in
    light haze, MAX_WEIGHT in dense fog, linear between."""
    depth = median_optical_depth(transmission)
    ramp = (depth - START_OPTICAL_DEPTH) / (FULL_OPTICAL_DEPTH - START_OPTICAL_DEPTH)
    return MAX_WEIGHT * float(np.clip(ramp, 0.0, 1.0))


def blend(
    hazy: np.ndarray, transmission: np.ndarray, airlight: np.ndarray, dehazed: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, float]:
    """The network's (dehazed, t, A) for ``hazy`` (float32 h x w x 3, the image the network saw),
    moved towards the DCP's by ``dcp_weight``: (dehazed, t, A, weight). With weight 0 the inputs
    come back as they are; otherwise dehazed is the scattering model inverted with the blended t
    and A, so that every upsampling mode rebuilds the same image."""
    weight = dcp_weight(transmission)
    if weight == 0.0:
        return dehazed, transmission, airlight, 0.0
    prior = dehaze_dcp(hazy)
    mixed_t = ((1.0 - weight) * transmission + weight * prior.transmission).astype(np.float32)
    mixed_a = ((1.0 - weight) * airlight + weight * prior.airlight).astype(np.float32)
    return recover_scene(hazy, mixed_t, mixed_a, T_MIN), mixed_t, mixed_a, weight
