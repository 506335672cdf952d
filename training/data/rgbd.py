"""Clear RGB + metric depth, hazed on the fly with the ASM. Layouts found anywhere below the path:

* Middlebury 2014 scene folder: ``im0.png``, ``disp0GT.pfm`` (or ``disp0.pfm``), ``calib.txt``;
  depth Z[mm] = baseline * f / (d + doffs), f = cam0[0][0]; unknown disparity (inf) -> NaN.
  Variants of one scene (``PianoL`` of ``Piano``, ``PlaytableP``, ``MotorcycleE``: other
  lighting, rectification or exposure) are one scene, so they never straddle a split.
* Frame folder: ``color/`` + ``depth/`` with matching file names (NYU, ICL-NUIM, Redwood style).
* Side-by-side files: ``N.png`` + ``N_depth.png`` (TUM style) or ``X_color.*`` + ``X_depth.*``.

* Middlebury 2001-2006 scene folder (relative depth only, no calibration): ``view1.png`` +
  ``disp1.png`` (2005/06), ``imL.png`` + ``disp2.png`` (2003), ``im2.ppm`` + ``disp2.pgm``
  (2001); 8-bit disparity, 0 = unknown. Depth is taken as 1 / disparity, scaled to a median of
  RELATIVE_MEDIAN_M: right up to an unknown scale (and the unknown disparity offset of the
  cropped 2005/06 pairs is ignored), so these samples train only scale-invariant depth terms
  (``Sample.metric_depth`` False). Their haze needs no metres: it is set by the transmission at
  the median depth.

16-bit depth is multiplied by ``depth_scales[<folder name>]`` (else ``depth_scale``), 0 = hole;
``.npy``/``.pfm`` depth is metres. Focal lengths (for canonical-camera depth): Middlebury 2014
from calib.txt, frame folders from ``focal_px_by_folder[<folder name>]`` (else ``focal_px``;
0 = unknown). A scene is a Middlebury scene or a whole frame folder (frames of one sequence see
the same room, so they share a split). Folders with images but none of these layouts are
skipped and reported.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.config import HazeConfig, require
from training.data.common import (
    DataSource,
    FolderSourceConfig,
    LruCache,
    Sample,
    hazed_sample,
    is_excluded,
    random_crop,
    require_folder,
    resize_whole,
    split_scenes,
    stable_seed,
)
from training.data.io import (
    DEPTH_EXTENSIONS,
    IMAGE_EXTENSIONS,
    DataError,
    middlebury_depth_m,
    read_depth_m,
    read_middlebury_calib,
    read_pfm,
    read_rgb,
)

MIDDLEBURY_VARIANT_SUFFIXES = ("E", "L", "P")
# Middlebury 2001-2006: (colour, 8-bit disparity) file pairs, newest layout first.
LEGACY_MIDDLEBURY_PAIRS = (
    ("view1.png", "disp1.png"),
    ("imL.png", "disp2.png"),
    ("im2.ppm", "disp2.pgm"),
)
RELATIVE_MEDIAN_M = 2.0  # relative depth is scaled to this median (inside depth.min_m..max_m)


@dataclass
class RgbdConfig(FolderSourceConfig):
    """data.sources.<name> of kind rgbd (the keys of every folder source, and these)."""

    kind: str = "rgbd"
    # Single items (e.g. nyu_kinect/5) held out for validation although their scene trains:
    # one frame per camera measures depth on every camera the data has.
    val_items: list[str] = field(default_factory=list)
    depth_scale: float = 0.001  # metres per unit of 16-bit depth images
    depth_scales: dict[str, float] = field(
        default_factory=dict
    )  # per folder name, over depth_scale
    # Frame folders' focal length (px) per folder name, over focal_px (Middlebury 2014: calib.txt).
    focal_px_by_folder: dict[str, float] = field(default_factory=dict)
    haze: HazeConfig = field(default_factory=HazeConfig)

    def check(self, prefix: str) -> None:
        super().check(prefix)
        require(
            self.depth_scale > 0,
            f"{prefix}.depth_scale must be > 0 (metres per unit), got {self.depth_scale}",
        )
        for folder, scale in self.depth_scales.items():
            require(scale > 0, f"{prefix}.depth_scales.{folder} must be > 0, got {scale}")
        self.haze.check(f"{prefix}.haze")


@dataclass(frozen=True)
class RgbdItem:
    color: Path
    depth: Path
    calib: Path | None  # Middlebury: depth is disparity, converted with calib.txt
    depth_scale: float  # metres per unit for 16-bit depth images
    scene: str
    name: str
    focal_px: float = 0.0  # of the stored image; 0 = unknown (Middlebury 2014: from calib)
    relative: bool = False  # depth is 8-bit disparity without calibration (Middlebury 2001-2006)


def _files_by_stem(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in extensions
    }


def _color_depth_items(folder: Path, scale: float, focal: float) -> list[RgbdItem]:
    """The pairs of a folder with color/ and depth/ sub-folders, matched by file stem."""
    items: list[RgbdItem] = []
    colors = _files_by_stem(folder / "color", IMAGE_EXTENSIONS)
    depths = _files_by_stem(folder / "depth", DEPTH_EXTENSIONS)
    for stem in sorted(set(colors) & set(depths)):
        items.append(
            RgbdItem(
                colors[stem],
                depths[stem],
                None,
                scale,
                folder.name,
                f"{folder.name}/{stem}",
                focal,
            )
        )
    return items


def _suffix_items(folder: Path, files: list[str], scale: float, focal: float) -> list[RgbdItem]:
    """The pairs of a flat folder: NAME_depth next to NAME or NAME_color."""
    items: list[RgbdItem] = []
    by_stem = {
        Path(n).stem: folder / n
        for n in sorted(files)
        if Path(n).suffix.lower() in IMAGE_EXTENSIONS + DEPTH_EXTENSIONS
    }
    for stem, path in sorted(by_stem.items()):
        if not stem.endswith("_depth"):
            continue
        base = stem[: -len("_depth")]
        color = by_stem.get(base) or by_stem.get(f"{base}_color")
        if color is not None and color.suffix.lower() in IMAGE_EXTENSIONS:
            items.append(
                RgbdItem(color, path, None, scale, folder.name, f"{folder.name}/{base}", focal)
            )
    return items


def _middlebury_items(middlebury: list[tuple[str, Path]]) -> list[RgbdItem]:
    """The Middlebury 2014 scenes (calib.txt, im0.png, disp0[GT].pfm), one item each."""
    items: list[RgbdItem] = []
    variants = {name for name, _ in middlebury}
    for name, folder in middlebury:
        disparity = "disp0GT.pfm" if (folder / "disp0GT.pfm").is_file() else "disp0.pfm"
        calib = folder / "calib.txt"
        items.append(
            RgbdItem(
                folder / "im0.png",
                folder / disparity,
                calib,
                1.0,
                middlebury_scene(name, variants),
                name,
                read_middlebury_calib(calib)["f"],
            )
        )
    return items


def scan_rgbd_folder(
    root: Path, config: RgbdConfig, source_name: str
) -> tuple[list[RgbdItem], list[str]]:
    """All RGB-D pairs below ``root`` and the folders that had images but no recognised layout."""
    require_folder(root, source_name, "RGB-D folder")
    middlebury: list[tuple[str, Path]] = []
    items: list[RgbdItem] = []
    skipped: list[str] = []
    for folder_str, subfolders, files in os.walk(root):
        folder = Path(folder_str)
        relative = folder.relative_to(root).as_posix()
        if relative != "." and is_excluded(relative, config.exclude):
            subfolders[:] = []
            continue
        subfolders.sort()
        names = set(files)
        scale = config.depth_scales.get(folder.name, config.depth_scale)
        focal = config.focal_px_by_folder.get(folder.name, config.focal_px)
        disparity = next((n for n in ("disp0GT.pfm", "disp0.pfm") if n in names), None)
        if "calib.txt" in names and "im0.png" in names and disparity:
            middlebury.append((folder.name, folder))
            continue
        legacy = next(
            ((c, d) for c, d in LEGACY_MIDDLEBURY_PAIRS if c in names and d in names), None
        )
        if legacy:
            items.append(
                RgbdItem(
                    folder / legacy[0],
                    folder / legacy[1],
                    None,
                    1.0,
                    f"legacy/{folder.name}",
                    f"legacy/{folder.name}",
                    relative=True,
                )
            )
            continue
        if "color" in subfolders and "depth" in subfolders:
            items.extend(_color_depth_items(folder, scale, focal))
            subfolders[:] = [s for s in subfolders if s not in ("color", "depth")]
            continue
        found = _suffix_items(folder, files, scale, focal)
        items.extend(found)
        if not found and any(Path(n).suffix.lower() in IMAGE_EXTENSIONS for n in files):
            skipped.append(relative)
    items.extend(_middlebury_items(middlebury))
    return items, skipped


def middlebury_scene(name: str, all_names: set[str]) -> str:
    """``PianoL`` -> ``Piano`` when ``Piano`` exists too: variants of one scene are one scene."""
    if name and name[-1] in MIDDLEBURY_VARIANT_SUFFIXES and name[:-1] in all_names:
        return name[:-1]
    return name


def relative_depth_from_disparity(path: Path) -> np.ndarray:
    """1 / disparity of an 8-bit disparity image (0 = unknown -> NaN), median RELATIVE_MEDIAN_M."""
    disparity = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if disparity is None:
        raise DataError(f"cannot read disparity image {path}")
    depth = np.full(disparity.shape, np.nan, dtype=np.float32)
    known = disparity > 0
    if not known.any():
        raise DataError(f"disparity image {path} has no known pixel (all 0)")
    depth[known] = 1.0 / disparity[known].astype(np.float32)
    return depth * np.float32(RELATIVE_MEDIAN_M / np.median(depth[known]))


def load_rgbd_item(item: RgbdItem) -> tuple[np.ndarray, np.ndarray]:
    color = read_rgb(item.color)
    if item.calib is not None:
        depth = middlebury_depth_m(read_pfm(item.depth), read_middlebury_calib(item.calib))
    elif item.relative:
        depth = relative_depth_from_disparity(item.depth)
    else:
        depth = read_depth_m(item.depth, item.depth_scale)
    if depth.shape != color.shape[:2]:
        raise DataError(
            f"depth {item.depth} is {depth.shape[1]}x{depth.shape[0]} but colour "
            f"{item.color} is {color.shape[1]}x{color.shape[0]}: they must be registered "
            "and the same size"
        )
    return color, depth


class RgbdSource(DataSource):
    kind = "rgbd"
    has_depth = True

    def __init__(
        self, name: str, config: RgbdConfig, split: str, root: Path, cache_items: int = 64
    ):
        super().__init__(name, config, split)
        all_items, self.skipped = scan_rgbd_folder(root, config, name)
        if not all_items:
            raise DataError(
                f"data source '{name}': no RGB-D pairs below {root} (expected Middlebury "
                "2014 scene folders, color/ + depth/ folders, or N.png + N_depth.png files)"
            )
        raw_names = {item.name: item.scene for item in all_items if item.calib is not None}

        def canonical(scene: str) -> str:
            return raw_names.get(scene, scene)

        assignment = split_scenes([item.scene for item in all_items], config, name, canonical)
        unknown = sorted(set(config.val_items) - {item.name for item in all_items})
        if unknown:
            raise DataError(
                f"data.sources.{name}.val_items names {', '.join(unknown)}, not items of this "
                f"source; items look like: {', '.join(item.name for item in all_items[:5])}"
            )
        held_out = set(config.val_items)
        self.items = [
            item
            for item in all_items
            if (item.scene in assignment[split] and item.name not in held_out)
            or (split == "val" and item.name in held_out and item.scene in assignment["train"])
        ]
        self._cache = LruCache(cache_items)

    def scenes(self) -> list[str]:
        return sorted({item.scene for item in self.items})

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self._cache.get(index, lambda: load_rgbd_item(self.items[index]))

    def train_sample(self, rng: np.random.Generator, crop: int) -> Sample:
        index = int(rng.integers(len(self.items)))
        item = self.items[index]
        color, depth = self._load(index)
        (color,), depth, zoom = random_crop(
            [color], depth, crop, self.config.scale_range, rng, self.config.scale_reference_side
        )
        return hazed_sample(
            color,
            depth,
            self._haze(item),
            rng,
            f"{self.name}/{item.name}",
            item.focal_px * zoom,
            metric_depth=not item.relative,
        )

    def _haze(self, item: RgbdItem):
        """Relative depth has no metres for a fog visibility: it is hazed by the transmission at
        its median depth whatever the source's haze mode."""
        if item.relative and self.config.haze.visibility_range_m:
            return dataclasses.replace(self.config.haze, visibility_range_m=[])
        return self.config.haze

    def eval_sample(self, index: int, max_side: int, seed: int = 0) -> Sample:
        item = self.items[index]
        color, depth, zoom = resize_whole(*self._load(index), max_side)
        rng = np.random.default_rng(stable_seed(seed, self.name, item.name))
        return hazed_sample(
            color,
            depth,
            self._haze(item),
            rng,
            f"{self.name}/{item.name}",
            item.focal_px * zoom,
            metric_depth=not item.relative,
        )

    def describe(self) -> str:
        text = super().describe()
        if self.skipped:
            text += f"; skipped (no recognised RGB-D layout): {', '.join(self.skipped[:5])}"
            text += f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
        return text
