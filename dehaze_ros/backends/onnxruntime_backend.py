"""The exported graph (``dehaze_ros.onnx_export``) run by ONNX Runtime.

onnxruntime is an optional extra: ``pip install 'dehaze_ros[onnx]'`` on a CPU,
``'dehaze_ros[onnx-gpu]'`` (onnxruntime-gpu) on an NVIDIA GPU. The two packages are one Python
module: the CPU one installed over the GPU one silently takes its providers away, so with a GPU
in the machine and no GPU provider in the session ``describe()`` carries a ``device_warning``.
Without either package the package works with the torch backend, and asking for this one raises
BackendError saying what to install.

Execution providers follow ``device``: ``cpu`` -> CPU; ``cuda`` / ``cuda:N`` -> TensorRT (when
this onnxruntime has it), CUDA, and CPU for any node neither takes; ``auto`` -> the CUDA list
when onnxruntime has the CUDA provider, else CPU.

TensorRT: one optimisation profile from the configured sizes (``tensorrt_profile``: smallest
side the graph accepts .. the larger of max_side and depth_max_side, tuned for a 4:3 frame at
max_side), so one engine serves every frame and both passes, and the engine's warm-up builds it
at configure time instead of on a live frame. Engines are cached in ``trt_cache_dir``, in a
folder per graph content and precision (``engine_cache_dir``): onnxruntime names its engine files
after the graph's structure, not its weights, so a re-exported model of the same name would
otherwise load the old engine. The build takes minutes on a Jetson:
``python -m dehaze_ros.tools.build_engines`` does it ahead of time. Sides above
``TRT_MAX_SIDE`` are refused (TensorRT's TopK takes k <= 3840; the DCP prior's airlight takes the
haziest 0.1% of the pixels).

Precision: fp32 (also for ``auto``); ``fp16`` lets TensorRT pick fp16 kernels per layer. That is
opt-in, not ``auto``: unlike torch's autocast, which keeps the DCP prior's box sums (cumulative
sums up to H x W) in fp32, TensorRT may run them in fp16, where they overflow above 65504 and
lose the guided filter's precision long before; onnxruntime offers no per-layer precision to
prevent it. ``python -m dehaze_ros.tools.gpu_check`` measures the fp16 graph's difference from
fp32 on a GPU. bf16 is not offered by the providers and is refused.

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
    "pip install 'dehaze_ros[onnx]' on a CPU, or pip install 'dehaze_ros[onnx-gpu]' on an "
    "NVIDIA GPU (onnxruntime-gpu: CUDA and TensorRT providers); or use backend torch"
)
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# The largest side a TensorRT profile covers: TensorRT's TopK takes k <= 3840 and the DCP prior's
# airlight sorts the haziest pixels // 1000 (3686 at 1920 x 1920). Also the profile's upper end
# for max_side 0 (native), whose frame size is not known before the first frame.
TRT_MAX_SIDE = 1920
# The frame the profile is tuned for at native resolution: a VGA camera.
NATIVE_OPT_SIDE = 640


def import_onnxruntime():
    """The onnxruntime module, or BackendError saying how to get it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            f"backend onnxruntime needs the Python package onnxruntime, which is not "
            f"installed ({exc}); {INSTALL_HINT}"
        ) from None
    return onnxruntime


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dehaze_ros"


def default_trt_cache_dir() -> Path:
    return cache_root() / "tensorrt"


def engine_cache_dir(root: str | os.PathLike, model_sha256: str, precision: str) -> Path:
    """The folder of one graph's TensorRT engines: a re-exported graph (other weights, same
    structure and name) gets a new folder: onnxruntime's own file names would be the old ones."""
    return Path(root) / f"{model_sha256[:16]}-{precision}"


def tensorrt_profile(min_side: int, max_side: int, depth_max_side: int) -> dict[str, str]:
    """onnxruntime's TensorRT profile options for the graph input at the configured sizes.

    Either side may be the longer one (portrait cameras), so the upper end is square. BackendError
    when a configured side exceeds TRT_MAX_SIDE."""
    largest = max(max_side, depth_max_side) if max_side else TRT_MAX_SIDE
    if largest > TRT_MAX_SIDE:
        raise BackendError(
            f"backend onnxruntime with TensorRT runs sides up to {TRT_MAX_SIDE} px (TensorRT's "
            "TopK takes k <= 3840 and the DCP prior's airlight sorts 0.1% of the pixels), but "
            f"max_side / depth_max_side ask for {largest}; lower them, or use device cpu or "
            "backend torch"
        )
    opt_side = min(max_side or NATIVE_OPT_SIDE, TRT_MAX_SIDE)
    opt = (max(min_side, round(opt_side * 3 / 4)), max(min_side, opt_side))

    def shape(height: int, width: int) -> str:
        return f"{GRAPH_INPUT_NAME}:1x3x{height}x{width}"

    return {
        "trt_profile_min_shapes": shape(min_side, min_side),
        "trt_profile_opt_shapes": shape(*opt),
        "trt_profile_max_shapes": shape(largest, largest),
    }


def execution_providers(
    device: str,
    precision: str,
    trt_cache_dir: str | os.PathLike,
    available: list[str],
    model_sha256: str = "",
    profile: dict[str, str] | None = None,
    tensorrt: bool = True,
) -> tuple[list, str]:
    """(providers for InferenceSession, the device in words). BackendError for a device or
    precision this onnxruntime cannot serve. ``model_sha256`` (of the graph file) keys the engine
    cache (``engine_cache_dir``); ``profile``: ``tensorrt_profile``'s options; ``tensorrt`` False
    leaves TensorRT out (the CUDA provider alone, as the GPU check measures it)."""
    devices.validate_device(device)
    devices.validate_precision(precision)
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device == "cpu":
        if precision not in ("auto", "fp32"):
            raise BackendError(
                f"backend onnxruntime runs fp32 on the CPU; precision {precision} is not "
                "available there (use fp32 or auto, or backend torch)"
            )
        return ["CPUExecutionProvider"], "cpu"
    if not has_cuda:
        raise BackendError(
            f"device {device!r} asked for, but this onnxruntime has no CUDAExecutionProvider "
            f"(it has: {', '.join(available)}); pip uninstall -y onnxruntime, then pip install "
            "'dehaze_ros[onnx-gpu]' (onnxruntime-gpu); or use device cpu"
        )
    if precision == "bf16":
        raise BackendError(
            "backend onnxruntime offers fp32 and fp16 (TensorRT) on a GPU, not bf16; "
            "use fp16, fp32 or auto, or backend torch"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    providers: list = []
    if tensorrt and "TensorrtExecutionProvider" in available:
        root = Path(trt_cache_dir).expanduser() if str(trt_cache_dir) else default_trt_cache_dir()
        trt_precision = "fp16" if precision == "fp16" else "fp32"
        cache = engine_cache_dir(root, model_sha256, trt_precision) if model_sha256 else root
        cache.mkdir(parents=True, exist_ok=True)
        providers.append(
            (
                "TensorrtExecutionProvider",
                {
                    "device_id": index,
                    "trt_fp16_enable": precision == "fp16",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache),
                    # Kernel timings do not depend on weights: one timing cache for every graph.
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(root),
                    **(profile or {}),
                },
            )
        )
    providers.append(("CUDAExecutionProvider", {"device_id": index}))
    providers.append("CPUExecutionProvider")
    return providers, f"cuda:{index}"


def gpu_unused_warning(
    requested: str, running_on: str, available: list[str], gpu_evidence: str, version: str
) -> str:
    """Why a session on the CPU is probably a broken install while a GPU is visible, or "".

    ``gpu_evidence``: ``devices.visible_gpu()``'s answer (tests pass their own). An explicit
    ``device cpu`` is a choice and gets no warning; an explicit cuda without a GPU provider is
    refused before this (``execution_providers``, ``session_device``)."""
    if requested == "cpu" or running_on != "cpu" or not gpu_evidence:
        return ""
    if "CUDAExecutionProvider" not in available:
        reason = (
            f"this onnxruntime {version} is the CPU package (providers: {', '.join(available)}); "
            "pip uninstall -y onnxruntime, then pip install 'dehaze_ros[onnx-gpu]' "
            "(onnxruntime-gpu)"
        )
    else:
        reason = (
            "onnxruntime could not load its CUDA provider (its own warning just before this in the "
            "log says why: usually the CUDA or cuDNN libraries onnxruntime-gpu was built for)"
        )
    return (
        f"backend onnxruntime runs on the CPU although an NVIDIA GPU is visible ({gpu_evidence}): "
        f"{reason}; or set device cpu to keep the CPU"
    )


def session_device(planned: str, requested: str, session_providers: list[str]) -> str:
    """The device a session really runs on. onnxruntime drops a GPU provider it cannot load (no
    CUDA/cuDNN libraries, a driver too old) with only a log line and runs on the CPU: for
    ``device`` cuda that is a BackendError, for ``auto`` the device is reported as cpu."""
    if planned == "cpu" or {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(
        session_providers
    ):
        return planned
    if requested != "auto":
        raise BackendError(
            f"device {requested!r} asked for, but onnxruntime could not load its CUDA provider "
            f"(the session has only: {', '.join(session_providers)}); check the CUDA and cuDNN "
            "libraries onnxruntime-gpu needs, or use device cpu"
        )
    return "cpu"


def cached_export_path(checkpoint: str | os.PathLike) -> Path:
    """Where the graph of ``checkpoint`` is (or will be) exported: named by its content."""
    import torch

    from dehaze_ros.onnx_export import ONNX_FORMAT_VERSION, file_sha256

    digest = file_sha256(checkpoint)[:16]
    return (
        cache_root()
        / "onnx"
        / f"{Path(checkpoint).stem}-{digest}-torch{torch.__version__}-v{ONNX_FORMAT_VERSION}.onnx"
    )


def graph_properties(graph: str | os.PathLike) -> dict[str, str]:
    """The metadata an exported graph carries (format, version, the checkpoint it came from:
    ``onnx_export.OnnxMetadata``), {} when it cannot be read as a graph."""
    try:
        import onnx
    except ImportError:  # openvino alone (pip install openvino) reads the graph's props too
        try:
            from dehaze_ros.backends.openvino_backend import graph_metadata, shared_core

            return graph_metadata(shared_core().read_model(str(graph)))
        except Exception:  # no runtime either, or not a graph: not a usable graph of anything
            return {}
    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception:  # not a graph, truncated: not a usable graph of anything
        return {}
    return {prop.key: prop.value for prop in model.metadata_props}


def graph_source_sha256(graph: str | os.PathLike) -> str:
    """The ``source_sha256`` an exported graph records (the checkpoint it was exported from),
    "" when it records none or cannot be read."""
    return graph_properties(graph).get("source_sha256", "")


def bundled_graph(checkpoint: str | os.PathLike) -> Path | None:
    """The checkpoint's own exported graph beside it (``default.pt`` -> ``default.onnx``, as
    the package ships), when this version's exporter made it from exactly this file; None
    otherwise (a graph left over from an older checkpoint of the same name, or from an exporter
    whose format the backends no longer read, does not count)."""
    from dehaze_ros.onnx_export import ONNX_FORMAT, ONNX_FORMAT_VERSION, file_sha256

    try:
        graph = Path(checkpoint).with_suffix(".onnx")
        if not (graph.is_file() and Path(checkpoint).is_file()):
            return None
        props = graph_properties(graph)
        current = props.get("dehaze_ros.format") == ONNX_FORMAT and props.get(
            "dehaze_ros.format_version"
        ) == str(ONNX_FORMAT_VERSION)
        return graph if current and props.get("source_sha256") == file_sha256(checkpoint) else None
    except (OSError, ValueError):  # unreadable, or a path with no name to give a suffix ('.')
        return None


def cached_export(checkpoint: str | os.PathLike) -> Path:
    """The graph of ``checkpoint``: its bundled graph (``bundled_graph``), else exported on first
    use into the cache folder."""
    from dehaze_ros.onnx_export import OnnxExportError, export_onnx

    bundled = bundled_graph(checkpoint)
    if bundled is not None:
        return bundled
    path = cached_export_path(checkpoint)
    if not path.exists():
        try:
            export_onnx(checkpoint, path)
        except OnnxExportError as exc:
            raise BackendError(str(exc)) from exc
    return path


def slow_setup_notice(
    onnx_model: str, checkpoint: str | os.PathLike, device: str, trt_cache_dir: str | os.PathLike
) -> str:
    """What the next OnnxRuntimeBackend will spend minutes on (an ONNX export, a TensorRT build),
    in words for the log before it starts, or "" when both are cached or do not apply."""
    from dehaze_ros.onnx_export import file_sha256

    work = []
    graph = Path(onnx_model).expanduser() if onnx_model else bundled_graph(checkpoint)
    if graph is None:
        graph = cached_export_path(checkpoint)
        if not graph.exists():
            work.append(
                f"exporting {checkpoint} to ONNX into {graph.parent} (a minute or two, once)"
            )
    try:
        import onnxruntime
    except ImportError:
        return "; ".join(work)
    if device != "cpu" and "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        root = Path(trt_cache_dir).expanduser() if str(trt_cache_dir) else default_trt_cache_dir()
        built = graph.is_file() and any(
            folder.is_dir() and any(folder.glob("*.engine"))
            for folder in root.glob(f"{file_sha256(graph)[:16]}-*")
        )
        if not built:
            work.append(
                f"building the TensorRT engine into {root} (minutes; on a Jetson up to tens of "
                "minutes, once per graph and precision; `python -m dehaze_ros.tools.build_engines` "
                "builds it ahead of time)"
            )
    return "; ".join(work)


def _given_graph(onnx_model: str | os.PathLike) -> Path:
    """The path of a given ``onnx_model``, which must exist."""
    path = Path(onnx_model).expanduser()
    if not path.is_file():
        raise BackendError(
            f"onnx_model {path} not found (no such file); export one with "
            "`python -m training.export CHECKPOINT --onnx OUT.onnx`, or leave "
            "onnx_model empty to export the checkpoint automatically"
        )
    return path


def _open_session(ort, path: Path, providers: list, num_threads: int, planned_device: str):
    """The onnxruntime session of the graph at ``path`` (BackendError when it cannot load)."""
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    # On the CPU, warnings about unused initialisers etc. are not the user's. With a GPU
    # planned they stay: they are the only place onnxruntime says why it dropped a provider.
    options.log_severity_level = 3 if planned_device == "cpu" else 2
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise BackendError(f"onnxruntime could not load {path}: {exc}") from exc


class OnnxRuntimeBackend(Backend):
    def __init__(
        self,
        onnx_model: str | os.PathLike = "",
        checkpoint: str | os.PathLike = "",
        device: str = "auto",
        precision: str = "auto",
        trt_cache_dir: str | os.PathLike = "",
        num_threads: int = 0,
        max_side: int = 0,
        depth_max_side: int = 0,
        tensorrt: bool = True,
    ):
        """``onnx_model``: an exported graph; "" exports ``checkpoint`` (cached, see the module
        docstring). ``num_threads``: CPU threads of the session; 0 = onnxruntime's choice.
        ``max_side`` / ``depth_max_side``: the engine's, for the TensorRT profile (0 = native).
        ``tensorrt`` False: the CUDA provider without TensorRT."""
        ort = import_onnxruntime()
        from dehaze_ros.onnx_export import OnnxMetadata, OnnxModelError, file_sha256

        if onnx_model:
            path = _given_graph(onnx_model)
        # Device and precision are checked before anything is exported.
        available = ort.get_available_providers()
        _, planned_device = execution_providers(
            device, precision, trt_cache_dir, available, tensorrt=tensorrt
        )
        if not onnx_model:
            path = cached_export(checkpoint)
        profile = None
        self.trt_max_side = 0
        if planned_device != "cpu" and tensorrt and "TensorrtExecutionProvider" in available:
            min_side = _min_side_of(path, ort)
            profile = tensorrt_profile(min_side, max_side, depth_max_side)
            self.trt_max_side = int(profile["trt_profile_max_shapes"].rsplit("x", 1)[1])
        providers, _ = execution_providers(
            device,
            precision,
            trt_cache_dir,
            available,
            file_sha256(path) if profile else "",
            profile,
            tensorrt,
        )
        self.session = _open_session(ort, path, providers, num_threads, planned_device)
        try:
            self.metadata = OnnxMetadata.from_props(
                self.session.get_modelmeta().custom_metadata_map, path
            )
        except OnnxModelError as exc:
            raise BackendError(str(exc)) from exc
        self.path = path
        self.providers = self.session.get_providers()
        self.device = session_device(planned_device, device, self.providers)
        self.device_warning = gpu_unused_warning(
            device, self.device, available, devices.visible_gpu(), ort.__version__
        )
        if "TensorrtExecutionProvider" not in self.providers:
            self.trt_max_side = 0
        self.precision = (
            "fp16"
            if (precision == "fp16" and "TensorrtExecutionProvider" in self.providers)
            else "fp32"
        )
        self.outputs = [output.name for output in self.session.get_outputs()]
        self.name = self.metadata.name
        self.depth_units = self.metadata.depth_units
        self.depth_range = self.metadata.depth_range_m
        self.canonical_focal_px = self.metadata.canonical_focal_px
        self.checkpoint = self.metadata.as_checkpoint(path)

    def describe(self) -> dict:
        description = {
            "model": self.name,
            "backend": "onnxruntime",
            "checkpoint": str(self.path),
            "device": self.device,
            "precision": self.precision,
            "providers": list(self.providers),
        }
        if self.device_warning:
            description["device_warning"] = self.device_warning
        return description

    def close(self) -> None:
        self.session = None

    def run(self, rgb: np.ndarray, want_dehazed: bool, want_depth: bool) -> BackendOutput:
        if self.session is None:
            raise BackendError("onnxruntime backend is closed")
        height, width = rgb.shape[:2]
        if self.trt_max_side and max(height, width) > self.trt_max_side:
            raise BackendError(
                f"image {width}x{height} is larger than the TensorRT profile (sides up to "
                f"{self.trt_max_side} px, from max_side and depth_max_side); set max_side to at "
                f"most {self.trt_max_side}"
            )
        mark = time.perf_counter()
        hazy = graph_input(rgb, self.metadata.min_side)
        # One graph: D and E run together, so the whole run is booked as "dehaze".
        results = dict(zip(self.outputs, self.session.run(None, {"hazy": hazy})))
        timings = {"dehaze": (time.perf_counter() - mark) * 1e3}
        return graph_output(results, height, width, want_dehazed, want_depth, timings)


def _min_side_of(path: Path, ort) -> int:
    """The graph's smallest accepted side, from its metadata, before the session that needs it in
    its TensorRT profile exists (a CPU session only reads the metadata)."""
    from dehaze_ros.onnx_export import OnnxMetadata, OnnxModelError

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # metadata only
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return OnnxMetadata.from_props(session.get_modelmeta().custom_metadata_map, path).min_side
    except OnnxModelError as exc:
        raise BackendError(str(exc)) from exc
    except Exception as exc:  # onnxruntime's own Fail/InvalidGraph types
        raise BackendError(f"onnxruntime could not load {path}: {exc}") from exc
