"""DehazeEngine: one frame in, dehazed image and depth out. Knows nothing of ROS.

The node converts messages to numpy, calls :meth:`DehazeEngine.process`, and publishes;
``training.evaluate`` runs through the same engine, so the numbers it reports describe what is
deployed (the in-training validation that picks best.pt calls the networks directly).

The model itself is a backend (``dehaze_ros.backends``: torch networks, DCP, or the networks
exported to ONNX and run by ONNX Runtime, ``backend="onnxruntime"``) that turns an image at network
resolution into low-resolution results. The engine does the rest once for all of them: input
validation, resizing, full-resolution recovery, depth upsampling, metric conversion and range
limits.

Speed: ``max_side`` runs the model on a downscaled copy, and the dehazed image is rebuilt at
full resolution from it (``dehaze_ros.upsampling``, mode ``upsampling``), the same way for every
backend: with ``guided``, t of a physics head or the DCP is upsampled by the fast guided filter
steered by the full-resolution hazy image and the scattering model inverted at full resolution,
J = (I - A) / max(t, t0) + A; a J-only head (the paper's residual) gives local affine
coefficients J ~ a I + b that are upsampled and applied to the full-resolution input;
``affine`` takes that J path for every model; ``bilinear`` is the earlier path (bilinear t;
``hazy_full + upsample(dehazed_small - hazy_small)``). Depth is upsampled nearest-neighbour:
interpolating across a depth edge would invent "flying" points between foreground and background.

Metric depth: a checkpoint with a canonical camera (``canonical_focal_px``) gives metres for the
focal length of the image the network ran on (dehaze_ros.canonical_camera). ``process`` takes the
focal length of the input image (from CameraInfo); without one it assumes ``default_hfov_deg`` and
says so in the result (``focal_assumed``). Metric depth runs at ``depth_max_side`` whatever
``max_side`` is (a second, depth-only pass when the two sizes differ): the canonical camera
removes the focal length, but a monocular network also reads objects' size in pixels, and its
metres only hold near the resolution it was trained at (measured: native-resolution depth on
Middlebury was 3x too far before this).

Depth from the haze (``depth_from_haze: fuse``): the metric depth of the depth pass is fused with
that pass's transmission, -ln t = beta d, before upsampling (``dehaze_ros.haze_depth``): the
haze corrects the network's shape where it is informative, the network keeps its metres and
everything where the air is clear or t is saturated.

Metric scale (``dehaze_ros.metric_scale``): a network's metres are only as good as its training
cameras. With ``camera_height_m`` set, the ground plane found in each frame's depth rescales it
(camera height / fitted height), smoothed over the stream in a per-stream state the engine owns
(``reset_scale``: a new stream); with ``camera_pitch_deg`` known too, the ground's exact depth
replaces the network's where the network's depth lies on the plane, and bounds every pixel below
the horizon. ``EngineResult.scale`` says which source gave the metres, ``depth_support`` what each
pixel rests on (the node's depth/confidence).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from dehaze_ros import anchor_scale, dense_fog, devices, upsampling
from dehaze_ros.anchor_scale import AnchorCloud, AnchorRules, anchor_estimate, apply_anchors
from dehaze_ros.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    MODELS,
    Backend,
    BackendError,
    BackendOutput,
    create_backend,
    resolve_backend,
)
from dehaze_ros.canonical_camera import DEFAULT_HFOV_DEG, focal_from_hfov, metric_from_canonical
from dehaze_ros.checkpoint import Checkpoint
from dehaze_ros.devices import PRECISIONS, cpu_supports_bf16  # noqa: F401 (re-exported)
from dehaze_ros.haze_depth import HazeDepth, fuse_depth_with_haze
from dehaze_ros.metric_scale import (
    ANCHORS,
    LEARNED,
    SUPPORT_ANCHORED,
    SUPPORT_LEARNED,
    SUPPORT_SCALED,
    Mounting,
    Pinhole,
    ScaleState,
    StreamScale,
    apply_ground,
    ground_estimate,
    resize_nearest,
)
from dehaze_ros.upsampling import DEFAULT as DEFAULT_UPSAMPLING
from dehaze_ros.upsampling import UPSAMPLING

# torch's own thread count at start-up: num_threads 0 means this, also after a reconfigure
# from another value (torch.set_num_threads is process-wide).
TORCH_DEFAULT_THREADS = torch.get_num_threads()

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default.pt"
# The longer side the shipped networks are trained and validated at, and a 2-core CPU keeps up
# with: what the node deploys (its max_side parameter), so an engine made without a config runs
# as deployed. 0 (native) is a choice to make on purpose, for metrics or a GPU with time to spare.
DEFAULT_MAX_SIDE = 320
# The longer side the shipped networks' depth is trained and validated at (depth_max_side).
DEFAULT_DEPTH_MAX_SIDE = 320
# How max_side sizes the networks' input (EngineConfig.size_rule). side: the longer side at most
# max_side (a 1242 x 375 camera runs at 320 x 97). pixels: the larger of that size and the pixel
# count of the 4:3 frame whose longer side is max_side (320 x 240 at 320), aspect kept: 1242 x 375
# runs at 496 x 150, and no frame runs smaller than under the side rule. side stays the default:
# measured at the node's defaults (docs/dense_fog.md, "The size rule"), pixels gained 0.1-1 dB on
# wide road frames in fog but lost 1-2 dB on them in clear air and 0.20 dB on the Middlebury
# validation scenes (1.5:1), made the ground-plane depth of wide vehicle views worse (AbsRel
# 0.278 -> 0.342) and costs more time per wide frame; it is the opt-in for wide cameras.
SIZE_RULES = ("side", "pixels")
DEFAULT_SIZE_RULE = "side"
# The networks pad each side to a multiple of 16 (reflection) anyway: the budget's longer side is
# rounded down to one, so no budget goes to padding, and a frame within about 10 % of 4:3 keeps
# the side rule's size exactly (one row more or less of padding moved single images of the
# development sets by up to 0.7 dB: docs/performance.md).
SIZE_MULTIPLE = 16
# The pixel rule never makes the shorter side shorter than this (the padding multiple, and the
# DCP's patch of 15): an extreme aspect gets more pixels rather than a sliver.
MIN_NETWORK_SIDE = 32
# The warm-up frame's longer side at most (max_side accepts up to 8192 for big sensors; a warm-up
# at that size would cost more than the kernel choice it saves). 1920: TensorRT's largest side
# (onnxruntime_backend).
WARMUP_MAX_SIDE = 1920
# EngineConfig.depth_from_haze: off = the network's depth; fuse = its shape corrected by the
# transmission's -ln t where the haze is informative (dehaze_ros.haze_depth, docs/depth.md).
DEPTH_FROM_HAZE = ("off", "fuse")

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_DEPTH_MAX_SIDE",
    "DEPTH_FROM_HAZE",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_SIZE_RULE",
    "DEFAULT_UPSAMPLING",
    "MODELS",
    "PRECISIONS",
    "SIZE_RULES",
    "UPSAMPLING",
    "DehazeEngine",
    "EngineConfig",
    "EngineError",
    "EngineResult",
    "MIN_NETWORK_SIDE",
    "SIZE_MULTIPLE",
    "as_rgb_uint8",
    "cpu_supports_bf16",
    "network_size",
    "pixel_budget_size",
    "slow_setup_notice",
    "resolve_device",
    "resolve_precision",
    "scaled_size",
]


class EngineError(RuntimeError):
    """The engine could not be set up as configured (device, precision, checkpoint, backend)."""


@dataclass(frozen=True)
class EngineConfig:
    model: str = "checkpoint"  # "checkpoint": DIACMPN weights; "dcp": Dark Channel Prior
    checkpoint: str = ""  # path; "" = the checkpoint shipped with the package
    # auto | torch | onnxruntime | openvino: what runs the checkpoint's networks; auto is
    # openvino on a CPU when installed and the checkpoint's graph is ready, else torch
    # (backends.resolve_backend)
    backend: str = DEFAULT_BACKEND
    onnx_model: str = ""  # onnxruntime/openvino: exported graph; "" = the checkpoint's own
    trt_cache_dir: str = (
        ""  # onnxruntime + TensorRT: engine cache; "" = ~/.cache/dehaze_ros/tensorrt
    )
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 (dehaze_ros.devices has the rules)
    max_side: int = DEFAULT_MAX_SIDE  # the networks' input size (size_rule says how); 0 = native
    size_rule: str = (
        DEFAULT_SIZE_RULE  # side: longer side; pixels: at most max_side x 3/4 max_side pixels
    )
    # Metric depth is estimated on a copy of this size (size_rule, as max_side), whatever
    # max_side: a monocular network's metres hold at the object scale (pixels per object) it was
    # trained at, so depth must not change when max_side does. 0 = at max_side's size, like the
    # dehazing.
    # Relative depth (DCP) always follows max_side (depth_size).
    depth_max_side: int = DEFAULT_DEPTH_MAX_SIDE
    # auto | guided | affine | bilinear: full-resolution recovery (upsampling.py)
    upsampling: str = DEFAULT_UPSAMPLING
    # blend | off: lean on the DCP's t and A in dense fog (dense_fog.py)
    dense_fog: str = dense_fog.DEFAULT
    warmup: int = 1  # warm-up passes after loading (first CUDA/oneDNN calls are slow)
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    default_hfov_deg: float = DEFAULT_HFOV_DEG  # focal length assumed when process() gets none
    depth_from_haze: str = (
        "fuse"  # off | fuse: -ln t of the same pass corrects metric depth's shape
    )
    # The camera's mounting, for the metric scale from the ground (metric_scale): height above
    # the ground in metres (0 = unknown: no ground scale) and the optical axis's tilt below the
    # horizontal in degrees (NaN = unknown: estimated per frame, and only the scale is applied).
    camera_height_m: float = 0.0
    camera_pitch_deg: float = math.nan
    # Metric points (anchor_scale: LiDAR, radar) given to process(): a cloud further than this
    # from the frame's stamp is stale and refused; fewer usable points than anchor_min_points
    # give no factor; anchor_fit "scale" (one factor, smoothed) or "scale_shift" (plus a shift
    # in inverse depth per frame); anchor_refine corrects the shape near the points.
    anchor_max_age_s: float = AnchorRules.max_age_s
    anchor_min_points: int = AnchorRules.min_points
    anchor_fit: str = AnchorRules.fit
    anchor_refine: bool = AnchorRules.refine

    @property
    def anchor_rules(self) -> AnchorRules:
        return AnchorRules(
            min_points=self.anchor_min_points,
            max_age_s=self.anchor_max_age_s,
            fit=self.anchor_fit,
            refine=self.anchor_refine,
        )

    @property
    def mounting(self) -> Mounting:
        return Mounting(self.camera_height_m, self.camera_pitch_deg)

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dense_fog not in dense_fog.MODES:
            raise ValueError(f"dense_fog must be one of {dense_fog.MODES}, got {self.dense_fog!r}")
        if self.size_rule not in SIZE_RULES:
            raise ValueError(f"size_rule must be one of {SIZE_RULES}, got {self.size_rule!r}")
        if self.upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {self.upsampling!r}")
        if self.depth_from_haze not in DEPTH_FROM_HAZE:
            raise ValueError(
                f"depth_from_haze must be one of {DEPTH_FROM_HAZE}, got {self.depth_from_haze!r}"
            )
        devices.validate_precision(self.precision)
        devices.validate_device(self.device)
        for name in ("max_side", "depth_max_side", "warmup", "num_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if 0 < self.max_side < 32:
            raise ValueError(f"max_side must be 0 (native) or at least 32, got {self.max_side}")
        if 0 < self.depth_max_side < 32:
            raise ValueError(
                f"depth_max_side must be 0 (as max_side) or at least 32, got {self.depth_max_side}"
            )
        if not 1.0 <= self.default_hfov_deg <= 179.0:
            raise ValueError(
                f"default_hfov_deg must lie in [1, 179] degrees, got {self.default_hfov_deg}"
            )
        self.mounting.check()
        self.anchor_rules.check()


@dataclass
class EngineResult:
    dehazed: np.ndarray | None  # H x W x 3 uint8 RGB, input size
    depth: np.ndarray | None  # H x W float32, input size, in depth_units
    depth_units: str  # "meters" | "relative"
    timings_ms: dict[str, float]
    # The metric scale rests on default_hfov_deg, not on a known focal length (canonical-camera
    # checkpoints only; False where the scale needs no focal length).
    focal_assumed: bool = False
    # Physics heads and DCP: the transmission (float32, at the resolution the model ran at, which
    # is the input's when max_side does not shrink it) and the airlight (3,) RGB in [0, 1]. With a
    # depth pass of its own (depth_max_side), those of that pass: t and depth from one input, so
    # -ln t = beta * d (visibility) does not depend on whether the dehazed image was wanted.
    transmission: np.ndarray | None = None
    airlight: np.ndarray | None = None
    # depth_from_haze "fuse" with metric depth: the fusion at the depth pass's resolution (beta,
    # per-pixel haze weight, or why the network's depth was kept); None when it did not run.
    haze_depth: HazeDepth | None = None
    # Metric depth only: where this frame's metres came from (source, factor, held or fresh),
    # and per pixel what the depth rests on (uint8 metric_scale.SUPPORT_*, input size).
    scale: ScaleState | None = None
    depth_support: np.ndarray | None = None
    # The share of the DCP's t and A in the dehazed image (dense_fog "blend"; 0: the model's own).
    # transmission and airlight above stay the model's: visibility reads them against its depth.
    dense_fog_weight: float = 0.0


def resolve_device(name: str) -> torch.device:
    """``dehaze_ros.devices.resolve_device``, failing with EngineError."""
    try:
        return devices.resolve_device(name)
    except devices.DeviceError as exc:
        raise EngineError(str(exc)) from exc


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``dehaze_ros.devices.resolve_precision``, failing with EngineError."""
    try:
        return devices.resolve_precision(name, device)
    except devices.DeviceError as exc:
        raise EngineError(str(exc)) from exc


def slow_setup_notice(config: EngineConfig) -> str:
    """What building an engine from ``config`` will spend minutes on (the automatic ONNX export,
    a TensorRT build), in words to log BEFORE it starts, or "": the node's configure blocks its
    executor meanwhile, and a silent minute looks like a hang."""
    checkpoint = config.checkpoint or DEFAULT_CHECKPOINT
    try:
        # auto as the engine will resolve it (a given onnx_model on a GPU: onnxruntime, TensorRT)
        backend = resolve_backend(
            config.backend, config.model, checkpoint, config.device, config.onnx_model
        ).name
    except devices.DeviceError:  # the engine reports it
        return ""
    if config.model != "checkpoint" or backend not in ("onnxruntime", "openvino"):
        return ""
    from dehaze_ros.backends.onnxruntime_backend import slow_setup_notice as onnxruntime_notice

    # OpenVINO runs on the CPU: no TensorRT engine to build.
    device = "cpu" if backend == "openvino" else config.device
    try:
        return onnxruntime_notice(config.onnx_model, checkpoint, device, config.trt_cache_dir)
    except OSError:  # an unreadable checkpoint or graph: the engine itself reports it
        return ""


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate and convert a frame to H x W x 3 uint8 RGB (gray and RGBA accepted)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint16:  # mono16 / rgb16 cameras: keep the top 8 bits of range
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8 (or uint16), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(
            f"image must be H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA), "
            f"got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (clipped) -> uint8, rounded."""
    scaled = np.clip(image, 0.0, 1.0)  # a new array: the caller's stays as it was
    scaled *= 255.0
    scaled += 0.5
    return scaled.astype(np.uint8)


def scaled_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) with the longer side at most ``max_side``; unchanged when already smaller."""
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def pixel_budget_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) with at most ``max_pixels`` pixels, the aspect kept and the longer side a
    multiple of SIZE_MULTIPLE; unchanged when already within the budget (or max_pixels <= 0). The
    shorter side stays at least MIN_NETWORK_SIDE, or what it was, even past the budget."""
    if max_pixels <= 0 or height * width <= max_pixels:
        return height, width
    longer, shorter = max(height, width), min(height, width)
    scale = math.sqrt(max_pixels / (height * width))
    if shorter * scale < MIN_NETWORK_SIDE:
        new_shorter = min(shorter, MIN_NETWORK_SIDE)
        new_longer = round(longer * new_shorter / shorter)
    else:
        new_longer = int(longer * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE
        new_shorter = round(shorter * new_longer / longer)
        if new_longer * new_shorter > max_pixels:  # rounded up past the budget
            new_shorter -= 1
    return (new_longer, new_shorter) if height >= width else (new_shorter, new_longer)


def network_size(
    height: int, width: int, max_side: int, rule: str = DEFAULT_SIZE_RULE
) -> tuple[int, int]:
    """The size the networks run at for an input of this size (EngineConfig.max_side, size_rule)."""
    if rule not in SIZE_RULES:
        raise ValueError(f"size_rule must be one of {SIZE_RULES}, got {rule!r}")
    by_side = scaled_size(height, width, max_side)
    if rule == "side":
        return by_side
    by_pixels = pixel_budget_size(height, width, max_side * (max_side * 3 // 4))
    # Never fewer pixels than the side rule gave: a frame squarer than 4:3 keeps its old size.
    return max(by_side, by_pixels, key=lambda size: size[0] * size[1])


class DehazeEngine:
    """Loads a model (a backend) once, then dehazes frames and estimates their depth."""

    def __init__(self, config: EngineConfig = EngineConfig(), backend: Backend | None = None):
        """``backend``: an already built backend to use instead of the one ``config`` names
        (config's model, checkpoint, backend, device and precision are then not used)."""
        config.validate()
        self.config = config
        torch.set_num_threads(config.num_threads or TORCH_DEFAULT_THREADS)
        # Why auto chose what it chose ("" when the backend was named): the node logs it.
        self.backend_choice = ""
        if backend is None:
            checkpoint = Path(config.checkpoint) if config.checkpoint else DEFAULT_CHECKPOINT
            try:
                choice = resolve_backend(
                    config.backend, config.model, checkpoint, config.device, config.onnx_model
                )
                self.backend_choice = choice.why
                backend = create_backend(
                    config.model,
                    choice.name,
                    checkpoint,
                    config.device,
                    config.precision,
                    config.onnx_model or choice.graph,  # auto's graph: resolved once
                    config.trt_cache_dir,
                    config.num_threads,
                    config.max_side,
                    config.depth_max_side,
                )
            except (devices.DeviceError, BackendError) as exc:
                raise EngineError(str(exc)) from exc
            except OSError as exc:  # a checkpoint or graph file that cannot be read
                raise EngineError(f"cannot read the model file: {exc}") from exc
        self.backend: Backend | None = backend
        self._description = self.backend.describe()
        # The model's facts, plain attributes that stay after close() for whoever reports them.
        self.model_name: str = self._description["model"]
        self.checkpoint: Checkpoint | None = self.backend.checkpoint
        self.depth_units: str = self.backend.depth_units
        self.depth_range: tuple[float, float] = tuple(self.backend.depth_range)
        self.canonical_focal_px: float = float(self.backend.canonical_focal_px)
        self.upsampling: str = (
            self.backend.preferred_upsampling if config.upsampling == "auto" else config.upsampling
        )
        self.blends_dense_fog = config.dense_fog == "blend" and self.backend.blends_in_dense_fog
        # The metric scale's memory of this stream of frames (smoothed factor, hold).
        self.stream_scale = StreamScale()
        try:
            for _ in range(config.warmup):
                self.process(np.zeros(self.warmup_shape(), dtype=np.uint8))
            self.reset_scale()  # a warm-up frame is no part of any stream
        except BaseException:
            self.close()  # a failed warm-up (out of memory, a graph's size limit) holds nothing
            raise

    def warmup_shape(self) -> tuple[int, int, int]:
        """The frame the warm-up runs on: 4:3 at max_side, so the passes of a VGA-like camera run at
        their real sizes (CUDA kernels and TensorRT profiles are chosen per size, and a first call
        at a new size is slow); capped for a huge max_side. Native: the camera's size is unknown
        before its first frame, a small frame then."""
        side = min(self.config.max_side, WARMUP_MAX_SIDE) if self.config.max_side else 320
        return round(side * 3 / 4), side, 3

    def describe(self) -> dict:
        return {
            **self._description,
            **({"backend_choice": self.backend_choice} if self.backend_choice else {}),
            "max_side": self.config.max_side,
            "size_rule": self.config.size_rule,
            "depth_max_side": self.config.depth_max_side,
            "depth_from_haze": self.config.depth_from_haze,
            "upsampling": self.upsampling,
            "dense_fog": "blend" if self.blends_dense_fog else "off",
            "depth_units": self.depth_units,
            "depth_range_m": list(self.depth_range),
            "canonical_focal_px": self.canonical_focal_px,
        }

    def reset_scale(self) -> None:
        """Forget the stream's scale (smoothed factor, held factor): the next frame starts a new
        stream. The node calls it on activate; an evaluation before each independent view."""
        self.stream_scale.reset()

    def close(self) -> None:
        """Drop the model (cached GPU memory is given back)."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def process(
        self,
        image: np.ndarray,
        want_dehazed: bool = True,
        want_depth: bool = True,
        focal_px: float | None = None,
        camera: Pinhole | None = None,
        stamp_s: float | None = None,
        mounting: Mounting | None = None,
        anchors: AnchorCloud | None = None,
    ) -> EngineResult:
        """``focal_px``: the horizontal focal length in pixels of ``image`` (CameraInfo's fx at
        this image size); None assumes ``default_hfov_deg``. ``camera``: the full intrinsics of
        ``image`` (fx, fy and the principal point, from CameraInfo), for the ground plane; its fx
        is the focal length when ``focal_px`` is None; None: square pixels centred on the image.
        ``stamp_s``: the frame's time (its header stamp), which paces the scale's smoothing and
        its hold; None counts frames instead. ``mounting``: the camera's height and pitch for
        this frame instead of the config's (evaluation sets whose views each have their own).
        ``anchors``: metric points in the camera optical frame for this frame (anchor_scale), the
        scale source trusted first; None: this stream has no such sensor (its state is kept)."""
        start = time.perf_counter()
        rgb = as_rgb_uint8(image)
        if self.backend is None:
            raise EngineError("engine is closed")
        height, width = rgb.shape[:2]
        small_h, small_w = network_size(height, width, self.config.max_side, self.config.size_rule)
        depth_h, depth_w = self.depth_size(height, width)
        # One network pass when the depth is wanted at the dehazing size (or not at all), else a
        # dehazing pass and a depth pass, each at its own size.
        separate_depth = want_depth and (depth_h, depth_w) != (small_h, small_w)
        timings: dict[str, float] = {"preprocess": 0.0}
        small = out = None
        if want_dehazed or not separate_depth:
            small, out = self._run_backend(
                rgb, small_h, small_w, want_dehazed, want_depth and not separate_depth, timings
            )
        depth_out = out
        if separate_depth:
            _, depth_out = self._run_backend(
                rgb, depth_h, depth_w, False, True, timings, prefix="depth_pass_"
            )

        mark = time.perf_counter()
        dehazed, fog_weight = None, 0.0
        if want_dehazed:
            resized = (small_h, small_w) != (height, width)
            dehazed, fog_weight = self._full_dehazed(rgb, small, out, resized)
        depth, focal_assumed, haze_depth, scale, support = None, False, None, None, None
        if want_depth:
            depth, focal_assumed, haze_depth, scale, support = self._full_depth(
                depth_out,
                height,
                width,
                depth_w,
                focal_px,
                camera,
                stamp_s,
                mounting,
                anchors,
                timings,
            )
        timings["postprocess"] = (time.perf_counter() - mark) * 1e3
        timings["total"] = (time.perf_counter() - start) * 1e3
        physics = depth_out if want_depth else out
        return EngineResult(
            dehazed,
            depth,
            self.depth_units,
            timings,
            focal_assumed,
            physics.transmission,
            physics.airlight,
            haze_depth,
            scale,
            support,
            fog_weight,
        )

    def _full_dehazed(
        self, rgb: np.ndarray, small: np.ndarray, out: BackendOutput, resized: bool
    ) -> tuple[np.ndarray, float]:
        """The dehazed image at ``rgb``'s size from the dehazing pass ``out`` on ``small``
        (``resized``: smaller than ``rgb``), the dense-fog blend applied, and the blend's fog
        weight."""
        fog_weight = 0.0
        if resized:
            hazy = rgb.astype(np.float32)
            hazy /= 255.0
        else:
            hazy = small
        dehazed_small, transmission, airlight = out.dehazed, out.transmission, out.airlight
        if self.blends_dense_fog and transmission is not None:
            dehazed_small, transmission, airlight, fog_weight = dense_fog.blend(
                small, transmission, airlight, dehazed_small
            )
        dehazed = to_uint8(
            upsampling.recover_full_resolution(
                hazy, small, dehazed_small, transmission, airlight, self.upsampling
            )
        )
        return dehazed, fog_weight

    def _full_depth(
        self,
        depth_out: BackendOutput,
        height: int,
        width: int,
        depth_w: int,
        focal_px: float | None,
        camera: Pinhole | None,
        stamp_s: float | None,
        mounting: Mounting | None,
        anchors: AnchorCloud | None,
        timings: dict[str, float],
    ) -> tuple[np.ndarray, bool, HazeDepth | None, ScaleState | None, np.ndarray | None]:
        """The depth at ``height`` x ``width`` from the depth pass ``depth_out`` (``depth_w``
        wide): its focal length, the depth from the haze, the metric scale and the depth range
        applied. Returns the depth, whether the focal length was assumed, the haze depth, the
        scale and the per-pixel support (process's arguments)."""
        scale, support = None, None
        depth_small = depth_out.depth
        if focal_px is None and camera is not None:
            focal_px = camera.fx
        # No usable focal length (None, 0, negative, NaN from a broken CameraInfo): assume.
        focal_assumed = focal_px is None or not math.isfinite(focal_px) or focal_px <= 0
        if anchors is not None and focal_assumed:
            # Points projected with a guessed camera land on the wrong pixels.
            anchors = AnchorCloud.refused(
                "anchors need a calibrated camera_info: without a focal length the points "
                "would land on guessed pixels",
                anchor_scale.UNCALIBRATED,
            )
        focal = focal_from_hfov(width, self.config.default_hfov_deg) if focal_assumed else focal_px
        if self.canonical_focal_px:
            # The network saw the downscaled image: its focal length is scaled alike.
            depth_small = metric_from_canonical(
                depth_small, focal * depth_w / width, self.canonical_focal_px
            )
        else:
            focal_assumed = False  # the metres need no focal length (nor can use one)
        haze_depth = self._depth_from_haze(depth_small, depth_out, timings)
        if haze_depth is not None:
            depth_small = haze_depth.depth_m  # the shape from the haze, before any scale source
        if self.depth_units == "meters":
            if camera is None or focal_assumed:
                camera = Pinhole.centred(width, height, focal)
            # The stage includes bringing the depth to full size (a new array, as below).
            scale_mark = time.perf_counter()
            depth, support, scale = self._metric_scale(
                depth_small,
                height,
                width,
                camera,
                stamp_s,
                mounting or self.config.mounting,
                anchors,
            )
            timings["scale"] = (time.perf_counter() - scale_mark) * 1e3
        else:
            # A copy at native size too: on the CPU the backend's array may be tensor memory.
            depth = upsampling.upsample_depth(depth_small, height, width)
        depth = self._apply_depth_range(depth)
        if support is not None:
            # Beyond the range (+-inf): SUPPORT_NONE, no number to trust.
            support *= np.isfinite(depth)
        return depth, focal_assumed, haze_depth, scale, support

    def _depth_from_haze(
        self, depth_m: np.ndarray, output: BackendOutput, timings: dict[str, float]
    ) -> HazeDepth | None:
        """depth_from_haze "fuse": the metric depth of one pass fused with that pass's -ln t, at
        its resolution (before upsampling: t and depth of one input, pixel for pixel), inside
        the model's range (outside stays for the REP-117 markers). Relative depth is -ln t
        already; a model that predicts no t keeps its depth (estimating one here would cost
        more than the fusion itself: visibility.transmission_for does it where it is needed)."""
        if (
            self.config.depth_from_haze == "off"
            or self.depth_units != "meters"
            or output.transmission is None
        ):
            return None
        mark = time.perf_counter()
        fused = fuse_depth_with_haze(depth_m, output.transmission, self.depth_range)
        timings["depth_from_haze"] = (time.perf_counter() - mark) * 1e3
        return fused

    def _metric_scale(
        self,
        depth_small: np.ndarray,
        height: int,
        width: int,
        camera: Pinhole,
        stamp_s: float | None,
        mounting: Mounting,
        anchors: AnchorCloud | None = None,
    ) -> tuple[np.ndarray, np.ndarray, ScaleState]:
        """The learned metres (``depth_small``, the network's) at height x width with the scale
        sources applied: (depth, support, the ScaleState). The ground is fitted on the network's
        own pixels (no upsampled duplicates), its depth written at full size."""
        mounting.check()
        learned = np.isfinite(depth_small).view(np.uint8) * np.uint8(
            SUPPORT_LEARNED
        )  # else SUPPORT_NONE
        proposals = []
        small_camera = camera.resized(width, height, depth_small.shape[1], depth_small.shape[0])
        if anchors is not None:
            proposals.append(
                anchor_estimate(
                    depth_small, small_camera, anchors, stamp_s, self.config.anchor_rules
                )
            )
        if mounting.height_m > 0:
            proposals.append(ground_estimate(depth_small, small_camera, mounting))
        state = self.stream_scale.update(proposals, stamp_s)
        if state.source == LEARNED:
            depth = upsampling.upsample_depth(depth_small, height, width)
            return depth, resize_nearest(learned, width, height), state
        if state.source == ANCHORS:
            # This frame's own points correct the shape near them; a held factor scales only.
            scaled, weight = apply_anchors(
                depth_small,
                small_camera,
                state.factor,
                state.details or None,
                self.config.anchor_rules,
            )
            support = np.isfinite(scaled).view(np.uint8) * np.uint8(SUPPORT_SCALED)
            support[(weight >= 0.5) & (support > 0)] = SUPPORT_ANCHORED
            return (
                upsampling.upsample_depth(scaled, height, width),
                resize_nearest(support, width, height),
                state,
            )
        # The plane of this frame when the factor is this frame's own (smoothed); a held factor
        # (this frame refused, or an outlier) has no plane to trust here.
        plane = None if state.held else state.details["plane"]
        depth, support = apply_ground(
            depth_small, width, height, camera, state.factor, plane, mounting
        )
        return depth, support, state

    def depth_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the depth is estimated at for an input of this size. depth_max_side
        holds for metric depth only: relative depth (DCP's -ln t) has no metres to keep, and
        follows max_side in the same pass."""
        fixed = self.config.depth_max_side if self.depth_units == "meters" else 0
        # The same rule as the dehazing: at equal settings one pass makes both.
        return network_size(height, width, fixed or self.config.max_side, self.config.size_rule)

    def _run_backend(
        self,
        rgb: np.ndarray,
        height: int,
        width: int,
        want_dehazed: bool,
        want_depth: bool,
        timings: dict[str, float],
        prefix: str = "",
    ) -> tuple[np.ndarray, BackendOutput]:
        """One network pass on ``rgb`` resized to height x width: (the float32 input, the output).
        Adds its stages to ``timings``, their names after ``prefix``."""
        mark = time.perf_counter()
        if (height, width) != rgb.shape[:2]:
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        small = rgb.astype(np.float32) / 255.0
        timings["preprocess"] += (time.perf_counter() - mark) * 1e3
        out = self.backend.run(small, want_dehazed, want_depth)
        try:
            out.check(height, width, want_dehazed, want_depth, self.model_name)
        except BackendError as exc:
            raise EngineError(str(exc)) from exc
        for stage, ms in out.timings_ms.items():
            timings[prefix + stage] = timings.get(prefix + stage, 0.0) + ms
        return small, out

    def _apply_depth_range(self, depth: np.ndarray) -> np.ndarray:
        """In place. REP-117: beyond the trained range is +inf (too far) or -inf (too close)."""
        near, far = self.depth_range
        depth[depth > far] = np.inf
        depth[depth < near] = -np.inf
        return depth
