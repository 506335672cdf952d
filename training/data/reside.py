"""RESIDE-style paired data: ``hazy/`` and ``GT/`` (or ``gt/``, ``clear/``), optional ``depth/``.

Hazy file names carry the clear image's name plus haze parameters; the clear image is found by
trying, in order: the same name; "hazy" replaced by "GT"/"gt"/"clear" (O-HAZE
``35_outdoor_hazy`` -> ``35_outdoor_GT``); then dropping trailing ``_token`` parts one by one:

    ITS/SOTS  1400_3.png           -> 1400.png
    ITS       2_1_0.99082.png      -> 2.png
    OTS       0001_0.8_0.2.jpg     -> 0001.jpg
    outdoor   0025_heavy.jpg       -> 0025.jpg,  g0016_slide.jpg -> g0016.jpg

A scene is one clear image: all hazy versions of it fall into the same split. Depth files (in
``depth/``, named like the clear image) are 16-bit PNG times ``depth_scale``, or .npy/.pfm in metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import require
from training.data.common import (
    DataSource,
    FolderSourceConfig,
    LruCache,
    Sample,
    is_excluded,
    max_side_zoom,
    no_depth,
    random_crop,
    require_folder,
    resize_max_side,
    split_scenes,
    to_float,
)
from training.data.io import DEPTH_EXTENSIONS, DataError, list_images, read_depth_m, read_rgb

CLEAR_FOLDER_NAMES = ("GT", "gt", "clear", "Clear", "GT_images")
HAZY_FOLDER_NAMES = ("hazy", "Hazy", "haze")


@dataclass
class ResideConfig(FolderSourceConfig):
    """data.sources.<name> of kind reside (the keys of every folder source, and this)."""

    kind: str = "reside"
    depth_scale: float = 0.001  # metres per unit of 16-bit depth/ images

    def check(self, prefix: str) -> None:
        super().check(prefix)
        require(
            self.depth_scale > 0,
            f"{prefix}.depth_scale must be > 0 (metres per unit), got {self.depth_scale}",
        )


@dataclass(frozen=True)
class PairedItem:
    hazy: Path
    clear: Path
    depth: Path | None
    scene: str


def clear_name_candidates(hazy_stem: str) -> list[str]:
    candidates = [hazy_stem]
    for word in ("hazy", "Hazy", "HAZY"):
        if word in hazy_stem:
            candidates += [hazy_stem.replace(word, other) for other in ("GT", "gt", "clear")]
    parts = hazy_stem.split("_")
    candidates += ["_".join(parts[:count]) for count in range(len(parts) - 1, 0, -1)]
    return list(dict.fromkeys(candidates))


def find_subfolder(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def scan_paired_folder(root: Path, source_name: str, exclude: list[str] = ()) -> list[PairedItem]:
    require_folder(root, source_name, "RESIDE folder")
    hazy_dir = find_subfolder(root, HAZY_FOLDER_NAMES)
    clear_dir = find_subfolder(root, CLEAR_FOLDER_NAMES)
    if hazy_dir is None or clear_dir is None:
        raise DataError(
            f"data source '{source_name}': {root} is not in RESIDE layout; it needs a "
            f"hazy/ folder and a GT/ (or gt/, clear/) folder, found "
            f"{sorted(p.name for p in root.iterdir() if p.is_dir()) or 'no folders'}"
        )
    depth_dir = root / "depth" if (root / "depth").is_dir() else None
    clear_by_stem = {path.stem: path for path in list_images(clear_dir)}
    depth_by_stem = {}
    if depth_dir is not None:
        depth_by_stem = {
            p.stem: p for p in sorted(depth_dir.iterdir()) if p.suffix.lower() in DEPTH_EXTENSIONS
        }
    items = []
    for hazy in list_images(hazy_dir):
        if is_excluded(hazy.name, list(exclude)):
            continue
        candidates = clear_name_candidates(hazy.stem)
        match = next((name for name in candidates if name in clear_by_stem), None)
        if match is None:
            raise DataError(
                f"data source '{source_name}': no clear image for {hazy} in {clear_dir} "
                f"(tried {', '.join(candidates)} with any image extension)"
            )
        items.append(PairedItem(hazy, clear_by_stem[match], depth_by_stem.get(match), match))
    if not items:
        raise DataError(f"data source '{source_name}': no hazy images in {hazy_dir}")
    return items


def align_clear_to_hazy(clear: np.ndarray, hazy: np.ndarray, item: PairedItem) -> np.ndarray:
    """RESIDE ITS ships 640x480 clear images for 620x460 hazy ones: cut the 10 px border."""
    if clear.shape[:2] == hazy.shape[:2]:
        return clear
    extra_h, extra_w = clear.shape[0] - hazy.shape[0], clear.shape[1] - hazy.shape[1]
    if extra_h < 0 or extra_w < 0 or extra_h % 2 or extra_w % 2:
        raise DataError(
            f"clear image {item.clear} is {clear.shape[1]}x{clear.shape[0]} but hazy "
            f"{item.hazy} is {hazy.shape[1]}x{hazy.shape[0]}; they must match (or the "
            "clear one be larger by an even border, as in RESIDE ITS)"
        )
    top, left = extra_h // 2, extra_w // 2
    return clear[top : top + hazy.shape[0], left : left + hazy.shape[1]]


class ResideSource(DataSource):
    kind = "reside"

    def __init__(
        self, name: str, config: ResideConfig, split: str, root: Path, cache_items: int = 64
    ):
        super().__init__(name, config, split)
        all_items = scan_paired_folder(root, name, config.exclude)
        assignment = split_scenes([item.scene for item in all_items], config, name)
        self.items = [item for item in all_items if item.scene in assignment[split]]
        self.has_depth = any(item.depth is not None for item in self.items)
        self._cache = LruCache(cache_items)

    def scenes(self) -> list[str]:
        return sorted({item.scene for item in self.items})

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        item = self.items[index]

        def load():
            hazy = read_rgb(item.hazy)
            clear = align_clear_to_hazy(read_rgb(item.clear), hazy, item)
            depth = None
            if item.depth is not None:
                depth = align_clear_to_hazy(
                    read_depth_m(item.depth, self.config.depth_scale)[..., None], hazy, item
                )[..., 0]
            return hazy, clear, depth

        return self._cache.get(index, load)

    def train_sample(self, rng: np.random.Generator, crop: int) -> Sample:
        index = int(rng.integers(len(self.items)))
        hazy, clear, depth = self._load(index)
        (hazy, clear), depth, zoom = random_crop(
            [hazy, clear],
            depth,
            crop,
            self.config.scale_range,
            rng,
            self.config.scale_reference_side,
        )
        depth = no_depth(crop, crop) if depth is None else depth
        return Sample(
            to_float(hazy),
            to_float(clear),
            depth,
            self.items[index].depth is not None,
            f"{self.name}/{self.items[index].hazy.name}",
            focal_px=self.config.focal_px * zoom,
        )

    def eval_sample(self, index: int, max_side: int, seed: int = 0) -> Sample:
        hazy, clear, depth = self._load(index)
        zoom = max_side_zoom(*hazy.shape[:2], max_side)
        hazy, clear = resize_max_side(hazy, max_side), resize_max_side(clear, max_side)
        depth = (
            no_depth(*hazy.shape[:2])
            if depth is None
            else resize_max_side(depth, max_side, is_depth=True)
        )
        return Sample(
            to_float(hazy),
            to_float(clear),
            depth,
            self.items[index].depth is not None,
            f"{self.name}/{self.items[index].hazy.name}",
            focal_px=self.config.focal_px * zoom,
        )
