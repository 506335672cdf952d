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
import datetime
import sys
from pathlib import Path

from dehaze_ros.checkpoint import CheckpointError
from dehaze_ros.engine import EngineError
from training.data.io import DataError
from training.evaluation.arguments import (
    add_depth_arguments,
    add_engine_arguments,
    add_set_arguments,
    options_from_args,
    parse_folder_values,
)
from training.evaluation.options import DEPTH_FROM_HAZE_CHOICES, EvaluateOptions
from training.evaluation.report import (
    CSV_COLUMNS,
    MEDIAN_BAND,
    engines_description,
    markdown_table,
    save_grid,
    summarise,
    summary_header,
    summary_markdown,
    support_table,
    write_csv,
)
from training.evaluation.run import (
    build_engines,
    evaluate,
    evaluate_sample,
    resolve_checkpoint,
    run_engines,
)
from training.evaluation.scale_sources import (
    ANCHOR_VARIANTS,
    SCALE_LABELS,
    SCALE_SOURCES,
    view_anchors,
    view_mounting,
)
from training.evaluation.scoring import (
    SUPPORT_NAMES,
    finite_depth,
    focal_column,
    method_label,
    score,
    support_scores,
    transmission_depth,
)
from training.evaluation.sets import (
    FOLDER_KINDS,
    KINDS,
    OUTDOOR_DEFAULT_VIEWS,
    VEHICLE_DEFAULT_VIEWS,
    EvalSet,
    detect_kind,
    evaluation_source,
    open_set,
    open_sets,
    parse_spec,
    road_sets,
    training_overlap,
    view_count,
)

# The command line is here (its usage is this module's docstring); the evaluation itself is in
# training/evaluation/ (its __init__ names the parts). The names that were defined here stay
# importable from here.
__all__ = [
    "ANCHOR_VARIANTS",
    "CSV_COLUMNS",
    "DEPTH_FROM_HAZE_CHOICES",
    "EvalSet",
    "EvaluateOptions",
    "FOLDER_KINDS",
    "KINDS",
    "MEDIAN_BAND",
    "OUTDOOR_DEFAULT_VIEWS",
    "SCALE_LABELS",
    "SCALE_SOURCES",
    "SUPPORT_NAMES",
    "VEHICLE_DEFAULT_VIEWS",
    "build_engines",
    "build_parser",
    "detect_kind",
    "engines_description",
    "evaluate",
    "evaluate_sample",
    "evaluation_source",
    "finite_depth",
    "focal_column",
    "main",
    "markdown_table",
    "method_label",
    "open_set",
    "open_sets",
    "options_from_args",
    "parse_folder_values",
    "parse_spec",
    "resolve_checkpoint",
    "road_sets",
    "run_engines",
    "save_grid",
    "score",
    "summarise",
    "summary_header",
    "summary_markdown",
    "support_scores",
    "support_table",
    "training_overlap",
    "transmission_depth",
    "view_anchors",
    "view_count",
    "view_mounting",
    "write_csv",
]


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
    add_engine_arguments(parser)
    add_set_arguments(parser)
    add_depth_arguments(parser)
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
    try:
        evaluate(options_from_args(args, out_dir))
    except (DataError, CheckpointError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
