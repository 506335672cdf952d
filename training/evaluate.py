"""Evaluate a checkpoint through the engine the node deploys, optionally beside the DCP baseline.

    python -m training.evaluate --checkpoint dehaze_ros/checkpoints/default.pt \\
        --data ../shared/data/sots_indoor --data ../shared/data/reside_outdoor \\
        --data rgbd:../shared/data/rgbd/middlebury2014 --scenes Recycle,Playtable \\
        --baseline dcp --out eval_output/default

``--data`` (repeatable) is ``[kind:]PATH``; kind is found from the layout when left out:
  reside  hazy/ + GT/ (or gt/, clear/), optional depth/   (file-name mapping as in training)
  rgbd    clear RGB + metric depth, hazed with the ASM at a fixed, stated density (``--haze-t``)
  rosbag2 colour + depth topics of bags, hazed as rgbd; name the topics with
          ``--source-option color_topic=... --source-option depth_topic=...``
  images  hazy photographs without ground truth: image grids only
  procedural[:COUNT]  the renderer's fixed indoor validation views (no path), hazed as rgbd
  outdoor[:COUNT]  the renderer's fixed vehicle-scale outdoor views (no path), fog of visibility
          ``--visibility-m``; sky is +inf, scored as "sky beyond" (REP-117)
  drive[:COUNT]  a driving sequence through one vehicle-scale scene (training.road_fog), fog as
          outdoor
  vehicle[:COUNT]  the renderer's fixed views from vehicle cameras (1.2-2.0 m above the road,
          pitch within +-5 degrees; 1242x375, 16:9 and 4:3 in turn) at their native size, fog
          from 50 m visibility to clear air in turn (training.data.procedural.vehicle_sample)
``--visibilities 30,50,100,150,300,clear`` evaluates every set once per visibility, one summary row
each (training.road_fog): the road sets (outdoor, drive) at the frame shapes of ``--aspects``
(4:3, 16:9, 1242x375 or WxH), the RGB-D sets at the same optical depths; photographs with their
own haze (reside, images) and the vehicle views (their own cycle of fog) once.
Every kind of training source opens here (training.data.SOURCES); ``--source-option KEY=VALUE``
sets a key of its data.sources config (as in a training config) for every set whose kind has it.
Images are first resized so their longer side is at most ``--max-side`` (INTER_AREA; depth
nearest) and every metric is computed at that resolution; ``--engine-max-side`` additionally
runs the networks on a smaller copy, as a deployed node with ``max_side`` does, and the depth
runs at ``--engine-depth-max-side`` (the node's ``depth_max_side``, 320) whatever the dehazing size.

Scale sources (``--scale-sources``, dehaze_ros.metric_scale): ``learned`` is the network's own
metres; ``ground`` rescales them by the ground plane with the camera height and pitch of each
view (rendered sets know them; ``--camera-height-m`` / ``--camera-pitch-deg`` give them for the
others) and uses the plane's depth; ``ground-height`` knows the height only (the pitch is
estimated, scale only). Each is a row of its own, each view a stream of one frame. Sets without a
known camera height (RGB-D, Middlebury) get the learned row only. ``--max-depth-m`` scores only
true depths up to that distance (80: the model's range and the KITTI convention; farther truth
is +inf in REP-117 terms, counted in "sky beyond" when predicted so).

Outputs in ``--out``: per_image.csv, summary.md (means per set and method; "sky beyond" pooled
over the set's sky pixels), grids/ (hazy | dehazed | DCP | GT | depth | GT depth). Metrics: see
training.metrics. The rows "hazy input" score the input itself. DCP depth is relative (beta x
metres): only its median-scaled depth metrics mean anything, the metric ones are left empty.
``--depth-from-haze`` sets the engine's depth_from_haze for the model (its default is the node's);
``ablation`` runs it fused and adds two depth-only rows from the same network pass settings: the
depth network alone ("..., depth_from_haze off") and the model's own -ln t read as relative depth
("-ln t of model (...)"), so one table holds the network, -ln t (ours and, with --baseline dcp,
DCP's) and the fusion.
``--checkpoint`` also takes a run's best.pt/last.pt (its EMA weights are exported to a temporary
file first).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from dehaze_ros.anchor_scale import AnchorCloud
from dehaze_ros.checkpoint import CheckpointError, load_checkpoint
from dehaze_ros.dense_fog import DEFAULT as DENSE_FOG_DEFAULT
from dehaze_ros.dense_fog import MODES as DENSE_FOG_MODES
from dehaze_ros.engine import (
    BACKENDS,
    DEFAULT_DEPTH_MAX_SIDE,
    DEFAULT_SIZE_RULE,
    DEFAULT_UPSAMPLING,
    DEPTH_FROM_HAZE,
    PRECISIONS,
    SIZE_RULES,
    UPSAMPLING,
    DehazeEngine,
    EngineConfig,
    EngineError,
    EngineResult,
)
from dehaze_ros.metric_scale import (
    SUPPORT_ANCHORED,
    SUPPORT_BOUNDED,
    SUPPORT_LEARNED,
    SUPPORT_PLANE,
    SUPPORT_SCALED,
    Mounting,
)
from dehaze_ros.sim.lidar import LidarModel, synthetic_lidar
from dehaze_ros.upsampling import upsample_depth
from training import road_fog
from training.config import ConfigError, HazeConfig, apply_overrides, source_config
from training.data import SOURCES, DataSource, open_source
from training.data.common import FolderSourceConfig, Sample, no_depth, resize_max_side, to_float
from training.data.io import DataError, list_images, read_rgb
from training.data.procedural import vehicle_sample
from training.metrics import DEPTH_METRICS, depth_metrics, psnr, ssim
from training.run_state import TrainingError, load_training_file
from training.visualize import depth_tile, label_tile, make_grid, rgb_tile

KINDS = (*SOURCES, "images", *road_fog.ROAD_KINDS, "vehicle")
# What a pixel's depth rests on (EngineResult.depth_support), scored apart (depth/confidence).
SUPPORT_NAMES = {
    SUPPORT_LEARNED: "learned",
    SUPPORT_SCALED: "scaled",
    SUPPORT_BOUNDED: "bounded",
    SUPPORT_PLANE: "plane",
    SUPPORT_ANCHORED: "anchored",
}
FOLDER_KINDS = (
    "images",
    *(kind for kind, (config, _) in SOURCES.items() if issubclass(config, FolderSourceConfig)),
)
OUTDOOR_DEFAULT_VIEWS = 8
# --depth-from-haze: the engine's settings, or both of them plus the model's -ln t, side by side.
DEPTH_FROM_HAZE_CHOICES = (*DEPTH_FROM_HAZE, "ablation")

VEHICLE_DEFAULT_VIEWS = 15  # every camera with every fog of the cycle once
CSV_COLUMNS = (
    "set",
    "image",
    "method",
    "width",
    "height",
    "psnr",
    "ssim",
    "abs_rel",
    "rmse",
    "delta1",
    "abs_rel_median",
    "rmse_median",
    "delta1_median",
    "median_ratio",
    "sky_beyond",
    "sky_pixels",
    "depth_units",
    "focal",
    "scale",
    "scale_factor",
    *(f"{key}_{name}" for name in SUPPORT_NAMES.values() for key in ("share", "delta1")),
    "ms",
)
# The scale sources training.evaluate can report, each a row per view (module docstring).
SCALE_SOURCES = ("learned", "ground", "ground-height", "anchors", "anchors-scale", "anchors-shift")
SCALE_LABELS = {
    "ground": "ground plane",
    "ground-height": "ground plane, pitch estimated",
    "anchors": "anchors",
    "anchors-scale": "anchors, scale only",
    "anchors-shift": "anchors, scale + inverse-depth shift",
}
# How each anchor row fits the points (EngineConfig.anchor_fit, anchor_refine): the node's
# default, and the two simpler fits it is measured against.
ANCHOR_VARIANTS = {
    "anchors": ("scale", True),
    "anchors-scale": ("scale", False),
    "anchors-shift": ("scale_shift", False),
}
# The median pred/true band of the ground plane's gate (issue 26): the share of views inside it.
MEDIAN_BAND = (0.9, 1.1)


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


def parse_folder_values(text: str, option: str) -> dict[str, float]:
    """``name=value,name=value`` (per-folder depth scales and focal lengths) -> dict."""
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"{option}: expected FOLDER=NUMBER[,FOLDER=NUMBER...], got {part!r}")
    return values


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


def open_sets(
    specs: list[str],
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
    visibilities: list[float] = (),
    aspects: list[str] = (),
) -> list[EvalSet]:
    """Every ``--data`` set, and with ``visibilities`` one set per visibility (named after it, so
    summary.md has a row per visibility): road sets (outdoor, drive) in fog of that visibility at
    each frame shape of ``aspects``, RGB-D sets at the same optical depths (training.road_fog)."""
    sets = []
    for spec in specs:
        kind, path = parse_spec(spec)
        if kind in road_fog.ROAD_KINDS and (visibilities or aspects or kind == "drive"):
            count = view_count(spec, path)
            for aspect in aspects or ["4:3"]:
                sets += road_sets(
                    kind,
                    count,
                    road_fog.frame_size(aspect, max_side),
                    aspect,
                    seed,
                    list(visibilities) or [visibility_m],
                )
            continue
        hazed_here = kind not in (
            "reside",
            "images",
            "vehicle",
        )  # photographs, vehicle views: their own haze
        for visibility in (visibilities if hazed_here else ()) or [None]:
            density = haze_t if visibility is None else road_fog.median_transmission(visibility)
            eval_set = open_set(
                spec,
                max_side,
                scenes,
                density,
                seed,
                items,
                depth_scales,
                focal_px,
                visibility_m,
                exclude,
                source_options,
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


def finite_depth(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """REP-117 range markers back to numbers for scoring: +inf (beyond far) is far, -inf near.
    Dropping them instead would hide exactly the pixels the model got wrong."""
    depth = depth.astype(np.float64)
    depth[np.isposinf(depth)] = far
    depth[np.isneginf(depth)] = near
    return depth


def score(
    dehazed: np.ndarray | None,
    depth: np.ndarray | None,
    depth_units: str,
    sample: Sample,
    depth_range: tuple[float, float],
    max_depth_m: float = math.inf,
    support: np.ndarray | None = None,
) -> dict:
    """The metrics of one method on one sample; ``max_depth_m``: only true depths up to it count
    (the "sky beyond" share still covers the sky); ``support``: the engine's depth_support, for
    the share and delta<1.25 of each kind of pixel."""
    row: dict = {}
    if dehazed is not None and not np.isnan(sample.clear).all():
        row["psnr"], row["ssim"] = psnr(dehazed, sample.clear), ssim(dehazed, sample.clear)
    if depth is not None and sample.has_depth:
        predicted = finite_depth(depth, *depth_range)
        metrics = depth_metrics(predicted, sample.depth_m, max_m=max_depth_m)
        if support is not None and depth_units == "meters" and sample.metric_depth:
            row.update(support_scores(predicted, sample.depth_m, support, max_depth_m))
        # Metric columns need metres on both sides: not for relative depth (DCP), nor for sets whose
        # ground truth is right only up to a scale (Middlebury 2001-2006).
        metric = depth_units == "meters" and sample.metric_depth
        for key in DEPTH_METRICS:
            row[f"{key}_median"] = metrics[f"{key}_median"]
            if metric:
                row[key] = metrics[key]
        if metric and metrics.get("median_scale"):
            row["median_ratio"] = 1.0 / metrics["median_scale"]  # predicted / true median
        sky = np.isposinf(sample.depth_m)
        if sky.any() and metric:
            # REP-117: sky is beyond the range, +inf (a finite value is a wall of sky in `points`)
            row["sky_beyond"] = float(
                np.mean(np.isposinf(depth[sky]) | (depth[sky] > depth_range[1]))
            )
            row["sky_pixels"] = int(sky.sum())
    row["depth_units"] = depth_units if depth is not None else ""
    return row


def method_label(method: str, engine: DehazeEngine) -> str:
    if method == "dcp":
        return "dcp"
    label = f"model ({engine.model_name})"
    return f"{label}, depth_from_haze off" if method == "network depth" else label


def transmission_depth(result: EngineResult, height: int, width: int) -> np.ndarray:
    """The model's -ln t as relative depth (beta x metres), at the input size as the engine
    upsamples depth (nearest): what the DCP's depth is, made from the model's transmission."""
    optical_depth = -np.log(np.clip(result.transmission, 1e-6, 1.0)).astype(np.float32)
    return upsample_depth(optical_depth, height, width)


def support_scores(
    predicted: np.ndarray, truth: np.ndarray, support: np.ndarray, max_depth_m: float
) -> dict:
    """Per kind of pixel (SUPPORT_NAMES): its share of the scored pixels and its delta<1.25."""
    scored = (
        np.isfinite(truth)
        & (truth > 1e-3)
        & (truth <= max_depth_m)
        & np.isfinite(predicted)
        & (predicted > 0)
    )
    total = max(int(scored.sum()), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        good = np.maximum(predicted / truth, truth / predicted) < 1.25
    values = {}
    for code, name in SUPPORT_NAMES.items():
        mine = scored & (support == code)
        values[f"share_{name}"] = float(mine.sum() / total)
        values[f"delta1_{name}"] = float(good[mine].mean()) if mine.any() else math.nan
    return values


def view_mounting(
    sample: Sample, source: str, height_m: float, pitch_deg: float
) -> Mounting | None:
    """The camera mounting a scale source uses for this view (the view's own, else the options'),
    or None when the source cannot run on it (no known camera height)."""
    if source == "learned" or source in ANCHOR_VARIANTS:
        return Mounting()
    height = sample.camera_height_m if math.isfinite(sample.camera_height_m) else height_m
    if not (math.isfinite(height) and height > 0):
        return None
    if source == "ground-height":
        return Mounting(height)
    pitch = sample.camera_pitch_deg if math.isfinite(sample.camera_pitch_deg) else pitch_deg
    return Mounting(height, pitch)


def view_anchors(sample: Sample, range_m: float, seed: int) -> AnchorCloud | None:
    """The synthetic LiDAR of a view (its exact depth, its focal length, principal point at the
    centre as the sets' cameras have it), or None when the view has no metric depth or focal."""
    if not (sample.has_depth and sample.metric_depth and sample.focal_px > 0):
        return None
    points = synthetic_lidar(
        sample.depth_m,
        sample.focal_px,
        model=LidarModel(max_range_m=range_m),
        rng=np.random.default_rng(seed),
    )
    return AnchorCloud.of(points)


def focal_column(engine: DehazeEngine, result) -> str:
    """Where the metres came from: a known focal length, an assumed field of view, or neither
    (relative depth, or a checkpoint without a camera model)."""
    if result.depth is None or result.depth_units != "meters" or not engine.canonical_focal_px:
        return "n/a"
    return "assumed" if result.focal_assumed else "known"


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["method"]), []).append(row)
    summary = []
    for (set_name, method), members in groups.items():
        entry = {"set": set_name, "method": method, "n": len(members)}
        for key in (
            "psnr",
            "ssim",
            "abs_rel",
            "rmse",
            "delta1",
            "abs_rel_median",
            "delta1_median",
            "median_ratio",
            "ms",
            *(f"{k}_{name}" for name in SUPPORT_NAMES.values() for k in ("share", "delta1")),
        ):
            values = [
                r[key] for r in members if isinstance(r.get(key), float) and math.isfinite(r[key])
            ]
            entry[key] = float(np.mean(values)) if values else math.nan
        # Issue 26's gate is on every view, which a mean hides: the share inside the band, extremes.
        ratios = [r["median_ratio"] for r in members if isinstance(r.get("median_ratio"), float)]
        entry["median_in_band"] = (
            float(np.mean([MEDIAN_BAND[0] <= v <= MEDIAN_BAND[1] for v in ratios]))
            if ratios
            else math.nan
        )
        entry["median_ratio_min"] = min(ratios, default=math.nan)
        entry["median_ratio_max"] = max(ratios, default=math.nan)
        # Not a mean over images: the share of all true-sky pixels of the set predicted beyond the
        # range (an image with a sliver of sky weighs as little as its sliver), and the worst image.
        sky_rows = [r for r in members if r.get("sky_pixels")]
        sky_pixels = sum(r["sky_pixels"] for r in sky_rows)
        entry["sky_beyond"] = (
            sum(r["sky_beyond"] * r["sky_pixels"] for r in sky_rows) / sky_pixels
            if sky_pixels
            else math.nan
        )
        entry["sky_beyond_worst"] = min((r["sky_beyond"] for r in sky_rows), default=math.nan)
        summary.append(entry)
    return summary


def markdown_table(summary: list[dict]) -> str:
    headers = (
        "set",
        "method",
        "n",
        "PSNR dB",
        "SSIM",
        "AbsRel",
        "RMSE m",
        "δ<1.25",
        "AbsRel (med)",
        "δ<1.25 (med)",
        "median pred/true",
        "min",
        "max",
        "views in 0.9-1.1",
        "sky beyond",
        "sky beyond (worst image)",
        "ms/image",
    )
    keys = (
        "set",
        "method",
        "n",
        "psnr",
        "ssim",
        "abs_rel",
        "rmse",
        "delta1",
        "abs_rel_median",
        "delta1_median",
        "median_ratio",
        "median_ratio_min",
        "median_ratio_max",
        "median_in_band",
        "sky_beyond",
        "sky_beyond_worst",
        "ms",
    )
    formats = {
        "psnr": "{:.2f}",
        "ssim": "{:.3f}",
        "abs_rel": "{:.3f}",
        "rmse": "{:.3f}",
        "delta1": "{:.3f}",
        "abs_rel_median": "{:.3f}",
        "delta1_median": "{:.3f}",
        "median_ratio": "{:.2f}",
        "median_ratio_min": "{:.2f}",
        "median_ratio_max": "{:.2f}",
        "median_in_band": "{:.2f}",
        "sky_beyond": "{:.2f}",
        "sky_beyond_worst": "{:.2f}",
        "ms": "{:.0f}",
    }
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for entry in summary:
        cells = []
        for key in keys:
            value = entry[key]
            if key in formats:
                cells.append("–" if not math.isfinite(value) else formats[key].format(value))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def support_table(summary: list[dict]) -> str:
    """What each kind of pixel is worth (depth/confidence's table): share of the scored pixels
    and delta<1.25, per set and method that reported depth_support."""
    names = list(SUPPORT_NAMES.values())
    lines = [
        "| set | method | " + " | ".join(f"{name}: share, δ<1.25" for name in names) + " |",
        "|" + "---|" * (2 + len(names)),
    ]
    for entry in summary:
        if not any(math.isfinite(entry.get(f"share_{name}", math.nan)) for name in names):
            continue
        cells = []
        for name in names:
            share, good = entry[f"share_{name}"], entry[f"delta1_{name}"]
            cells.append(
                "–"
                if not math.isfinite(share) or share == 0
                else f"{share:.2f}, {good:.2f}"
                if math.isfinite(good)
                else f"{share:.2f}, –"
            )
        lines.append(f"| {entry['set']} | {entry['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


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


def resolve_checkpoint(path: str, workdir: Path) -> str:
    """A deployable checkpoint path; a run's training file is exported (EMA weights) first."""
    try:
        load_checkpoint(path)
        return path
    except CheckpointError as exc:
        from training.export import export_checkpoint  # only for a run's training file

        try:
            load_training_file(path)
        except TrainingError:
            raise exc from None
        exported = workdir / "exported_for_evaluation.pt"
        export_checkpoint(path, exported)
        return str(exported)


def _check_evaluate_options(
    checkpoint: str | None,
    baseline: str | None,
    depth_from_haze: str,
    scale_sources: list[str],
    camera_height_m: float,
    camera_pitch_deg: float,
) -> None:
    """Refuse an evaluation that has nothing to run or an option it does not know."""
    if not checkpoint and not baseline:
        raise ValueError("nothing to evaluate: give --checkpoint and/or --baseline dcp")
    if depth_from_haze not in DEPTH_FROM_HAZE_CHOICES:
        raise ValueError(
            f"depth_from_haze must be one of {DEPTH_FROM_HAZE_CHOICES}, got {depth_from_haze!r}"
        )
    unknown = sorted(set(scale_sources) - set(SCALE_SOURCES))
    if unknown or not scale_sources:
        raise ValueError(
            f"scale sources must be some of {', '.join(SCALE_SOURCES)}, got {list(scale_sources)}"
        )
    Mounting(0.0 if math.isnan(camera_height_m) else camera_height_m, camera_pitch_deg).check()


def _build_engines(
    checkpoint: str | None,
    baseline: str | None,
    workdir: Path,
    ablation: bool,
    engine_max_side: int,
    device: str,
    upsampling: str,
    precision: str,
    engine_depth_max_side: int,
    depth_from_haze: str,
    backend: str,
    engine_size_rule: str,
    engine_dense_fog: str,
    onnx_model: str = "",
) -> tuple[dict[str, DehazeEngine], dict]:
    """The engines to compare, by method ("model", "network depth", "dcp"), and the checkpoint's
    provenance ({} without a checkpoint)."""
    engines: dict[str, DehazeEngine] = {}
    provenance: dict = {}
    if checkpoint:
        deployable = resolve_checkpoint(checkpoint, workdir)
        model_config = EngineConfig(
            model="checkpoint",
            checkpoint=deployable,
            backend=backend,
            onnx_model=onnx_model,
            device=device,
            precision=precision,
            max_side=engine_max_side,
            size_rule=engine_size_rule,
            dense_fog=engine_dense_fog,
            depth_max_side=engine_depth_max_side,
            upsampling=upsampling,
            warmup=1,
            depth_from_haze="fuse" if ablation else depth_from_haze,
        )
        engines["model"] = DehazeEngine(model_config)
        provenance = engines["model"].checkpoint.provenance
        if ablation:
            # The same loaded networks, the depth left as the network made it.
            engines["network depth"] = DehazeEngine(
                dataclasses.replace(model_config, depth_from_haze="off", warmup=0),
                backend=engines["model"].backend,
            )
    if baseline == "dcp":
        engines["dcp"] = DehazeEngine(
            EngineConfig(
                model="dcp",
                max_side=engine_max_side,
                upsampling=upsampling,
                size_rule=engine_size_rule,
                depth_max_side=engine_depth_max_side,
                warmup=0,
            )
        )
    return engines, provenance


def _run_engines(
    index: int,
    sample,
    hazy_u8: np.ndarray,
    base: dict,
    engines: dict[str, DehazeEngine],
    rows: list[dict],
    seed: int,
    scale_sources: list[str],
    camera_height_m: float,
    camera_pitch_deg: float,
    max_depth_m: float,
    anchor_range_m: float,
) -> tuple[dict, object]:
    """One row per engine and scale source on one view; return the results by row label and the
    model's first result (None without one)."""
    outputs = {}
    model_result = None
    for method, engine in engines.items():
        # Scale sources apply to the model's metric depth; DCP and the ablation's
        # network-alone row keep the learned scale.
        sources = list(scale_sources) if method == "model" else ["learned"]
        for source in sources:
            mounting = view_mounting(sample, source, camera_height_m, camera_pitch_deg)
            if mounting is None:
                continue  # no known camera height: no ground on this view
            anchors = None
            if source in ANCHOR_VARIANTS:
                anchors = view_anchors(sample, anchor_range_m, seed * 100003 + index)
                if anchors is None:
                    continue  # no metric depth or focal length: no LiDAR to simulate
                fit, refine = ANCHOR_VARIANTS[source]
                engine.config = dataclasses.replace(
                    engine.config, anchor_fit=fit, anchor_refine=refine
                )
            # Every view is a stream of one frame: nothing smoothed carries over.
            engine.reset_scale()
            start = time.perf_counter()
            # The image's own focal length where the set knows it (metric depth needs
            # it); the dehazed image once per view (the scale changes depth only).
            result = engine.process(
                hazy_u8,
                want_dehazed=method != "network depth" and source == sources[0],
                focal_px=sample.focal_px if sample.focal_px > 0 else None,
                mounting=mounting,
                anchors=anchors,
            )
            elapsed_ms = (time.perf_counter() - start) * 1e3
            label = method_label(method, engine)
            if source != "learned":
                label += f", {SCALE_LABELS[source]}"
            outputs[label] = result
            if method == "model" and source == sources[0]:
                model_result = result
            scale = result.scale
            rows.append(
                {
                    **base,
                    "method": label,
                    "ms": elapsed_ms,
                    "focal": focal_column(engine, result),
                    "scale": scale.describe() if scale is not None else "",
                    "scale_factor": scale.factor if scale is not None else math.nan,
                    **score(
                        result.dehazed,
                        result.depth,
                        result.depth_units,
                        sample,
                        engine.depth_range,
                        max_depth_m,
                        result.depth_support,
                    ),
                }
            )
    return outputs, model_result


def _evaluate_sample(
    eval_set,
    index: int,
    sample,
    engines: dict[str, DehazeEngine],
    rows: list[dict],
    out_dir: Path,
    ablation: bool,
    seed: int,
    grids: int,
    scale_sources: list[str],
    camera_height_m: float,
    camera_pitch_deg: float,
    max_depth_m: float,
    anchor_range_m: float,
) -> None:
    """Run every engine (and scale source) on one view: append its rows, save its grid."""
    hazy_u8 = rgb_tile(sample.hazy)
    height, width = hazy_u8.shape[:2]
    base = {
        "set": eval_set.name,
        "image": sample.name,
        "width": width,
        "height": height,
    }
    has_ground_truth = not np.isnan(sample.clear).all()
    if has_ground_truth:
        rows.append(
            {
                **base,
                "method": "hazy input",
                **score(hazy_u8, None, "", sample, (0.1, 80.0)),
            }
        )
    outputs, model_result = _run_engines(
        index,
        sample,
        hazy_u8,
        base,
        engines,
        rows,
        seed,
        scale_sources,
        camera_height_m,
        camera_pitch_deg,
        max_depth_m,
        anchor_range_m,
    )
    if ablation and model_result is not None and model_result.transmission is not None:
        model = engines["model"]
        optical_depth = transmission_depth(model_result, *hazy_u8.shape[:2])
        rows.append(
            {
                **base,
                "method": f"-ln t of model ({model.model_name})",
                **score(None, optical_depth, "relative", sample, (0.0, math.inf)),
            }
        )
    if index < grids:
        save_grid(
            out_dir / "grids" / eval_set.name / f"{Path(sample.name).stem}.png",
            sample,
            outputs,
            engines.get("model"),
        )


def _summary_markdown(
    summary,
    checkpoint: str | None,
    provenance: dict,
    baseline: str | None,
    engines: dict[str, DehazeEngine],
    max_side: int,
    engine_max_side: int,
    engine_depth_max_side: int,
    haze_t: float,
    seed: int,
    visibility_m: float,
    warnings: list[str],
    depth_from_haze: str,
    max_depth_m: float,
    scale_sources: list[str],
    visibilities: list[float],
    aspects: list[str],
) -> str:
    """summary.md: the header (what was run, how), the summary table and the depth supports."""
    header = summary_header(
        checkpoint,
        provenance,
        baseline,
        engines,
        max_side,
        engine_max_side,
        engine_depth_max_side,
        haze_t,
        seed,
        visibility_m,
        warnings,
        depth_from_haze,
    )
    if math.isfinite(max_depth_m):
        header.insert(
            -1, f"- depth metrics count true depths up to {max_depth_m:g} m only (--max-depth-m)"
        )
    if list(scale_sources) != ["learned"]:
        header.insert(
            -1, f"- scale sources: {', '.join(scale_sources)}; each view a stream of one frame"
        )
    if visibilities or aspects:
        header += [road_fog.describe(visibilities, aspects), ""]
    header += [markdown_table(summary), ""]
    supports = support_table(summary)
    if supports:
        header += [
            "## What each pixel's depth rests on (share of scored pixels, δ<1.25)",
            "",
            supports,
            "",
        ]
    return "\n".join(header)


def evaluate(
    checkpoint: str | None,
    specs: list[str],
    out_dir: Path,
    baseline: str | None = None,
    max_side: int = 1024,
    engine_max_side: int = 0,
    device: str = "auto",
    scenes: list[str] = (),
    haze_t: float = 0.4,
    seed: int = 0,
    grids: int = 4,
    log=print,
    items: list[str] = (),
    depth_scales: dict | None = None,
    focal_px: dict | None = None,
    visibility_m: float = 300.0,
    exclude: list[str] = (),
    source_options: list[str] = (),
    upsampling: str = DEFAULT_UPSAMPLING,
    precision: str = "auto",
    engine_depth_max_side: int = DEFAULT_DEPTH_MAX_SIDE,
    depth_from_haze: str = EngineConfig.depth_from_haze,
    backend: str = "torch",
    scale_sources: list[str] = ("learned",),
    camera_height_m: float = math.nan,
    camera_pitch_deg: float = math.nan,
    max_depth_m: float = math.inf,
    anchor_range_m: float = LidarModel.max_range_m,
    visibilities: list[float] = (),
    aspects: list[str] = (),
    engine_size_rule: str = DEFAULT_SIZE_RULE,
    engine_dense_fog: str = DENSE_FOG_DEFAULT,
    onnx_model: str = "",
) -> dict:
    """Run every method on every set; write per_image.csv, summary.md and grids; return the summary.
    ``scale_sources``: rows of the model per scale source (SCALE_SOURCES); ``camera_height_m`` and
    ``camera_pitch_deg``: the mounting for views that do not bring their own; ``visibilities`` and
    ``aspects``: the fogs and frame shapes of training.road_fog (open_sets). Anchor rows get a
    synthetic LiDAR (dehaze_ros.sim.lidar) made from each view's exact depth, returns up to
    ``anchor_range_m``, the same points for every anchor row of a view."""
    _check_evaluate_options(
        checkpoint, baseline, depth_from_haze, scale_sources, camera_height_m, camera_pitch_deg
    )
    ablation = depth_from_haze == "ablation"
    with tempfile.TemporaryDirectory() as workdir:
        # Every input is checked (sets opened, checkpoint loaded) before out_dir exists: a typo
        # must not leave an empty output folder behind.
        sets = open_sets(
            specs,
            max_side,
            list(scenes),
            haze_t,
            seed,
            list(items),
            depth_scales,
            focal_px,
            visibility_m,
            list(exclude),
            list(source_options),
            list(visibilities),
            list(aspects),
        )
        engines, provenance = _build_engines(
            checkpoint,
            baseline,
            Path(workdir),
            ablation,
            engine_max_side,
            device,
            upsampling,
            precision,
            engine_depth_max_side,
            depth_from_haze,
            backend,
            engine_size_rule,
            engine_dense_fog,
            onnx_model,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict] = []
        warnings = []
        for eval_set in sets:
            overlap = training_overlap(provenance, eval_set) if provenance else []
            if overlap:
                warnings.append(
                    f"{eval_set.name}: scenes {', '.join(overlap)} were used to TRAIN this "
                    "checkpoint; its numbers on them are not a test result"
                )
                log("WARNING: " + warnings[-1])
            log(f"{eval_set.name} ({eval_set.kind}, {eval_set.count} images)")
            for index, sample in enumerate(eval_set.samples):
                _evaluate_sample(
                    eval_set,
                    index,
                    sample,
                    engines,
                    rows,
                    out_dir,
                    ablation,
                    seed,
                    grids,
                    scale_sources,
                    camera_height_m,
                    camera_pitch_deg,
                    max_depth_m,
                    anchor_range_m,
                )
        for engine in engines.values():
            engine.close()
    write_csv(out_dir / "per_image.csv", rows)
    summary = summarise(rows)
    (out_dir / "summary.md").write_text(
        _summary_markdown(
            summary,
            checkpoint,
            provenance,
            baseline,
            engines,
            max_side,
            engine_max_side,
            engine_depth_max_side,
            haze_t,
            seed,
            visibility_m,
            warnings,
            depth_from_haze,
            max_depth_m,
            scale_sources,
            visibilities,
            aspects,
        )
    )
    log("\n" + markdown_table(summary))
    log(f"\nwrote {out_dir / 'summary.md'}, {out_dir / 'per_image.csv'}, {out_dir / 'grids'}")
    return {"summary": summary, "rows": rows, "warnings": warnings}


def summary_header(
    checkpoint: str | None,
    provenance: dict,
    baseline: str | None,
    engines: dict[str, DehazeEngine],
    max_side: int,
    engine_max_side: int,
    engine_depth_max_side: int,
    haze_t: float,
    seed: int,
    visibility_m: float,
    warnings: list[str],
    depth_from_haze: str = "",
) -> list[str]:
    """summary.md above the table: what was evaluated, at which resolution, on which engine."""
    networks_at = (
        f"longer side {engine_max_side} px (engine max_side)"
        if engine_max_side
        else "the same size"
    )
    depth_at = (
        f"longer side {engine_depth_max_side} px (engine depth_max_side)"
        if engine_depth_max_side
        else "the same size as the dehazing"
    )
    return [
        "# Evaluation",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- checkpoint: {checkpoint or '(none)'}"
        + (f" (model {engines_description(provenance)})" if provenance else ""),
        f"- baseline: {baseline or '(none)'}",
        f"- resolution: longer side at most {max_side} px (metrics at that size); networks at "
        f"{networks_at}; depth at {depth_at}",
        "- engine: "
        + "; ".join(
            f"{name} on {engine.describe()['device']}, {engine.describe()['precision']}, "
            f"dense_fog {engine.describe()['dense_fog']}"
            + (
                f", upsampling {engine.describe()['upsampling']}, size_rule "
                f"{engine.describe()['size_rule']}"
                if engine_max_side
                else ""
            )
            for name, engine in engines.items()
        ),
        f"- synthetic haze on RGB-D sets: transmission {haze_t} at the median depth, airlight 0.9, "
        f"seed {seed}; outdoor views: visibility {visibility_m:g} m (beta = 3.912 / V)",
        "- depth metrics: metric (metres) and after median scaling (med); DCP depth is relative: "
        "metric columns empty",
        f"- model depth_from_haze: {depth_from_haze or '(no model)'}"
        + (
            " (fused; rows 'depth_from_haze off': the network alone; '-ln t of model': its "
            "transmission as relative depth)"
            if depth_from_haze == "ablation"
            else ""
        ),
        "- sky beyond: the share of all true-sky pixels of the set predicted beyond the range "
        "(+inf), and of the worst single image",
        *[f"- WARNING: {text}" for text in warnings],
        "",
    ]


def engines_description(provenance: dict) -> str:
    model = (provenance.get("model_config") or {}).get("name", "?")
    steps = provenance.get("steps", "?")
    return f"{model}, {steps} steps, commit {str(provenance.get('git_commit', ''))[:12] or '?'}"


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    key: (f"{value:.6g}" if isinstance(value, float) else value)
                    for key, value in row.items()
                }
            )


def save_grid(path: Path, sample: Sample, outputs: dict, model_engine: DehazeEngine | None) -> None:
    near, far = model_engine.depth_range if model_engine is not None else (0.1, 80.0)
    tiles = [label_tile(rgb_tile(sample.hazy), "hazy")]
    for method, result in outputs.items():
        if result.dehazed is not None:
            tiles.append(label_tile(result.dehazed, "dcp" if method == "dcp" else "model"))
    if not np.isnan(sample.clear).all():
        tiles.append(label_tile(rgb_tile(sample.clear), "GT"))
    for method, result in outputs.items():
        if result.depth is not None and result.depth_units == "meters":
            scale = method.partition(", ")[2] or "learned"
            tiles.append(label_tile(depth_tile(result.depth, near, far), f"depth (m), {scale}"))
    if sample.has_depth:
        tiles.append(label_tile(depth_tile(sample.depth_m, near, far), "GT depth"))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), make_grid([tiles])[..., ::-1])


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """How the engines run: size, dense fog, depth size, device, precision, backend, upsampling."""
    parser.add_argument(
        "--engine-max-side",
        type=int,
        default=0,
        help="run the networks at this longer side, as a node with max_side (0 = native)",
    )
    parser.add_argument(
        "--engine-dense-fog",
        default=DENSE_FOG_DEFAULT,
        choices=DENSE_FOG_MODES,
        help="the networks' dense-fog blend with the DCP, as the node's dense_fog",
    )
    parser.add_argument(
        "--engine-size-rule",
        default=DEFAULT_SIZE_RULE,
        choices=SIZE_RULES,
        help="how --engine-max-side sizes the networks' input, as the node's size_rule",
    )
    parser.add_argument(
        "--engine-depth-max-side",
        type=int,
        default=DEFAULT_DEPTH_MAX_SIDE,
        help="run the depth at this longer side, as a node with depth_max_side "
        "(0 = at --engine-max-side's size)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="the networks' precision"
    )
    parser.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="what runs the networks (the node's backend parameter): quality per backend",
    )
    parser.add_argument(
        "--onnx-model",
        default="",
        help="backend onnxruntime / openvino: this exported graph instead of the checkpoint's "
        "(the node's onnx_model), e.g. a quantised one",
    )
    parser.add_argument(
        "--upsampling",
        default=DEFAULT_UPSAMPLING,
        choices=UPSAMPLING,
        help="full-resolution recovery below native size (with --engine-max-side)",
    )


def _add_set_arguments(parser: argparse.ArgumentParser) -> None:
    """Which views of the sets are evaluated, and how the synthetic ones are hazed."""
    parser.add_argument(
        "--scenes", default="", help="only these scenes (comma separated) of reside/rgbd sets"
    )
    parser.add_argument(
        "--haze-t",
        type=float,
        default=0.4,
        help="RGB-D sets: transmission at the median depth of the synthetic haze",
    )
    parser.add_argument(
        "--items", default="", help="only these items of rgbd sets, e.g. nyu_kinect/5,tum/2"
    )
    parser.add_argument(
        "--exclude", default="", help="rgbd: sub-folders to skip (comma separated globs)"
    )
    parser.add_argument(
        "--depth-scales",
        default="",
        help="rgbd: metres per unit of 16-bit depth per folder, e.g. icl_nuim=0.0002,tum=0.0002",
    )
    parser.add_argument(
        "--focal-px",
        default="",
        help="rgbd: focal length (px) per frame folder, e.g. nyu_kinect=518,tum=520.9 "
        "(Middlebury reads calib.txt; unknown: the engine assumes its field of view)",
    )
    parser.add_argument(
        "--source-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a key of the sets' source config (data.sources keys of their kind), e.g. "
        "color_topic=/camera/color/image_raw for rosbag2 (repeatable)",
    )
    parser.add_argument(
        "--visibility-m",
        type=float,
        default=300.0,
        help="outdoor views: fog visibility in metres (beta = 3.912 / V)",
    )
    parser.add_argument(
        "--visibilities",
        default="",
        help="evaluate every set once per visibility, e.g. 30,50,100,150,300,clear "
        "(metres; training.road_fog): one summary row each",
    )
    parser.add_argument(
        "--aspects",
        default="",
        help="road sets (outdoor, drive): frame shapes, e.g. 4:3,16:9,1242x375 (default 4:3)",
    )


def _add_depth_arguments(parser: argparse.ArgumentParser) -> None:
    """The model's depth, its metric scale sources and the depths scored."""
    parser.add_argument(
        "--depth-from-haze",
        default=EngineConfig.depth_from_haze,
        choices=DEPTH_FROM_HAZE_CHOICES,
        help="the model's depth: the engine's depth_from_haze (default: the node's), or "
        "ablation: fused, plus the network alone and the model's -ln t as rows of their own",
    )
    parser.add_argument(
        "--scale-sources",
        default="learned",
        help="comma separated, rows of the model per metric scale source: "
        f"{', '.join(SCALE_SOURCES)}",
    )
    parser.add_argument(
        "--camera-height-m",
        type=float,
        default=math.nan,
        help="ground scale: camera height above the ground for views that do not bring their own",
    )
    parser.add_argument(
        "--camera-pitch-deg",
        type=float,
        default=math.nan,
        help="ground scale: optical axis below the horizontal (degrees, positive down) for "
        "views that do not bring their own; NaN = unknown",
    )
    parser.add_argument(
        "--anchor-range-m",
        type=float,
        default=LidarModel.max_range_m,
        help="anchor scale sources: the synthetic LiDAR's longest return (fog limits it)",
    )
    parser.add_argument(
        "--max-depth-m",
        type=float,
        default=0.0,
        help="score only true depths up to this many metres (e.g. 80, the model's range and "
        "KITTI's); 0 = all finite depths",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m training.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--checkpoint", help="deployable checkpoint, or a run's best.pt / last.pt")
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[KIND:]PATH",
        help="evaluation set (repeatable); KIND: reside, rgbd, rosbag2, images, procedural, "
        "outdoor, vehicle",
    )
    parser.add_argument("--baseline", choices=["dcp"], help="also evaluate the Dark Channel Prior")
    parser.add_argument("--out", help="output folder (default eval_output/<date-time>)")
    parser.add_argument(
        "--max-side", type=int, default=1024, help="longer image side for evaluation (px)"
    )
    _add_engine_arguments(parser)
    _add_set_arguments(parser)
    _add_depth_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grids", type=int, default=4, help="image grids per set")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out_dir = (
        Path(args.out)
        if args.out
        else Path("eval_output") / f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
    )
    if args.max_side < 32:
        parser.error(f"--max-side must be at least 32, got {args.max_side}")
    if not 0.0 < args.haze_t <= 1.0:
        parser.error(f"--haze-t must lie in (0, 1], got {args.haze_t}")
    if args.onnx_model and args.backend == "torch":
        parser.error("--onnx-model is a graph for --backend onnxruntime or openvino, not torch")
    scenes = [s for s in args.scenes.split(",") if s]
    items = [s for s in args.items.split(",") if s]
    try:
        visibilities = road_fog.parse_visibilities(args.visibilities) if args.visibilities else []
        aspects = road_fog.parse_aspects(args.aspects) if args.aspects else []
        evaluate(
            args.checkpoint,
            args.data,
            out_dir,
            args.baseline,
            args.max_side,
            args.engine_max_side,
            args.device,
            scenes,
            args.haze_t,
            args.seed,
            args.grids,
            items=items,
            depth_scales=parse_folder_values(args.depth_scales, "--depth-scales"),
            focal_px=parse_folder_values(args.focal_px, "--focal-px"),
            visibility_m=args.visibility_m,
            exclude=[s for s in args.exclude.split(",") if s],
            source_options=args.source_option,
            upsampling=args.upsampling,
            precision=args.precision,
            engine_depth_max_side=args.engine_depth_max_side,
            depth_from_haze=args.depth_from_haze,
            backend=args.backend,
            scale_sources=[s for s in args.scale_sources.split(",") if s],
            camera_height_m=args.camera_height_m,
            camera_pitch_deg=args.camera_pitch_deg,
            max_depth_m=args.max_depth_m if args.max_depth_m > 0 else math.inf,
            anchor_range_m=args.anchor_range_m,
            visibilities=visibilities,
            aspects=aspects,
            engine_size_rule=args.engine_size_rule,
            engine_dense_fog=args.engine_dense_fog,
            onnx_model=args.onnx_model,
        )
    except (DataError, CheckpointError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
