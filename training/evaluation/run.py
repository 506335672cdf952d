"""One evaluation: the engines to compare, every view of every set through each of them (and each
scale source), the rows scored and what is written (report.py)."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from dehaze_ros.checkpoint import CheckpointError, load_checkpoint
from dehaze_ros.engine import DehazeEngine, EngineConfig, EngineResult
from training.data.common import Sample
from training.evaluation.options import EvaluateOptions
from training.evaluation.report import (
    markdown_table,
    save_grid,
    summarise,
    summary_markdown,
    write_csv,
)
from training.evaluation.scale_sources import (
    ANCHOR_VARIANTS,
    SCALE_LABELS,
    view_anchors,
    view_mounting,
)
from training.evaluation.scoring import focal_column, method_label, score, transmission_depth
from training.evaluation.sets import EvalSet, open_sets, training_overlap
from training.run_state import TrainingError, load_training_file
from training.visualize import rgb_tile


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


def build_engines(options: EvaluateOptions, workdir: Path) -> tuple[dict[str, DehazeEngine], dict]:
    """The engines to compare, by method ("model", "network depth", "dcp"), and the checkpoint's
    provenance ({} without a checkpoint)."""
    engines: dict[str, DehazeEngine] = {}
    provenance: dict = {}
    if options.checkpoint:
        deployable = resolve_checkpoint(options.checkpoint, workdir)
        model_config = EngineConfig(
            model="checkpoint",
            checkpoint=deployable,
            backend=options.backend,
            onnx_model=options.onnx_model,
            device=options.device,
            precision=options.precision,
            max_side=options.engine_max_side,
            size_rule=options.engine_size_rule,
            dense_fog=options.engine_dense_fog,
            depth_max_side=options.engine_depth_max_side,
            upsampling=options.upsampling,
            warmup=1,
            depth_from_haze="fuse" if options.ablation else options.depth_from_haze,
        )
        engines["model"] = DehazeEngine(model_config)
        provenance = engines["model"].checkpoint.provenance
        if options.ablation:
            # The same loaded networks, the depth left as the network made it.
            engines["network depth"] = DehazeEngine(
                dataclasses.replace(model_config, depth_from_haze="off", warmup=0),
                backend=engines["model"].backend,
            )
    if options.baseline == "dcp":
        engines["dcp"] = DehazeEngine(
            EngineConfig(
                model="dcp",
                max_side=options.engine_max_side,
                upsampling=options.upsampling,
                size_rule=options.engine_size_rule,
                depth_max_side=options.engine_depth_max_side,
                warmup=0,
            )
        )
    return engines, provenance


def run_engines(
    index: int,
    sample: Sample,
    hazy_u8: np.ndarray,
    base: dict,
    engines: dict[str, DehazeEngine],
    rows: list[dict],
    options: EvaluateOptions,
) -> tuple[dict, object]:
    """One row per engine and scale source on one view; return the results by row label and the
    model's first result (None without one)."""
    outputs = {}
    model_result = None
    for method, engine in engines.items():
        # Scale sources apply to the model's metric depth; DCP and the ablation's
        # network-alone row keep the learned scale.
        sources = list(options.scale_sources) if method == "model" else ["learned"]
        for source in sources:
            mounting = view_mounting(
                sample, source, options.camera_height_m, options.camera_pitch_deg
            )
            if mounting is None:
                continue  # no known camera height: no ground on this view
            anchors = None
            if source in ANCHOR_VARIANTS:
                anchors = view_anchors(
                    sample, options.anchor_range_m, options.seed * 100003 + index
                )
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
            rows.append(
                {
                    **base,
                    "method": label,
                    "ms": elapsed_ms,
                    **result_columns(engine, result, sample, options.max_depth_m),
                }
            )
    return outputs, model_result


def result_columns(
    engine: DehazeEngine, result: EngineResult, sample: Sample, max_depth_m: float
) -> dict:
    """A row's columns from one engine result: focal, scale and the metrics (score)."""
    scale = result.scale
    return {
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


def evaluate_sample(
    eval_set: EvalSet,
    index: int,
    sample: Sample,
    engines: dict[str, DehazeEngine],
    rows: list[dict],
    options: EvaluateOptions,
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
    outputs, model_result = run_engines(index, sample, hazy_u8, base, engines, rows, options)
    if options.ablation and model_result is not None and model_result.transmission is not None:
        model = engines["model"]
        optical_depth = transmission_depth(model_result, *hazy_u8.shape[:2])
        rows.append(
            {
                **base,
                "method": f"-ln t of model ({model.model_name})",
                **score(None, optical_depth, "relative", sample, (0.0, math.inf)),
            }
        )
    if index < options.grids:
        save_grid(
            options.out_dir / "grids" / eval_set.name / f"{Path(sample.name).stem}.png",
            sample,
            outputs,
            engines.get("model"),
        )


def evaluate(options: EvaluateOptions, log=print) -> dict:
    """Run every method on every set; write per_image.csv, summary.md and grids; return the summary.
    Of the options: ``scale_sources``, rows of the model per scale source (SCALE_SOURCES);
    ``camera_height_m`` and ``camera_pitch_deg``, the mounting for views that do not bring their
    own; ``visibilities`` and ``aspects``, the fogs and frame shapes of training.road_fog
    (open_sets). Anchor rows get a synthetic LiDAR (dehaze_ros.sim.lidar) made from each view's
    exact depth, returns up to ``anchor_range_m``, the same points for every anchor row of a
    view."""
    options.check()
    out_dir = options.out_dir
    with tempfile.TemporaryDirectory() as workdir:
        # Every input is checked (sets opened, checkpoint loaded) before out_dir exists: a typo
        # must not leave an empty output folder behind.
        sets = open_sets(options)
        engines, provenance = build_engines(options, Path(workdir))
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
                evaluate_sample(eval_set, index, sample, engines, rows, options)
        for engine in engines.values():
            engine.close()
    write_csv(out_dir / "per_image.csv", rows)
    summary = summarise(rows)
    (out_dir / "summary.md").write_text(
        summary_markdown(summary, options, provenance, engines, warnings)
    )
    log("\n" + markdown_table(summary))
    log(f"\nwrote {out_dir / 'summary.md'}, {out_dir / 'per_image.csv'}, {out_dir / 'grids'}")
    return {"summary": summary, "rows": rows, "warnings": warnings}
