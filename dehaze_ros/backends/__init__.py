"""Inference backends behind one interface (``base.Backend``); ``create_backend`` picks one.

backend = create_backend(model="checkpoint", backend="torch", checkpoint="x.pt", device="auto",
                         precision="auto")
name, why = resolve_backend("auto", "checkpoint", "x.pt", device="auto")  # what auto runs
out = backend.run(rgb_small, want_dehazed=True, want_depth=True)   # BackendOutput
"""

from __future__ import annotations

from pathlib import Path

from dehaze_ros.backends.base import Backend, BackendError, BackendOutput

MODELS = ("checkpoint", "dcp")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")

__all__ = [
    "BACKENDS",
    "MODELS",
    "Backend",
    "BackendError",
    "BackendOutput",
    "create_backend",
    "resolve_backend",
]


def resolve_backend(
    backend: str, model: str, checkpoint: str | Path, device: str, onnx_model: str | Path = ""
) -> tuple[str, str]:
    """What ``backend`` runs, and why in words ("" when it was named, not chosen).

    ``auto`` is OpenVINO on a CPU when the openvino package is installed and an exported graph
    is ready (``onnx_model``, or the checkpoint's own graph beside it, ``CHECKPOINT.onnx``, as
    shipped with default.pt; a given ``onnx_model`` on a GPU runs on onnxruntime): on the
    2-core AVX-512 machine of docs/performance.md it ran the shipped networks in about half
    torch's time per frame. Everything else is torch: a GPU, no openvino, or no graph yet (auto
    never starts a 30 s export on its own; ``python -m training.export CHECKPOINT --onnx
    CHECKPOINT.onnx`` makes one). The rule depends only on
    what is installed and on files the user sees, never on a hidden cache.
    """
    if backend != "auto":
        return backend, ""
    if model != "checkpoint":
        return "torch", ""  # the DCP has no network: nothing runs it
    import importlib.util

    from dehaze_ros import devices

    on_gpu = device.startswith("cuda") or devices.resolve_device(device).type != "cpu"
    has_openvino = importlib.util.find_spec("openvino") is not None
    if onnx_model:  # the graph is the model: a runner of graphs, never torch
        if on_gpu or not has_openvino:
            return "onnxruntime", f"auto: onnxruntime for the graph {onnx_model}"
        return "openvino", f"auto: openvino on the CPU, graph {onnx_model}"
    if on_gpu:
        return "torch", "auto: torch on the GPU"
    if not has_openvino:
        return "torch", (
            "auto: torch (openvino is not installed; pip install 'dehaze_ros[openvino]' ran "
            "the shipped networks in about half the time on a CPU, docs/performance.md)"
        )
    from dehaze_ros.backends.onnxruntime_backend import bundled_graph

    graph = bundled_graph(checkpoint)
    if graph is None:
        return "torch", (
            f"auto: torch (no exported graph beside {checkpoint}: `python -m training.export "
            f"{checkpoint} --onnx {Path(checkpoint).with_suffix('.onnx')}` lets auto use "
            "openvino, about twice as fast on a CPU)"
        )
    return "openvino", f"auto: openvino on the CPU, graph {graph}"


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
    backend, _ = resolve_backend(backend, model, checkpoint, device, onnx_model)
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
