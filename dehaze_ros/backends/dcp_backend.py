"""The Dark Channel Prior (dehaze_ros.dcp) as a backend: no weights, numpy on the CPU."""

from __future__ import annotations

import time

import numpy as np

from dehaze_ros.backends.base import Backend, BackendOutput
from dehaze_ros.dcp import dehaze_dcp


class DCPBackend(Backend):
    name = "dcp"
    # -ln t = beta * d: depth up to the unknown scattering coefficient.
    depth_units = "relative"
    depth_range = (0.0, float("inf"))
    # The J ~ a I + b fit beat the guided t on every dev set for the DCP (docs/performance.md,
    # "Full-resolution recovery"); for the networks guided t wins.
    preferred_upsampling = "affine"
    # The DCP's t and A are what dense_fog blends towards: nothing to blend with.
    blends_in_dense_fog = False

    def describe(self) -> dict:
        return {
            "model": "dcp",
            "backend": "dcp",
            "checkpoint": "",
            "device": "cpu",
            "precision": "fp32",
        }

    def run(self, rgb: np.ndarray, want_dehazed: bool, want_depth: bool) -> BackendOutput:
        mark = time.perf_counter()
        result = dehaze_dcp(rgb)
        return BackendOutput(
            result.dehazed,
            result.transmission,
            result.airlight,
            result.relative_depth if want_depth else None,
            {"dehaze": (time.perf_counter() - mark) * 1e3},
        )
