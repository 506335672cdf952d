"""What every data source shares: the sample type, splits by scene, crops, haze synthesis."""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from dehaze_ros.haze import synthesize_haze
from training.config import HazeConfig, SourceConfig, require, require_range
from training.data.io import DataError

SPLITS = ("train", "val", "test")
# beta * visibility = -ln(0.02) = 3.912: Koschmieder's visual range at a 2% contrast threshold, the
# convention the issue tracker and METHOD.md use. (WMO's meteorological optical range takes a 5%
# threshold, -ln(0.05) = 2.996: the same fog is then reported 23% nearer.)
KOSCHMIEDER = 3.912


@dataclass
class FolderSourceConfig(SourceConfig):
    """The keys of every source that reads a folder and splits it by scene (reside, rgbd, rosbag2)."""

    path: str = ""  # relative to data.root, or absolute
    val_scenes: list[str] = field(default_factory=list)  # scenes held out for validation
    test_scenes: list[str] = field(
        default_factory=list
    )  # scenes held out of training and validation
    val_fraction: float = 0.0  # without val_scenes: this share of scenes (stable hash)
    exclude: list[str] = field(default_factory=list)  # glob patterns of sub-paths to skip
    # Focal length (px) of the stored images, for canonical-camera depth; 0 = unknown.
    focal_px: float = 0.0
    scale_range: list[float] = field(
        default_factory=lambda: [0.5, 1.0]
    )  # random resize before crop
    # scale_range is relative to the image resized so its longer side is this many pixels; 0 = to
    # the stored image. A monocular depth network reads objects' size in pixels: 320 shows objects
    # at the size the engine's depth pass (depth_max_side 320) shows them, whatever the stored
    # resolution (Middlebury 2014 is about 2900 px wide, NYU 640).
    scale_reference_side: int = 0

    def check(self, prefix: str) -> None:
        super().check(prefix)
        require(
            bool(self.path),
            f"{prefix}.path is empty: a {self.kind} source reads a folder (relative to data.root)",
        )
        require(
            0.0 <= self.val_fraction < 1.0,
            f"{prefix}.val_fraction must lie in [0, 1), got {self.val_fraction}",
        )
        overlap = set(self.val_scenes) & set(self.test_scenes)
        require(
            not overlap,
            f"{prefix}: scenes {sorted(overlap)} are in both val_scenes and test_scenes",
        )
        require_range(f"{prefix}.scale_range", self.scale_range, 0.05, 4.0)
        require(
            self.scale_reference_side == 0 or self.scale_reference_side >= 16,
            f"{prefix}.scale_reference_side must be 0 (the stored size) or at least 16 pixels, "
            f"got {self.scale_reference_side}",
        )


@dataclass
class Sample:
    """One training or evaluation example, numpy, before batching."""

    hazy: np.ndarray  # H x W x 3 float32 [0, 1]
    clear: np.ndarray  # H x W x 3 float32 [0, 1]
    depth_m: np.ndarray  # H x W float32 metres; NaN unknown, +inf sky (no depth at all: all NaN)
    has_depth: bool  # the source measured depth for this image
    name: str = ""  # source/scene/item, for logs and evaluation tables
    # Focal length in pixels of *this* image (after every crop and resize); NaN or <= 0 = unknown. The
    # depth networks learn depth in a canonical camera (ModelConfig.canonical_focal_px) from it.
    focal_px: float = math.nan
    # False: depth_m is right only up to an unknown scale (e.g. Middlebury 2001-2006 disparity);
    # it then trains only scale-invariant terms.
    metric_depth: bool = True
    # The haze this sample was synthesised with, where it was (None: unknown, e.g. ITS's hazy
    # photographs): t = exp(-beta d) per pixel (H x W float32, 0 in the sky) and the airlight (3,).
    # They supervise a physics head's t and A (loss.transmission, loss.airlight).
    transmission: np.ndarray | None = None
    airlight: np.ndarray | None = None
    # The camera's mounting where the source knows it (rendered views): metres above the ground
    # and the optical axis's tilt below the horizontal in degrees; NaN = unknown. The ground-plane
    # scale of training.evaluate needs them (dehaze_ros.metric_scale.Mounting).
    camera_height_m: float = math.nan
    camera_pitch_deg: float = math.nan


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` alone (not Python's salted hash): stable splits."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def split_scenes(
    scene_ids: list[str],
    config: SourceConfig,
    source_name: str,
    canonical: Callable[[str], str] = lambda name: name,
) -> dict[str, set[str]]:
    """Assign whole scenes to train / val / test (never single crops or frames).

    Named ``test_scenes`` and ``val_scenes`` go to their split; without ``val_scenes`` a stable
    ``val_fraction`` of the remaining scenes is held out for validation by a hash of its name.
    """
    known = sorted(set(scene_ids))

    def resolve(names: list[str], key: str) -> set[str]:
        resolved = set()
        for name in names:
            scene = canonical(name)
            if scene not in known:
                raise DataError(
                    f"data.sources.{source_name}.{key} names {name!r}, which is not a scene of this "
                    f"source; its scenes are: {', '.join(known) or '(none)'}"
                )
            resolved.add(scene)
        return resolved

    test = resolve(config.test_scenes, "test_scenes")
    val = resolve(config.val_scenes, "val_scenes")
    if not config.val_scenes and config.val_fraction > 0:
        val = {
            scene
            for scene in known
            if scene not in test and stable_fraction(f"{source_name}:{scene}") < config.val_fraction
        }
    train = set(known) - val - test
    return {"train": train, "val": val, "test": test}


def is_excluded(relative_path: str, patterns: list[str]) -> bool:
    parts = Path(relative_path).parts
    for pattern in patterns:
        if fnmatch.fnmatch(relative_path, pattern):
            return True
        # A bare folder name excludes that folder anywhere below the source root.
        if "/" not in pattern and any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


class LruCache:
    """Decoded images per worker: small datasets are read from disk once, large ones stay bounded."""

    def __init__(self, capacity: int):
        self.capacity = max(0, capacity)
        self._items: OrderedDict = OrderedDict()

    def get(self, key, load: Callable[[], object]):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        if self.capacity:
            self._items[key] = value
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def __getstate__(self):
        # Workers start with an empty cache instead of a copy of the parent's.
        return {"capacity": self.capacity, "_items": OrderedDict()}


def to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    # Nearest neighbour: interpolating across a depth edge or a hole invents surfaces.
    return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)


def random_crop(
    images: list[np.ndarray],
    depth: np.ndarray | None,
    crop: int,
    scale_range: list[float],
    rng: np.random.Generator,
    reference_side: int = 0,
) -> tuple[list[np.ndarray], np.ndarray | None, float]:
    """The same random (scaled) square crop of aligned images and depth, output crop x crop.

    A crop of crop/scale source pixels is cut and resized to crop: the same as resizing the whole
    image by ``scale`` first, at a fraction of the cost. ``scale`` is drawn from ``scale_range``
    and, with ``reference_side`` > 0, multiplied by reference_side / the longer side (the scale is
    then relative to the image at that size). Images smaller than the crop are upscaled.
    Returns the crops and the zoom (output pixels per source pixel) that multiplies focal lengths.
    """
    height, width = images[0].shape[:2]
    scale = float(rng.uniform(scale_range[0], scale_range[1]))
    if reference_side > 0:
        scale *= reference_side / max(height, width)
    window = int(round(crop / scale))
    window = max(1, min(window, height, width))
    top = int(rng.integers(0, height - window + 1))
    left = int(rng.integers(0, width - window + 1))
    rows, cols = slice(top, top + window), slice(left, left + window)
    cropped = [image[rows, cols] for image in images]
    cropped_depth = None if depth is None else depth[rows, cols]
    if window != crop:
        cropped = [resize_image(image, crop, crop) for image in cropped]
        if cropped_depth is not None:
            cropped_depth = resize_depth(cropped_depth, crop, crop)
    return cropped, cropped_depth, crop / window


def max_side_zoom(height: int, width: int, max_side: int) -> float:
    """The zoom ``resize_max_side`` applies to an image of this size (1 when it keeps it)."""
    return 1.0 if max(height, width) <= max_side else max_side / max(height, width)


def resize_max_side(image: np.ndarray, max_side: int, is_depth: bool = False) -> np.ndarray:
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return resize_depth(image, *size) if is_depth else resize_image(image, *size)


def fill_unknown_depth(depth: np.ndarray) -> np.ndarray:
    """Replace NaN by the nearest known depth (sky, +inf, stays): a plausible depth for haze.

    Holes (stereo occlusions, Kinect shadows) are not sky. Synthesising them as sky would paint
    airlight-white blotches over image content the target still shows, and teach the dehazer to
    invent that content. The depth *target* keeps its NaN: only the haze uses the filled map.
    """
    unknown = np.isnan(depth)
    if not unknown.any():
        return depth
    if unknown.all():
        return np.full_like(depth, np.inf)
    _, labels = cv2.distanceTransformWithLabels(
        unknown.astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    # DIST_LABEL_PIXEL numbers the known pixels 1..N in raster order.
    known_values = depth.reshape(-1)[np.flatnonzero(~unknown)]
    return known_values[labels - 1].astype(np.float32)


def smooth_random_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bicubically (patchy haze)."""
    cells = int(rng.integers(2, 6))
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return field / max(float(np.abs(field).max()), 1e-6)


def synthesize_random_haze(
    clear: np.ndarray, depth_m: np.ndarray, haze: HazeConfig, rng: np.random.Generator
) -> np.ndarray:
    """A hazy version of ``clear`` (float [0,1]) with random density, airlight and degradations."""
    return synthesize_random_haze_with_truth(clear, depth_m, haze, rng)[0]


def synthesize_random_haze_with_truth(
    clear: np.ndarray, depth_m: np.ndarray, haze: HazeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``synthesize_random_haze`` with the haze it drew: (hazy, transmission H x W, airlight (3,)).
    Noise and JPEG come after the haze, so the transmission and airlight stay the truth."""
    depth_for_haze = fill_unknown_depth(depth_m)
    if haze.visibility_range_m:
        low, high = haze.visibility_range_m
        visibility = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        beta: float | np.ndarray = KOSCHMIEDER / visibility
    else:
        finite = depth_for_haze[np.isfinite(depth_for_haze)]
        median_depth = float(np.median(finite)) if finite.size else 10.0
        median_depth = max(median_depth, 0.05)
        transmission_at_median = float(rng.uniform(*haze.transmission_range))
        beta = -np.log(transmission_at_median) / median_depth
    if rng.random() < haze.nonhomogeneous_prob:
        field = smooth_random_field(rng, *clear.shape[:2])
        beta = (beta * (1.0 + haze.nonhomogeneous_strength * field)).astype(np.float32)
    grey = float(rng.uniform(*haze.airlight_range))
    airlight = np.clip(grey + rng.uniform(-haze.airlight_tint, haze.airlight_tint, 3), 0.0, 1.0)
    airlight = airlight.astype(np.float32)
    hazy, transmission = synthesize_haze(clear, depth_for_haze, beta, airlight)
    if rng.random() < haze.noise_prob and haze.noise_std_max > 0:
        std = float(rng.uniform(0.0, haze.noise_std_max))
        hazy = np.clip(hazy + rng.standard_normal(hazy.shape).astype(np.float32) * std, 0.0, 1.0)
    if rng.random() < haze.jpeg_prob:
        quality = int(rng.integers(haze.jpeg_quality_range[0], haze.jpeg_quality_range[1] + 1))
        bgr = (hazy[..., ::-1] * 255.0 + 0.5).astype(np.uint8)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            hazy = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(hazy, dtype=np.float32), transmission.astype(np.float32), airlight


def hazed_sample(
    clear_rgb: np.ndarray,
    depth_m: np.ndarray,
    haze: HazeConfig,
    rng: np.random.Generator,
    name: str,
    focal_px: float,
    metric_depth: bool = True,
) -> Sample:
    """The sample of a clear image and its depth under synthetic haze (the ASM, I = J t + A (1 - t),
    t = exp(-beta d), density and airlight drawn from ``haze`` with ``rng``); ``focal_px`` is
    that of this image, after any crop or resize."""
    clear = to_float(clear_rgb)
    hazy, transmission, airlight = synthesize_random_haze_with_truth(clear, depth_m, haze, rng)
    return Sample(
        hazy,
        clear,
        depth_m,
        True,
        name,
        focal_px=focal_px,
        metric_depth=metric_depth,
        transmission=transmission,
        airlight=airlight,
    )


def resize_whole(
    image: np.ndarray, depth_m: np.ndarray, max_side: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """An image and its depth with the longer side at most ``max_side``, and the zoom applied."""
    zoom = max_side_zoom(*image.shape[:2], max_side)
    return resize_max_side(image, max_side), resize_max_side(depth_m, max_side, is_depth=True), zoom


def no_depth(height: int, width: int) -> np.ndarray:
    return np.full((height, width), np.nan, dtype=np.float32)


def require_folder(path: Path, source_name: str, what: str) -> Path:
    if not path.exists():
        raise DataError(
            f"data source '{source_name}': {what} {path} does not exist; check "
            "data.root and the source's path (relative paths start at data.root)"
        )
    if not path.is_dir():
        raise DataError(f"data source '{source_name}': {what} {path} is not a folder")
    return path


class DataSource:
    """Base of every source. A source is built for one split and only sees that split's scenes."""

    kind = ""
    has_depth = False

    def __init__(self, name: str, config: SourceConfig, split: str):
        """Subclasses take ``(name, config, split, root, cache_items)``: ``root`` the resolved
        folder of ``config.path`` (None for a kind that reads no folder), ``cache_items`` the
        decoded items each worker keeps."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.name, self.config, self.split = name, config, split

    def scenes(self) -> list[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        """Number of distinct items (images, frames, views) in this split."""
        raise NotImplementedError

    def train_sample(self, rng: np.random.Generator, crop: int) -> Sample:
        """A random crop of a random item, hazy/clear/depth aligned."""
        raise NotImplementedError

    def eval_sample(self, index: int, max_side: int, seed: int = 0) -> Sample:
        """Item ``index`` whole (longer side at most ``max_side``), with deterministic haze."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} source '{self.name}' ({self.split}): {len(self)} items in {len(self.scenes())} scenes"
