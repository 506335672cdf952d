"""Inference backends behind one interface (``base.Backend``); ``create_backend`` picks one.

backend = create_backend(model="checkpoint", backend="torch", checkpoint="x.pt", device="auto",
                         precision="auto")
out = backend.run(rgb_small, want_dehazed=True, want_depth=True)   # BackendOutput
"""

from __future__ import annotations

from pathlib import Path

from dehaze_ros.backends.base import Backend, BackendError, BackendOutput

MODELS = ("checkpoint", "dcp")
BACKENDS = ("torch", "onnxruntime", "openvino")

__all__ = ["BACKENDS", "MODELS", "Backend", "BackendError", "BackendOutput", "create_backend"]


def create_backend(
    model: str,
    backend: str,
    checkpoint: str | Path,
    device: str,
    precision: str,
    onnx_model: str | Path = "",
    trt_cache_dir: str | Path = "",
    num_threads: int = 0,
    max_side: int = 0,
    depth_max_side: int = 0,
) -> Backend:
    """The one place that maps configuration to a backend class (imports are lazy: the DCP needs
    no torch model code, and onnxruntime is an optional dependency). ``onnx_model``,
    ``trt_cache_dir``, ``num_threads`` and the sizes (TensorRT's profile) apply to onnxruntime
    only (onnxruntime_backend); ``onnx_model`` and ``num_threads`` to openvino too."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if model == "dcp":
        # The DCP has no network: device, precision and backend do not apply.
        from dehaze_ros.backends.dcp_backend import DCPBackend

        return DCPBackend()
    if backend == "onnxruntime":
        from dehaze_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            onnx_model,
            checkpoint,
            device,
            precision,
            trt_cache_dir,
            num_threads,
            max_side,
            depth_max_side,
        )
    if backend == "openvino":
        from dehaze_ros.backends.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(onnx_model, checkpoint, device, precision, num_threads)
    from dehaze_ros.backends.torch_backend import TorchBackend

    return TorchBackend(checkpoint, device, precision)
