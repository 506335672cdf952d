"""What an evaluation writes: per_image.csv, summary.md (the header, the summary table, the table
of depth supports) and the image grids."""

from __future__ import annotations

import csv
import datetime
import math
from pathlib import Path

import cv2
import numpy as np

from dehaze_ros.engine import DehazeEngine
from training import road_fog
from training.data.common import Sample
from training.evaluation.options import EvaluateOptions
from training.evaluation.scoring import SUPPORT_NAMES
from training.visualize import depth_tile, label_tile, make_grid, rgb_tile

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
# The median pred/true band of the ground plane's gate (issue 26): the share of views inside it.
MEDIAN_BAND = (0.9, 1.1)


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


def summary_header(
    options: EvaluateOptions,
    provenance: dict,
    engines: dict[str, DehazeEngine],
    warnings: list[str],
) -> list[str]:
    """summary.md above the table: what was evaluated, at which resolution, on which engine."""
    engine_max_side = options.engine_max_side
    depth_from_haze = options.depth_from_haze
    networks_at = (
        f"longer side {engine_max_side} px (engine max_side)"
        if engine_max_side
        else "the same size"
    )
    depth_at = (
        f"longer side {options.engine_depth_max_side} px (engine depth_max_side)"
        if options.engine_depth_max_side
        else "the same size as the dehazing"
    )
    return [
        "# Evaluation",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- checkpoint: {options.checkpoint or '(none)'}"
        + (f" (model {engines_description(provenance)})" if provenance else ""),
        f"- baseline: {options.baseline or '(none)'}",
        f"- resolution: longer side at most {options.max_side} px (metrics at that size); "
        f"networks at {networks_at}; depth at {depth_at}",
        "- engine: "
        + "; ".join(
            f"{name} on {engine.describe()['device']}, {engine.describe()['backend']} "
            f"{engine.describe()['precision']}, dense_fog {engine.describe()['dense_fog']}"
            + (
                f", upsampling {engine.describe()['upsampling']}, size_rule "
                f"{engine.describe()['size_rule']}"
                if engine_max_side
                else ""
            )
            for name, engine in engines.items()
        ),
        f"- synthetic haze on RGB-D sets: transmission {options.haze_t} at the median depth, "
        f"airlight 0.9, seed {options.seed}; outdoor views: visibility {options.visibility_m:g} m "
        "(beta = 3.912 / V)",
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


def summary_markdown(
    summary: list[dict],
    options: EvaluateOptions,
    provenance: dict,
    engines: dict[str, DehazeEngine],
    warnings: list[str],
) -> str:
    """summary.md: the header (what was run, how), the summary table and the depth supports."""
    header = summary_header(options, provenance, engines, warnings)
    if math.isfinite(options.max_depth_m):
        header.insert(
            -1,
            f"- depth metrics count true depths up to {options.max_depth_m:g} m only "
            "(--max-depth-m)",
        )
    scale_sources = options.scale_sources
    if list(scale_sources) != ["learned"]:
        header.insert(
            -1, f"- scale sources: {', '.join(scale_sources)}; each view a stream of one frame"
        )
    if options.visibilities or options.aspects:
        header += [road_fog.describe(options.visibilities, options.aspects), ""]
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
