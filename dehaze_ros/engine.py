"""DehazeEngine: one frame in, dehazed image and depth out. Knows nothing of ROS.

The node converts messages to numpy, calls :meth:`DehazeEngine.process`, and publishes;
``training.evaluate`` runs through the same engine, so the numbers it reports describe what is
deployed (the in-training validation that picks best.pt calls the networks directly).

Speed: ``max_side`` runs the networks on a downscaled copy, and the dehazed image is rebuilt at
full resolution from it. Models with a physics head (and the DCP) predict transmission t and
airlight A: t is upsampled and the scattering model inverted at full resolution,
J = (I - A) / max(t, t0) + A, so the input's fine detail is kept and amplified by 1/t as the
model says. The paper's residual head gives only J: ``hazy_full + upsample(dehazed_small -
hazy_small)``. Depth is upsampled nearest-neighbour: interpolating across a depth edge would
invent "flying" points between foreground and background.

Metric depth: a checkpoint with a canonical camera (``canonical_focal_px``) gives metres for the
focal length of the image the network ran on (dehaze_ros.camera). ``process`` takes the focal
length of the input image (from CameraInfo); without one it assumes ``default_hfov_deg`` and
says so in the result (``focal_assumed``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from dehaze_ros import dcp
from dehaze_ros.camera import DEFAULT_HFOV_DEG, focal_from_hfov, metric_from_canonical
from dehaze_ros.checkpoint import Checkpoint, build_models, load_checkpoint
from dehaze_ros.dcp import dehaze_dcp
from dehaze_ros.haze import recover_scene

MODELS = ("checkpoint", "dcp")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default.pt"


class EngineError(RuntimeError):
    """The engine could not be set up as configured (device, precision, checkpoint)."""


@dataclass(frozen=True)
class EngineConfig:
    model: str = "checkpoint"          # "checkpoint": DIACMPN weights; "dcp": Dark Channel Prior
    checkpoint: str = ""               # path; "" = the checkpoint shipped with the package
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    precision: str = "auto"            # auto | fp32 | fp16 | bf16 (fp16 on CUDA; bf16 on CUDA or native-bf16 CPUs)
    max_side: int = 0                  # run the networks with the longer side at most this; 0 = native
    warmup: int = 1                    # warm-up passes after loading (first CUDA/oneDNN calls are slow)
    num_threads: int = 0               # torch CPU threads; 0 = torch's default
    default_hfov_deg: float = DEFAULT_HFOV_DEG   # focal length assumed when process() gets none

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        device = self.device
        if not (device in ("auto", "cpu", "cuda") or
                (device.startswith("cuda:") and device[5:].isdigit())):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        for name in ("max_side", "warmup", "num_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if 0 < self.max_side < 32:
            raise ValueError(f"max_side must be 0 (native) or at least 32, got {self.max_side}")
        if not 1.0 <= self.default_hfov_deg <= 179.0:
            raise ValueError(f"default_hfov_deg must lie in [1, 179] degrees, got {self.default_hfov_deg}")


@dataclass
class EngineResult:
    dehazed: np.ndarray | None        # H x W x 3 uint8 RGB, input size
    depth: np.ndarray | None          # H x W float32, input size, in depth_units
    depth_units: str                  # "meters" | "relative"
    timings_ms: dict[str, float]
    # The metric scale rests on default_hfov_deg, not on a known focal length (canonical-camera
    # checkpoints only; False where the scale needs no focal length).
    focal_assumed: bool = False
    # Physics heads and DCP: the transmission (float32, at the resolution the model ran at, which
    # is the input's when max_side does not shrink it) and the airlight (3,) RGB in [0, 1].
    transmission: np.ndarray | None = None
    airlight: np.ndarray | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EngineError(f"device {name!r} requested but CUDA is not available "
                              "(torch.cuda.is_available() is False); use device:=cpu or auto")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise EngineError(f"device {name!r} requested but only {torch.cuda.device_count()} "
                              "CUDA device(s) exist")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX): bf16 is faster, not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        if name == "fp16":
            raise EngineError(f"precision fp16 needs a CUDA device; on {device} use fp32, bf16 or auto")
        if name == "bf16":
            if not cpu_supports_bf16():
                raise EngineError("precision bf16 on the CPU needs native bf16 support (AVX512-BF16 or "
                                  "AMX), which this CPU lacks; use fp32 or auto")
            return torch.bfloat16
        return torch.float32
    if name == "auto":
        # The same rule as training's AMP, so the deployed precision is the validated one.
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


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
        raise ValueError(f"image must be H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA), "
                         f"got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def recover_full_resolution(rgb: np.ndarray, transmission: np.ndarray, airlight: np.ndarray,
                            t_min: float = dcp.T_MIN) -> np.ndarray:
    """J = (I - A) / max(t, t_min) + A at the size of ``rgb`` (uint8 H x W x 3) from a transmission
    map of any size (bilinearly upsampled) and the airlight (3,): uint8 RGB."""
    height, width = rgb.shape[:2]
    if transmission.shape != (height, width):
        transmission = cv2.resize(transmission, (width, height), interpolation=cv2.INTER_LINEAR)
    clear = recover_scene(rgb.astype(np.float32) / 255.0, transmission, np.asarray(airlight, np.float32), t_min)
    return (clear * 255.0 + 0.5).astype(np.uint8)


def scaled_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) with the longer side at most ``max_side``; unchanged when already smaller."""
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


class DehazeEngine:
    """Loads a model once, then dehazes frames and estimates their depth."""

    def __init__(self, config: EngineConfig = EngineConfig()):
        config.validate()
        self.config = config
        self.checkpoint: Checkpoint | None = None
        self.dehazer: torch.nn.Module | None = None
        self.depth_net: torch.nn.Module | None = None
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if config.model == "dcp":
            self.device, self.dtype = torch.device("cpu"), torch.float32
            self.depth_units = "relative"
            self.depth_range = (0.0, float("inf"))
        else:
            self.device = resolve_device(config.device)
            self.dtype = resolve_precision(config.precision, self.device)
            path = Path(config.checkpoint) if config.checkpoint else DEFAULT_CHECKPOINT
            checkpoint = load_checkpoint(path, map_location="cpu")
            self.dehazer, self.depth_net = build_models(checkpoint)
            # Keep the metadata only: the state dicts would be a second copy of every weight.
            self.checkpoint = dataclasses.replace(checkpoint, dehazer_state={}, depth_net_state=None)
            self.dehazer.to(self.device)
            if self.depth_net is not None:
                self.depth_net.to(self.device)
            self.depth_units = self.checkpoint.depth_units
            self.depth_range = self.checkpoint.depth_range_m
        for _ in range(config.warmup):
            self.process(np.zeros((240, 320, 3), dtype=np.uint8))

    @property
    def model_name(self) -> str:
        if self.checkpoint is None:
            return "dcp"
        return str(self.checkpoint.model_config.get("name", "custom"))

    def describe(self) -> dict:
        return {
            "model": self.model_name,
            "checkpoint": self.checkpoint.path if self.checkpoint else "",
            "device": str(self.device),
            "precision": str(self.dtype).replace("torch.", ""),
            "max_side": self.config.max_side,
            "depth_units": self.depth_units,
            "depth_range_m": list(self.depth_range),
            "canonical_focal_px": self.canonical_focal_px,
        }

    def close(self) -> None:
        """Drop the networks and give cached GPU memory back."""
        self.dehazer = self.depth_net = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _sync(self) -> None:
        # Per-stage timings are only honest when queued CUDA work has finished.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _autocast(self):
        if self.dtype != torch.float32:
            return torch.autocast(self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    @property
    def canonical_focal_px(self) -> float:
        return float(self.checkpoint.model_config.get("canonical_focal_px", 0.0)) if self.checkpoint else 0.0

    def process(self, image: np.ndarray, want_dehazed: bool = True, want_depth: bool = True,
                focal_px: float | None = None) -> EngineResult:
        """``focal_px``: the horizontal focal length in pixels of ``image`` (CameraInfo's fx at
        this image size); None assumes ``default_hfov_deg``."""
        start = time.perf_counter()
        rgb = as_rgb_uint8(image)
        height, width = rgb.shape[:2]
        if self.config.model == "dcp":
            return self._process_dcp(rgb, want_dehazed, want_depth, start)
        if self.dehazer is None:
            raise EngineError("engine is closed")

        small_h, small_w = scaled_size(height, width, self.config.max_side)
        small = rgb if (small_h, small_w) == (height, width) else cv2.resize(
            rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
        timings: dict[str, float] = {}
        with torch.inference_mode(), self._autocast():
            hazy = torch.from_numpy(small).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
            self._sync()
            timings["preprocess"] = (time.perf_counter() - start) * 1e3
            mark = time.perf_counter()
            branch_depth = None
            out = self.dehazer.forward_physics(hazy)
            if self.depth_net is None and want_depth:
                branch_depth = self.dehazer.depth_branch.metres_from_log_depth(out.branch_log_depth)
            dehazed_t = out.dehazed.float().clamp_(0.0, 1.0)
            self._sync()
            timings["dehaze"] = (time.perf_counter() - mark) * 1e3
            depth_t = None
            if want_depth:
                mark = time.perf_counter()
                # Deployment depth is E(D(I)): the depth net sees the dehazed image, as in training.
                depth_t = branch_depth if self.depth_net is None else self.depth_net(dehazed_t, out.transmission)
                depth_t = depth_t.float()
                self._sync()
                timings["depth"] = (time.perf_counter() - mark) * 1e3
            mark = time.perf_counter()
            transmission = airlight = None
            if out.transmission is not None:
                transmission = out.transmission[0, 0].float().cpu().numpy()
                airlight = out.airlight.float().reshape(3).cpu().numpy()
            physics = want_dehazed and transmission is not None and (small_h, small_w) != (height, width)
            correction = (dehazed_t - hazy)[0].permute(1, 2, 0).cpu().numpy() if want_dehazed and not physics else None
            depth_small = depth_t[0, 0].cpu().numpy() if depth_t is not None else None

        dehazed = None
        if physics:
            dehazed = recover_full_resolution(rgb, transmission, airlight)
        elif correction is not None:
            if (small_h, small_w) != (height, width):
                correction = cv2.resize(correction, (width, height), interpolation=cv2.INTER_LINEAR)
            dehazed = np.clip(rgb.astype(np.float32) + correction * 255.0 + 0.5, 0, 255).astype(np.uint8)
        depth, focal_assumed = None, False
        if depth_small is not None:
            if self.canonical_focal_px:
                # No usable focal length (None, 0, negative, NaN from a broken CameraInfo): assume.
                focal_assumed = focal_px is None or not math.isfinite(focal_px) or focal_px <= 0
                focal = focal_from_hfov(width, self.config.default_hfov_deg) if focal_assumed else focal_px
                # The network saw the downscaled image: its focal length is scaled alike.
                depth_small = metric_from_canonical(depth_small, focal * small_w / width, self.canonical_focal_px)
            if (small_h, small_w) != (height, width):
                depth_small = cv2.resize(depth_small, (width, height), interpolation=cv2.INTER_NEAREST)
            else:
                depth_small = depth_small.copy()  # on CPU this is the tensor's own memory
            depth = self._apply_depth_range(depth_small)
        timings["postprocess"] = (time.perf_counter() - mark) * 1e3
        timings["total"] = (time.perf_counter() - start) * 1e3
        return EngineResult(dehazed, depth, self.depth_units, timings, focal_assumed, transmission, airlight)

    def _apply_depth_range(self, depth: np.ndarray) -> np.ndarray:
        """In place. REP-117: beyond the trained range is +inf (too far) or -inf (too close), not a number."""
        near, far = self.depth_range
        depth[depth > far] = np.inf
        depth[depth < near] = -np.inf
        return depth

    def _process_dcp(self, rgb: np.ndarray, want_dehazed: bool, want_depth: bool,
                     start: float) -> EngineResult:
        height, width = rgb.shape[:2]
        small_h, small_w = scaled_size(height, width, self.config.max_side)
        small = rgb if (small_h, small_w) == (height, width) else cv2.resize(
            rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
        mark = time.perf_counter()
        result = dehaze_dcp(small)
        timings = {"preprocess": (mark - start) * 1e3, "dehaze": (time.perf_counter() - mark) * 1e3}
        mark = time.perf_counter()
        dehazed = depth = None
        if want_dehazed:
            if (small_h, small_w) == (height, width):
                dehazed = (result.dehazed * 255.0 + 0.5).astype(np.uint8)
            else:
                # Full-resolution inverse ASM with the upsampled transmission keeps the detail.
                dehazed = recover_full_resolution(rgb, result.transmission, result.airlight)
        if want_depth:
            depth = result.relative_depth
            if (small_h, small_w) != (height, width):
                depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_LINEAR)
        timings["postprocess"] = (time.perf_counter() - mark) * 1e3
        timings["total"] = (time.perf_counter() - start) * 1e3
        return EngineResult(dehazed, depth, "relative", timings, transmission=result.transmission,
                            airlight=result.airlight)
