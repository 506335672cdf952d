"""The option groups of ``python -m training.evaluate`` and the EvaluateOptions its parsed
arguments make (the parser itself, with the usage text, is in training/evaluate.py)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from dehaze_ros.dense_fog import DEFAULT as DENSE_FOG_DEFAULT
from dehaze_ros.dense_fog import MODES as DENSE_FOG_MODES
from dehaze_ros.engine import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_DEPTH_MAX_SIDE,
    DEFAULT_SIZE_RULE,
    DEFAULT_UPSAMPLING,
    PRECISIONS,
    SIZE_RULES,
    UPSAMPLING,
    EngineConfig,
)
from dehaze_ros.sim.lidar import LidarModel
from training import road_fog
from training.evaluation.options import DEPTH_FROM_HAZE_CHOICES, EvaluateOptions
from training.evaluation.scale_sources import SCALE_SOURCES


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


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
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
        default=DEFAULT_BACKEND,
        choices=BACKENDS,
        help="what runs the networks (the node's backend parameter): quality per backend",
    )
    parser.add_argument(
        "--onnx-model",
        default="",
        help="backend onnxruntime / openvino / auto: this exported graph instead of the "
        "checkpoint's (the node's onnx_model), e.g. a quantised one",
    )
    parser.add_argument(
        "--upsampling",
        default=DEFAULT_UPSAMPLING,
        choices=UPSAMPLING,
        help="full-resolution recovery below native size (with --engine-max-side)",
    )


def add_set_arguments(parser: argparse.ArgumentParser) -> None:
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


def add_depth_arguments(parser: argparse.ArgumentParser) -> None:
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


def options_from_args(args: argparse.Namespace, out_dir: Path) -> EvaluateOptions:
    """The EvaluateOptions of parsed arguments (build_parser's); raises ValueError on a value
    that does not parse (visibilities, aspects, per-folder values)."""
    visibilities = road_fog.parse_visibilities(args.visibilities) if args.visibilities else []
    aspects = road_fog.parse_aspects(args.aspects) if args.aspects else []
    return EvaluateOptions(
        args.checkpoint,
        args.data,
        out_dir,
        baseline=args.baseline,
        max_side=args.max_side,
        engine_max_side=args.engine_max_side,
        device=args.device,
        scenes=[s for s in args.scenes.split(",") if s],
        haze_t=args.haze_t,
        seed=args.seed,
        grids=args.grids,
        items=[s for s in args.items.split(",") if s],
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
