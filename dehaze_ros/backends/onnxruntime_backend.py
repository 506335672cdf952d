"""The exported graph (``dehaze_ros.onnx_export``) run by ONNX Runtime.

onnxruntime is an optional extra (``pip install 'dehaze_ros[onnx]'``; on a GPU machine
``onnxruntime-gpu`` instead of ``onnxruntime``). Without it the package works with the torch
backend, and asking for this one raises BackendError saying what to install.

Execution providers follow ``device``: ``cpu`` -> CPU; ``cuda`` / ``cuda:N`` -> TensorRT (when
this onnxruntime has it), CUDA, and CPU for any node neither takes; ``auto`` -> the CUDA list
when onnxruntime has the CUDA provider, else CPU. TensorRT builds an engine per input shape on
the first frame (slow: seconds to minutes) and keeps it in ``trt_cache_dir``, so a restart with
the same graph and frame size loads it instead (a node whose ``max_side`` differs from
``depth_max_side`` runs two shapes per frame, so two engines are built). Precision: fp32 (also
for ``auto``); ``fp16`` lets
TensorRT pick fp16 kernels per layer. That is opt-in, not ``auto``: unlike torch's autocast, which
keeps the DCP prior's box sums (cumulative sums up to H x W) in fp32, TensorRT may run them in
fp16, where they overflow above 65504; it has not been validated on a GPU. bf16 is not offered
by the providers and is refused.

The graph file: ``onnx_model`` when given; otherwise the checkpoint is exported once into
``$XDG_CACHE_HOME/dehaze_ros/onnx`` (default ``~/.cache``), named by the checkpoint's SHA-256,
the torch version and the export format, and reused from there (that export needs torch, onnx
and onnxscript, all in the extra).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from dehaze_ros.backends.base import Backend, BackendError, BackendOutput
from dehaze_ros import devices

INSTALL_HINT = ("pip install 'dehaze_ros[onnx]' (onnxruntime, onnx, onnxscript; on a GPU machine "
                "onnxruntime-gpu instead of onnxruntime), or use backend torch")


def import_onnxruntime():
    """The onnxruntime module, or BackendError saying how to get it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(f"backend onnxruntime needs the Python package onnxruntime, which is not "
                           f"installed ({exc}); {INSTALL_HINT}") from None
    return onnxruntime


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dehaze_ros"


def default_trt_cache_dir() -> Path:
    return cache_root() / "tensorrt"


def execution_providers(device: str, precision: str, trt_cache_dir: str | os.PathLike,
                        available: list[str]) -> tuple[list, str]:
    """(providers for InferenceSession, the device in words). BackendError for a device or
    precision this onnxruntime cannot serve."""
    devices.validate_device(device)
    devices.validate_precision(precision)
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device == "cpu":
        if precision not in ("auto", "fp32"):
            raise BackendError(f"backend onnxruntime runs fp32 on the CPU; precision {precision} is not "
                               "available there (use fp32 or auto, or backend torch)")
        return ["CPUExecutionProvider"], "cpu"
    if not has_cuda:
        raise BackendError(f"device {device!r} asked for, but this onnxruntime has no CUDAExecutionProvider "
                           f"(it has: {', '.join(available)}); install onnxruntime-gpu, or use device cpu")
    if precision == "bf16":
        raise BackendError("backend onnxruntime offers fp32 and fp16 (TensorRT) on a GPU, not bf16; "
                           "use fp16, fp32 or auto, or backend torch")
    index = int(device.split(":")[1]) if ":" in device else 0
    providers: list = []
    if "TensorrtExecutionProvider" in available:
        cache = Path(trt_cache_dir).expanduser() if str(trt_cache_dir) else default_trt_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        providers.append(("TensorrtExecutionProvider", {
            "device_id": index,
            "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }))
    providers.append(("CUDAExecutionProvider", {"device_id": index}))
    providers.append("CPUExecutionProvider")
    return providers, f"cuda:{index}"


def session_device(planned: str, requested: str, session_providers: list[str]) -> str:
    """The device a session really runs on. onnxruntime drops a GPU provider it cannot load (no
    CUDA/cuDNN libraries, a driver too old) with only a log line and runs on the CPU: for
    ``device`` cuda that is a BackendError, for ``auto`` the device is reported as cpu."""
    if planned == "cpu" or {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(session_providers):
        return planned
    if requested != "auto":
        raise BackendError(f"device {requested!r} asked for, but onnxruntime could not load its CUDA provider "
                           f"(the session has only: {', '.join(session_providers)}); check the CUDA and cuDNN "
                           "libraries onnxruntime-gpu needs, or use device cpu")
    return "cpu"


def cached_export(checkpoint: str | os.PathLike) -> Path:
    """The graph of ``checkpoint``, exported on first use into the cache folder."""
    import torch

    from dehaze_ros.onnx_export import ONNX_FORMAT_VERSION, OnnxExportError, export_onnx, file_sha256

    digest = file_sha256(checkpoint)[:16]
    path = cache_root() / "onnx" / f"{Path(checkpoint).stem}-{digest}-torch{torch.__version__}-v{ONNX_FORMAT_VERSION}.onnx"
    if not path.exists():
        try:
            export_onnx(checkpoint, path)
        except OnnxExportError as exc:
            raise BackendError(str(exc)) from exc
    return path


class OnnxRuntimeBackend(Backend):
    def __init__(self, onnx_model: str | os.PathLike = "", checkpoint: str | os.PathLike = "",
                 device: str = "auto", precision: str = "auto", trt_cache_dir: str | os.PathLike = "",
                 num_threads: int = 0):
        """``onnx_model``: an exported graph; "" exports ``checkpoint`` (cached, see the module
        docstring). ``num_threads``: CPU threads of the session; 0 = onnxruntime's choice."""
        ort = import_onnxruntime()
        from dehaze_ros.onnx_export import OnnxMetadata, OnnxModelError

        if onnx_model:
            path = Path(onnx_model).expanduser()
            if not path.is_file():
                raise BackendError(f"onnx_model {path} not found (no such file); export one with "
                                   "`python -m training.export CHECKPOINT --onnx OUT.onnx`, or leave "
                                   "onnx_model empty to export the checkpoint automatically")
        # Device and precision are checked before anything is exported.
        providers, planned_device = execution_providers(device, precision, trt_cache_dir,
                                                        ort.get_available_providers())
        if not onnx_model:
            path = cached_export(checkpoint)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f"onnxruntime could not load {path}: {exc}") from exc
        try:
            self.metadata = OnnxMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, path)
        except OnnxModelError as exc:
            raise BackendError(str(exc)) from exc
        self.path = path
        self.providers = self.session.get_providers()
        self.device = session_device(planned_device, device, self.providers)
        self.precision = "fp16" if (precision == "fp16" and "TensorrtExecutionProvider" in self.providers) else "fp32"
        self.outputs = [output.name for output in self.session.get_outputs()]
        self.name = self.metadata.name
        self.depth_units = self.metadata.depth_units
        self.depth_range = self.metadata.depth_range_m
        self.canonical_focal_px = self.metadata.canonical_focal_px
        self.checkpoint = self.metadata.as_checkpoint(path)

    def describe(self) -> dict:
        return {"model": self.name, "backend": "onnxruntime", "checkpoint": str(self.path),
                "device": self.device, "precision": self.precision, "providers": list(self.providers)}

    def close(self) -> None:
        self.session = None

    def run(self, rgb: np.ndarray, want_dehazed: bool, want_depth: bool) -> BackendOutput:
        if self.session is None:
            raise BackendError("onnxruntime backend is closed")
        height, width = rgb.shape[:2]
        smallest = self.metadata.min_side
        if min(height, width) < smallest:
            raise BackendError(
                f"image {width}x{height} is smaller than the ONNX graph accepts (each side >= {smallest} "
                f"px); raise max_side (or depth_max_side, for the depth pass), or use backend torch, which "
                f"pads any size")
        mark = time.perf_counter()
        hazy = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        # One graph: D and E run together, so the whole run is booked as "dehaze".
        results = dict(zip(self.outputs, self.session.run(None, {"hazy": hazy})))
        timings = {"dehaze": (time.perf_counter() - mark) * 1e3}
        transmission = airlight = None
        if "transmission" in results:
            transmission = results["transmission"][0, 0]
            airlight = results["airlight"].reshape(3)
        dehazed = np.ascontiguousarray(results["dehazed"][0].transpose(1, 2, 0)) if want_dehazed else None
        depth = results["depth"][0, 0] if want_depth else None
        return BackendOutput(dehazed, transmission, airlight, depth, timings)
