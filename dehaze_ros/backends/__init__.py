"""Inference backends behind one interface (``base.Backend``); ``create_backend`` picks one.

backend = create_backend(model="checkpoint", backend="torch", checkpoint="x.pt", device="auto",
                         precision="auto")
choice = resolve_backend("auto", "checkpoint", "x.pt", device="auto")  # .name, .why, .graph
out = backend.run(rgb_small, want_dehazed=True, want_depth=True)   # BackendOutput
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from dehaze_ros.backends.base import Backend, BackendError, BackendOutput

MODELS = ("checkpoint", "dcp")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
DEFAULT_BACKEND = "auto"  # the engine's, the node's and the evaluator's default (resolve_backend)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "MODELS",
    "Backend",
    "BackendChoice",
    "BackendError",
    "BackendOutput",
    "create_backend",
    "resolve_backend",
]


class BackendChoice(NamedTuple):
    """What a ``backend`` setting runs: ``name``, ``why`` in words ("" when it was named, not
    chosen), and ``graph``: the exported graph auto found for it ("" when none)."""

    name: str
    why: str = ""
    graph: str = ""


def openvino_problem() -> str:
    """Why OpenVINO cannot run here ("" when it can): not installed, or installed but broken or
    too old to load (auto must not pick what then fails where torch would work)."""
    try:
        import openvino
    except ImportError:
        return "openvino is not installed"
    except Exception as exc:  # a broken install: missing shared libraries, numpy ABI
        return f"openvino does not load: {exc}"
    if not hasattr(openvino, "Core"):
        return "openvino is too old (no openvino.Core: 2023.1 or later is needed)"
    return ""


def resolve_backend(
    backend: str, model: str, checkpoint: str | Path, device: str, onnx_model: str | Path = ""
) -> BackendChoice:
    """What ``backend`` runs (``BackendChoice``).

    ``auto`` is OpenVINO on a CPU when the openvino package loads and an exported graph is ready
    (``onnx_model``, or the checkpoint's own graph beside it, ``CHECKPOINT.onnx``, exported from
    that very file by this version's exporter, as shipped with default.pt; a given ``onnx_model``
    on a GPU runs on onnxruntime): on the 2-core AVX-512 machine of docs/performance.md it ran the
    shipped networks in about half torch's time per frame (a GPU that this torch cannot use gets
    the same /diagnostics warning from either backend). Everything else is torch: a GPU, no
    openvino, or no graph yet (auto never starts a 30 s export on its own;
    ``python -m training.export CHECKPOINT --onnx CHECKPOINT.onnx`` makes one). The rule depends
    only on what is installed and on files the user sees, never on a hidden cache. Auto trusts a
    graph beside the checkpoint that says it was exported from it.
    """
    if backend != "auto":
        return BackendChoice(backend)
    if model != "checkpoint":
        return BackendChoice("torch")  # the DCP has no network: nothing runs it
    from dehaze_ros import devices

    on_gpu = device.startswith("cuda") or devices.resolve_device(device).type != "cpu"
    problem = openvino_problem()
    if onnx_model:  # the graph is the model: a runner of graphs, never torch
        if on_gpu or problem:
            return BackendChoice("onnxruntime", f"auto: onnxruntime for the graph {onnx_model}")
        return BackendChoice("openvino", f"auto: openvino on the CPU, graph {onnx_model}")
    if on_gpu:
        return BackendChoice("torch", "auto: torch on the GPU")
    if problem:
        return BackendChoice(
            "torch",
            f"auto: torch ({problem}; `pip install openvino` ran the shipped networks in about "
            "half the time on a CPU, docs/performance.md)",
        )
    from dehaze_ros.backends.onnxruntime_backend import bundled_graph

    graph = bundled_graph(checkpoint)
    if graph is None:
        return BackendChoice(
            "torch",
            f"auto: torch (no graph exported from {checkpoint} beside it: `python -m "
            f"training.export {checkpoint} --onnx {suffixed(checkpoint, '.onnx')}` lets auto "
            "use openvino, about twice as fast on a CPU)",
        )
    return BackendChoice("openvino", f"auto: openvino on the CPU, graph {graph}", str(graph))


def suffixed(path: str | Path, suffix: str) -> str:
    """``path`` with ``suffix`` for its own, or its name plus the suffix where it has no name
    to replace one in ('.', '/')."""
    try:
        return str(Path(path).with_suffix(suffix))
    except ValueError:
        return str(path) + suffix


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
    choice = resolve_backend(backend, model, checkpoint, device, onnx_model)
    backend, onnx_model = choice.name, onnx_model or choice.graph
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
