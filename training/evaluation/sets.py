"""The evaluation sets: each ``--data`` spec opened as a training source (training.data.SOURCES)
under fixed, stated haze, or as hazy photographs, vehicle views or road fog (training.road_fog)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from training import road_fog
from training.config import ConfigError, HazeConfig, apply_overrides, source_config
from training.data import SOURCES, DataSource, open_source
from training.data.common import FolderSourceConfig, Sample, no_depth, resize_max_side, to_float
from training.data.io import DataError, list_images, read_rgb
from training.data.procedural import vehicle_sample
from training.evaluation.options import EvaluateOptions

KINDS = (*SOURCES, "images", *road_fog.ROAD_KINDS, "vehicle")


FOLDER_KINDS = (
    "images",
    *(kind for kind, (config, _) in SOURCES.items() if issubclass(config, FolderSourceConfig)),
)
OUTDOOR_DEFAULT_VIEWS = 8
VEHICLE_DEFAULT_VIEWS = 15  # every camera with every fog of the cycle once


@dataclass
class EvalSet:
    name: str
    kind: str
    path: Path
    count: int
    samples: Iterator[Sample]
    scenes: list[str] = field(default_factory=list)


def detect_kind(path: Path) -> str:
    from training.data.reside import CLEAR_FOLDER_NAMES, HAZY_FOLDER_NAMES, find_subfolder

    if find_subfolder(path, HAZY_FOLDER_NAMES) and find_subfolder(path, CLEAR_FOLDER_NAMES):
        return "reside"
    if list_images(path) and not any(p.is_dir() for p in path.iterdir()):
        return "images"
    return "rgbd"


def parse_spec(spec: str) -> tuple[str, Path]:
    """(kind, path); for a kind without a folder (procedural, outdoor, vehicle) path is COUNT."""
    kind, sep, rest = spec.partition(":")
    if kind in KINDS and kind not in FOLDER_KINDS:
        default = VEHICLE_DEFAULT_VIEWS if kind == "vehicle" else OUTDOOR_DEFAULT_VIEWS
        return kind, Path(rest or str(default))
    if sep and kind in KINDS:
        path = Path(rest)
    else:
        kind, path = "", Path(spec)
    if not path.exists():
        raise DataError(f"--data {spec}: {path} does not exist")
    if not path.is_dir():
        raise DataError(f"--data {spec}: {path} is not a folder")
    return kind or detect_kind(path), path


def view_count(spec: str, count_text: Path) -> int:
    try:
        count = int(str(count_text))
    except ValueError:
        count = -1
    if count < 1:
        raise DataError(f"--data {spec}: expected {spec.partition(':')[0]}[:COUNT] with COUNT >= 1")
    return count


def evaluation_source(
    spec: str, kind: str, name: str, path: Path, keys: dict, options: list[str]
) -> DataSource:
    """A training source of ``kind`` set up for evaluation: ``keys`` (what the evaluation options
    set: fixed haze, held-out scenes, depth scales, ...) where the kind has them, then the
    ``--source-option`` values. The test split when scenes are named, else every item."""
    config_class = SOURCES[kind][0]
    own = {item.name for item in dataclasses.fields(config_class)}
    raw = {"kind": kind, **{key: value for key, value in keys.items() if key in own}}
    reads_folder = issubclass(config_class, FolderSourceConfig)
    if reads_folder:
        raw["path"] = str(path)
    try:
        config = source_config(apply_overrides(raw, options), f"--data {spec}")
    except ConfigError as exc:
        raise DataError(str(exc)) from exc
    # The renderer's views are its validation split; a folder's all its items or its test scenes.
    split = "val" if not reads_folder else ("test" if config.test_scenes else "train")
    return open_source(name, config, split, path if reads_folder else None, cache_items=0)


def _image_folder_set(spec: str, path: Path, max_side: int) -> EvalSet:
    """An ``images`` set: hazy pictures without ground truth."""
    files = list_images(path)
    if not files:
        raise DataError(f"--data {spec}: no images in {path}")

    def hazy_only() -> Iterator[Sample]:
        for file in files:
            hazy = to_float(resize_max_side(read_rgb(file), max_side))
            yield Sample(
                hazy, np.full_like(hazy, np.nan), no_depth(*hazy.shape[:2]), False, file.name
            )

    return EvalSet(path.name, "images", path, len(files), hazy_only())


def _vehicle_set(spec: str, path: Path, max_side: int, seed: int) -> EvalSet:
    """The ``vehicle`` set: the renderer's views from a vehicle's camera."""
    count = view_count(spec, path)

    def vehicle_views() -> Iterator[Sample]:
        for index in range(count):
            sample = vehicle_sample(index, max_side, seed)
            sample.name = sample.name.split("/", 1)[1]
            yield sample

    return EvalSet(
        "vehicle", "vehicle", Path("."), count, vehicle_views(), [f"view{i}" for i in range(count)]
    )


def _evaluation_source(
    spec: str,
    kind: str,
    path: Path,
    scenes: list[str],
    haze_t: float,
    depth_scales: dict | None,
    focal_px: dict | None,
    visibility_m: float,
    exclude: list[str],
    source_options: list[str],
):
    """The training data source behind a set of ``kind`` under its fixed evaluation haze, and
    the set's name."""
    name = path.name
    # Evaluation haze is fixed and stated: one density, neutral airlight, no noise or JPEG.
    fixed = dict(
        airlight_range=[0.9, 0.9],
        airlight_tint=0.0,
        nonhomogeneous_prob=0.0,
        noise_prob=0.0,
        jpeg_prob=0.0,
    )
    haze = dataclasses.asdict(HazeConfig(transmission_range=[haze_t, haze_t], **fixed))
    keys = {
        "haze": haze,
        "test_scenes": list(scenes),
        "depth_scales": dict(depth_scales or {}),
        "focal_px_by_folder": dict(focal_px or {}),
        "exclude": list(exclude),
    }
    if kind == "outdoor":
        # The renderer's fixed outdoor validation views (vehicle scale, sky +inf), fog of one V.
        outdoor_haze = dataclasses.asdict(
            HazeConfig(visibility_range_m=[visibility_m, visibility_m], **fixed)
        )
        keys = {
            "val_count": 0,
            "outdoor_val_count": view_count(spec, path),
            "outdoor_haze": outdoor_haze,
        }
        source, name = (
            evaluation_source(spec, "procedural", "outdoor", path, keys, list(source_options)),
            "outdoor",
        )
    elif kind == "procedural":
        keys = {"haze": haze, "val_count": view_count(spec, path), "outdoor_val_count": 0}
        source, name = evaluation_source(spec, kind, kind, path, keys, list(source_options)), kind
    else:
        source = evaluation_source(spec, kind, name, path, keys, list(source_options))
    return source, name


def open_set(
    spec: str,
    max_side: int,
    scenes: list[str],
    haze_t: float,
    seed: int,
    items: list[str] = (),
    depth_scales: dict | None = None,
    focal_px: dict | None = None,
    visibility_m: float = 300.0,
    exclude: list[str] = (),
    source_options: list[str] = (),
) -> EvalSet:
    kind, path = parse_spec(spec)
    if kind == "images":
        return _image_folder_set(spec, path, max_side)
    if kind == "vehicle":
        return _vehicle_set(spec, path, max_side, seed)
    source, name = _evaluation_source(
        spec,
        kind,
        path,
        scenes,
        haze_t,
        depth_scales,
        focal_px,
        visibility_m,
        exclude,
        source_options,
    )
    # --items names rgbd items; the sets of other kinds have no item names to choose from.
    listed = getattr(source, "items", None)
    names = (
        [getattr(item, "name", "") for item in listed] if listed is not None else [""] * len(source)
    )
    missing = sorted(set(items) - set(names))
    if missing:
        raise DataError(
            f"--data {spec}: --items {', '.join(missing)} not found; items look like "
            f"{', '.join(names[:4])}"
        )
    indices = [index for index, item_name in enumerate(names) if not items or item_name in items]
    if not indices:
        raise DataError(f"--data {spec}: no images found in {path}")

    def samples() -> Iterator[Sample]:
        for index in indices:
            sample = source.eval_sample(index, max_side, seed)
            sample.name = sample.name.split("/", 1)[1]
            yield sample

    return EvalSet(
        name,
        kind,
        Path(".") if kind in ("outdoor", "procedural") else path,
        len(indices),
        samples(),
        source.scenes(),
    )


def open_sets(options: EvaluateOptions) -> list[EvalSet]:
    """Every ``--data`` set, and with ``visibilities`` one set per visibility (named after it, so
    summary.md has a row per visibility): road sets (outdoor, drive) in fog of that visibility at
    each frame shape of ``aspects``, RGB-D sets at the same optical depths (training.road_fog)."""
    visibilities, aspects = list(options.visibilities), list(options.aspects)
    sets = []
    for spec in options.specs:
        kind, path = parse_spec(spec)
        if kind in road_fog.ROAD_KINDS and (visibilities or aspects or kind == "drive"):
            count = view_count(spec, path)
            for aspect in aspects or ["4:3"]:
                sets += road_sets(
                    kind,
                    count,
                    road_fog.frame_size(aspect, options.max_side),
                    aspect,
                    options.seed,
                    list(visibilities) or [options.visibility_m],
                )
            continue
        hazed_here = kind not in (
            "reside",
            "images",
            "vehicle",
        )  # photographs, vehicle views: their own haze
        for visibility in (visibilities if hazed_here else ()) or [None]:
            density = (
                options.haze_t if visibility is None else road_fog.median_transmission(visibility)
            )
            eval_set = open_set(
                spec,
                options.max_side,
                list(options.scenes),
                density,
                options.seed,
                list(options.items),
                options.depth_scales,
                options.focal_px,
                options.visibility_m,
                list(options.exclude),
                list(options.source_options),
            )
            if visibility is not None:
                eval_set.name += f" {road_fog.visibility_label(visibility)}"
            sets.append(eval_set)
    return sets


def road_sets(
    kind: str, count: int, size: tuple[int, int], aspect: str, seed: int, visibilities: list[float]
) -> list[EvalSet]:
    """One road set per visibility over the same clear frames, rendered once on first use."""
    rendered: list = []

    def samples(visibility: float) -> Iterator[Sample]:
        if not rendered:
            rendered.extend(road_fog.render_road(kind, count, *size, seed))
        yield from road_fog.road_samples(rendered, visibility)

    names = [f"view{index}" for index in range(count)]
    return [
        EvalSet(
            f"{kind} {aspect} {road_fog.visibility_label(visibility)}",
            kind,
            Path("."),
            count,
            samples(visibility),
            names,
        )
        for visibility in visibilities
    ]


def training_overlap(checkpoint_provenance: dict, eval_set: EvalSet) -> list[str]:
    """Scenes of this evaluation set that the checkpoint saw in training (by source path)."""
    config = checkpoint_provenance.get("config") or {}
    data = config.get("data") or {}
    root = Path(data.get("root", "."))
    trained = (checkpoint_provenance.get("data") or {}).get("train") or {}
    overlap = []
    for name, source in (data.get("sources") or {}).items():
        if name not in trained or not source.get("path"):
            continue
        source_path = (
            Path(source["path"]) if Path(source["path"]).is_absolute() else root / source["path"]
        )
        try:
            trained_path, evaluated_path = source_path.resolve(), eval_set.path.resolve()
            same = trained_path == evaluated_path or trained_path in evaluated_path.parents
        except OSError:
            same = False
        if same:
            overlap += sorted(set(trained[name].get("scenes", [])) & set(eval_set.scenes))
    return overlap
