"""The exported graph (``dehaze_ros.onnx_export``) run by OpenVINO on the CPU.

OpenVINO is an optional extra: ``pip install 'dehaze_ros[openvino]'`` (openvino 2026.4: about
180 MB installed, nothing beyond numpy and openvino-telemetry; onnx and onnxscript for the
export). Without it the package works with the torch backend, and asking for this one raises
BackendError saying what to install.

Why a second ONNX runner: on the 2-core AVX-512 machine of docs/performance.md ("Where the time
goes") half of torch's time per frame was outside the convolutions (concatenations, bias copies,
padding, elementwise adds), and onnxruntime's CPU provider was slower than torch. OpenVINO's CPU
plugin fuses those into the convolutions and keeps the activations in its blocked layout, so the
same graph runs in about half torch's CPU time.

The graph is the one the onnxruntime backend uses (``onnx_model``, or the checkpoint exported
once into the cache, ``onnxruntime_backend.cached_export``), with the same metadata; OpenVINO
keeps ONNX's metadata_props in the model's rt_info ("framework").

Device: the CPU only (``auto`` and ``cpu``); a CUDA device is refused (use the torch or
onnxruntime backend there). Precision: ``auto`` is bf16 where the CPU has it natively
(``devices.cpu_supports_bf16``, the torch backend's rule) and fp32 elsewhere; measured within
0.05 dB and 0.001 SSIM of fp32 on the validation sets (docs/performance.md, "Quality per
backend"). ``fp32`` is always fp32 (the hint is explicit: OpenVINO's CPU plugin would otherwise
pick bf16 by itself); ``bf16`` is refused on a CPU without native bf16.

Shapes: the graph has a dynamic height and width; one compiled model per input size the engine
asks for (the dehazing pass, the depth pass, odd frames), compiled on first use and kept: a
static shape lets the plugin plan its memory and pick kernels once, and a camera has one or two
sizes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from dehaze_ros import devices
from dehaze_ros.backends.base import (
    GRAPH_INPUT_NAME,
    Backend,
    BackendError,
    BackendOutput,
    graph_input,
    graph_output,
)

INSTALL_HINT = (
    "pip install openvino (the OpenVINO CPU runtime; pip install '.[openvino]' in the source "
    "folder adds onnx and onnxscript for exports); or use backend torch"
)
# Compiled models kept, one per input size: a camera has one or two, an evaluation over
# photos of many sizes must not grow without bound.
MAX_COMPILED = 8


_SHARED_CORE = None


def shared_core():
    """The process's one ``openvino.Core``, made on first use and never released.

    OpenVINO's CPU plugin gives the thread that first compiles on a Core an alternate signal
    stack (sigaltstack) and, when that Core goes, puts back the one it found. Cores released in
    another order than they were made (engines reconfigured, an evaluation's engines collected)
    leave the thread with the stack of a Core already freed, and the next signal handled on it
    (Ctrl-C: Python's handlers run on the alternate stack) crashes the process with SIGSEGV
    (seen in the test suite: OpenVINO engines, then a SIGINT). One Core for the process keeps
    one stack, valid to the end. Compiled models come and go with their engines."""
    global _SHARED_CORE
    if _SHARED_CORE is None:
        _SHARED_CORE = import_openvino().Core()
    return _SHARED_CORE


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise BackendError(
            f"backend openvino needs the openvino package, which is not installed: {INSTALL_HINT}"
        ) from exc
    return openvino


def graph_metadata(model) -> dict[str, str]:
    """The ONNX metadata_props of a graph read by OpenVINO, as plain strings."""
    info = model.get_rt_info()
    framework = info["framework"] if "framework" in info else {}
    if hasattr(framework, "astype"):
        framework = framework.astype(dict)
    return {
        key: value.astype(str) if hasattr(value, "astype") else str(value)
        for key, value in framework.items()
    }


class OpenVinoBackend(Backend):
    def __init__(
        self,
        onnx_model: str | os.PathLike = "",
        checkpoint: str | os.PathLike = "",
        device: str = "auto",
        precision: str = "auto",
        num_threads: int = 0,
    ):
        """``onnx_model``: an exported graph; "" exports ``checkpoint`` (cached, as onnxruntime's
        backend does). ``num_threads``: the plugin's inference threads; 0 = its choice."""
        openvino = import_openvino()
        from dehaze_ros.backends.onnxruntime_backend import cached_export
        from dehaze_ros.onnx_export import OnnxMetadata, OnnxModelError

        if device not in ("auto", "cpu"):
            raise BackendError(
                f"backend openvino runs on the CPU only, got device {device!r}; use device cpu "
                "(or auto), or backend torch / onnxruntime for a GPU"
            )
        if precision not in ("auto", "fp32", "bf16"):
            raise BackendError(f"backend openvino runs fp32 or bf16, got precision {precision!r}")
        self.core = shared_core()
        # bf16 where both the CPU (devices.cpu_supports_bf16, torch's rule) and OpenVINO's CPU
        # plugin (its optimisation capabilities: not every Arm build takes a bf16 hint) have it.
        native_bf16 = devices.cpu_supports_bf16() and plugin_has_bf16(self.core)
        if precision == "bf16" and not native_bf16:
            raise BackendError(
                "precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX) that "
                "OpenVINO's CPU plugin runs in bf16; this one has none: use precision fp32"
            )
        self.precision = (
            "bf16" if precision == "bf16" or (precision == "auto" and native_bf16) else "fp32"
        )
        # device auto on a machine with a GPU torch cannot use: the torch backend's warning.
        self.device_warning = devices.auto_cpu_warning(
            device, "cpu", devices.visible_gpu(), cuda_version()
        )
        if onnx_model:
            path = Path(onnx_model).expanduser()
            if not path.is_file():
                raise BackendError(
                    f"onnx_model {path} not found (no such file); export one with "
                    "`python -m training.export CHECKPOINT --onnx OUT.onnx`, or leave "
                    "onnx_model empty to export the checkpoint automatically"
                )
        else:
            path = cached_export(checkpoint)
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise BackendError(f"openvino could not read {path}: {exc}") from exc
        try:
            self.metadata = OnnxMetadata.from_props(graph_metadata(self.model), path)
        except OnnxModelError as exc:
            raise BackendError(str(exc)) from exc
        # LATENCY: one frame at a time, all threads on it (the node keeps only the newest frame).
        self.properties = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
        }
        if num_threads:
            self.properties["INFERENCE_NUM_THREADS"] = num_threads
        self.compiled: dict[tuple[int, int], object] = {}
        self.path = path
        self.version = (
            openvino.__version__ if hasattr(openvino, "__version__") else openvino.get_version()
        )
        self.name = self.metadata.name
        self.depth_units = self.metadata.depth_units
        self.depth_range = self.metadata.depth_range_m
        self.canonical_focal_px = self.metadata.canonical_focal_px
        self.checkpoint = self.metadata.as_checkpoint(path)

    def describe(self) -> dict:
        description = {
            "model": self.name,
            "backend": "openvino",
            "checkpoint": str(self.path),
            "device": "cpu",
            "precision": self.precision,
            "openvino": self.version,
        }
        if self.device_warning:
            description["device_warning"] = self.device_warning
        return description

    def close(self) -> None:
        self.compiled = {}
        self.model = None

    def _request(self, height: int, width: int):
        """The infer request of the model compiled for this input size (compiled on first use)."""
        request = self.compiled.get((height, width))
        if request is None:
            model = self.model.clone()
            model.reshape({GRAPH_INPUT_NAME: [1, 3, height, width]})
            try:
                request = self.core.compile_model(
                    model, "CPU", self.properties
                ).create_infer_request()
            except Exception as exc:
                raise BackendError(
                    f"openvino could not compile {self.path} for {width}x{height}: {exc}"
                ) from exc
            if len(self.compiled) >= MAX_COMPILED:  # the oldest size goes first
                self.compiled.pop(next(iter(self.compiled)))
            self.compiled[(height, width)] = request
        return request

    def run(self, rgb: np.ndarray, want_dehazed: bool, want_depth: bool) -> BackendOutput:
        if self.model is None:
            raise BackendError("openvino backend is closed")
        height, width = rgb.shape[:2]
        hazy = graph_input(rgb, self.metadata.min_side)
        request = self._request(*hazy.shape[2:])
        mark = time.perf_counter()
        request.infer({GRAPH_INPUT_NAME: hazy})
        # Copies: the request's output buffers are overwritten by its next inference.
        results = {name: np.array(request.get_tensor(name).data) for name in self.metadata.outputs}
        # One graph: D and E run together, so the whole run is booked as "dehaze".
        timings = {"dehaze": (time.perf_counter() - mark) * 1e3}
        return graph_output(results, height, width, want_dehazed, want_depth, timings)


def plugin_has_bf16(core) -> bool:
    """Whether OpenVINO's CPU plugin offers bf16 inference here."""
    try:
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an old or unusual build: do not ask it for bf16
        return False


def cuda_version() -> str | None:
    """torch's CUDA build ("12.6"), None for a CPU build: what the GPU warning needs."""
    import torch

    return torch.version.cuda
