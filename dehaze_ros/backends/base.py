"""The interface every inference backend implements (torch networks, ONNX Runtime, DCP).

A backend is only "the model": it turns one image at network resolution into low-resolution
results. Everything around it is done once, by ``dehaze_ros.engine.DehazeEngine``, for every
backend: input validation and conversion, resizing to ``max_side``, the full-resolution
recovery of the dehazed image (``dehaze_ros.upsampling``), the depth upsampling, the
canonical-camera conversion to metres and the REP-117 range limits.

``Backend.run(rgb, want_dehazed, want_depth)`` receives

* ``rgb``: numpy float32, h x w x 3, RGB in [0, 1], C-contiguous, at the resolution the
  network runs at (the engine already downscaled it); any h, w >= 1 (networks pad inside).
* ``want_dehazed`` / ``want_depth``: which outputs somebody uses; a backend may skip the rest.

and returns a :class:`BackendOutput`, every array numpy float32 on the CPU at that same h x w:

* ``dehazed``: h x w x 3 RGB clamped to [0, 1]; and/or ``transmission`` (h x w, in (0, 1]) with
  ``airlight`` ((3,) RGB in [0, 1]). When ``want_dehazed``, at least one of the two forms.
  Models that predict t and A (physics heads, DCP) return t and A always (visibility
  estimation reads them) and ``dehazed`` too: the engine uses t and A to rebuild the full-resolution
  image, and ``dehazed`` as it is when no resizing happened.
* ``depth``: h x w when ``want_depth``, in ``depth_units``. Where ``canonical_focal_px > 0`` it is
  the network's raw canonical-camera depth (metres for a camera of focal length
  ``canonical_focal_px`` at this resolution): the ENGINE converts it to metres for the real camera,
  d = d_c * f / f_c (``dehaze_ros.canonical_camera``), so no backend needs the focal length.
* ``timings_ms``: stage names ("dehaze", "depth") to milliseconds, measured after any
  asynchronous device work has finished.

Attributes a backend sets in ``__init__``: ``name`` (the model, e.g. "diacmpn-rt" or "dcp"),
``depth_units`` ("meters" | "relative"), ``depth_range`` ((near, far) in depth_units: outside it
the engine writes -inf / +inf), ``canonical_focal_px`` (0 = none) and ``checkpoint`` (the
checkpoint's metadata, ``dehaze_ros.checkpoint.Checkpoint`` without weights, or None).
``describe()`` returns at least {"model", "backend", "device", "precision"}, and
"device_warning" when the device it runs on is probably not the one the user has
(``dehaze_ros.devices.auto_cpu_warning``: the node shows it in /diagnostics); ``close()`` frees
the model (GPU memory included) and may be called twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from dehaze_ros.checkpoint import Checkpoint

# The input name of the exported graph (onnx_export writes it, the graph runners feed it).
GRAPH_INPUT_NAME = "hazy"


class BackendError(RuntimeError):
    """A backend could not be set up or gave output that breaks the interface."""


@dataclass
class BackendOutput:
    dehazed: np.ndarray | None = None  # h x w x 3 float32 RGB, [0, 1]
    transmission: np.ndarray | None = None  # h x w float32, (0, 1]
    airlight: np.ndarray | None = None  # (3,) float32 RGB, [0, 1]
    depth: np.ndarray | None = None  # h x w float32, depth_units (canonical camera if set)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def check(
        self, height: int, width: int, want_dehazed: bool, want_depth: bool, backend: str
    ) -> None:
        """Raise BackendError naming the output that does not match the interface."""
        expected = {
            "dehazed": (height, width, 3),
            "transmission": (height, width),
            "airlight": (3,),
            "depth": (height, width),
        }
        for key, shape in expected.items():
            value = getattr(self, key)
            if value is None:
                continue
            if (
                not isinstance(value, np.ndarray)
                or value.dtype != np.float32
                or value.shape != shape
            ):
                got = (
                    f"{value.dtype} {value.shape}"
                    if isinstance(value, np.ndarray)
                    else type(value).__name__
                )
                raise BackendError(f"backend {backend}: {key} must be float32 {shape}, got {got}")
        if (self.transmission is None) != (self.airlight is None):
            raise BackendError(
                f"backend {backend}: transmission and airlight come together or not at all"
            )
        if want_dehazed and self.dehazed is None and self.transmission is None:
            raise BackendError(
                f"backend {backend}: a dehazed image was asked for but neither dehazed "
                "nor transmission + airlight were returned"
            )
        if want_depth and self.depth is None:
            raise BackendError(f"backend {backend}: depth was asked for but not returned")


def graph_input(rgb: np.ndarray, smallest: int) -> np.ndarray:
    """The 1 x 3 x H x W float32 input of an exported graph for ``rgb`` (h x w x 3 float32),
    its short side edge-padded at the bottom or right up to the graph's ``smallest`` accepted
    side: the torch backend pads any size, so a thin or tiny frame must not fail on a graph."""
    height, width = rgb.shape[:2]
    short_h, short_w = max(0, smallest - height), max(0, smallest - width)
    if short_h or short_w:
        rgb = np.pad(rgb, ((0, short_h), (0, short_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)


def graph_output(
    results: dict, height: int, width: int, want_dehazed: bool, want_depth: bool, timings: dict
) -> BackendOutput:
    """A BackendOutput from an exported graph's outputs (``onnx_export``: dehazed 1x3xHxW, depth
    and transmission 1x1xHxW, airlight 1x3), cropped back to ``height`` x ``width``."""
    transmission = airlight = None
    if "transmission" in results:
        transmission = results["transmission"][0, 0, :height, :width]
        airlight = results["airlight"].reshape(3)
    dehazed = (
        np.ascontiguousarray(results["dehazed"][0, :, :height, :width].transpose(1, 2, 0))
        if want_dehazed
        else None
    )
    depth = results["depth"][0, 0, :height, :width] if want_depth else None
    return BackendOutput(dehazed, transmission, airlight, depth, timings)


class Backend(ABC):
    """One model behind the engine. See the module docstring for the contract."""

    name: str = ""
    depth_units: str = "meters"
    depth_range: tuple[float, float] = (0.0, float("inf"))
    canonical_focal_px: float = 0.0
    checkpoint: Checkpoint | None = None
    # What EngineConfig.upsampling "auto" means for this backend: the mode it measured best with.
    preferred_upsampling: str = "guided"
    # EngineConfig.dense_fog "blend" may move this model's t and A towards the DCP's (dense_fog.py).
    blends_in_dense_fog: bool = True

    @abstractmethod
    def run(self, rgb: np.ndarray, want_dehazed: bool, want_depth: bool) -> BackendOutput:
        """One image (float32 h x w x 3 RGB [0, 1]) in, low-resolution results out."""

    @abstractmethod
    def describe(self) -> dict:
        """At least {"model", "backend", "device", "precision"}."""

    def close(self) -> None:
        """Free the model; the backend is unusable afterwards."""
