"""The metrics of one method on one view (training.metrics), and the labels of its row."""

from __future__ import annotations

import math

import numpy as np

from dehaze_ros.engine import DehazeEngine, EngineResult
from dehaze_ros.metric_scale import (
    SUPPORT_ANCHORED,
    SUPPORT_BOUNDED,
    SUPPORT_LEARNED,
    SUPPORT_PLANE,
    SUPPORT_SCALED,
)
from dehaze_ros.upsampling import upsample_depth
from training.data.common import Sample
from training.metrics import DEPTH_METRICS, depth_metrics, psnr, ssim

# What a pixel's depth rests on (EngineResult.depth_support), scored apart (depth/confidence).
SUPPORT_NAMES = {
    SUPPORT_LEARNED: "learned",
    SUPPORT_SCALED: "scaled",
    SUPPORT_BOUNDED: "bounded",
    SUPPORT_PLANE: "plane",
    SUPPORT_ANCHORED: "anchored",
}


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


def focal_column(engine: DehazeEngine, result) -> str:
    """Where the metres came from: a known focal length, an assumed field of view, or neither
    (relative depth, or a checkpoint without a camera model)."""
    if result.depth is None or result.depth_units != "meters" or not engine.canonical_focal_px:
        return "n/a"
    return "assumed" if result.focal_assumed else "known"
