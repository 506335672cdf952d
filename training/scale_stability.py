"""How steady the metric scale is over a drive: the ground plane's factor frame after frame.

    python -m training.scale_stability --checkpoint dehaze_ros/checkpoints/default.pt \\
        --seeds 3,5,8 --frames 100 --rate-hz 10 --visibility-m 300 --size 640x480

A camera drives down a rendered vehicle-scale street (dehaze_ros.sim.scenes.SceneRenderer with
vehicle_scale: a car's, truck's or robot's camera at the height its scene was drawn with, pitched
2 degrees down with +-1 degree of sway that the robot does not know about, swaying left and right)
through fog of one visibility. Every frame goes through the engine as one stream, stamped at
``--rate-hz``, with ``camera_height_m`` the camera's mounting height and ``camera_pitch_deg`` 2
(or unknown with ``--pitch-unknown``), exactly as the node would run it. Reported per drive:
the factor's frame-to-frame change (|f_i / f_i-1 - 1| over consecutive frames, median and p95:
issue 26's gate is median <= 1 %, p95 <= 3 %), the same for the per-frame estimates before
smoothing, how many frames held the factor or fell back to the learned scale, and the depth
metrics of the drive (true depths up to ``--max-depth-m``).

``--anchor-range-m R``: the scale from a LiDAR instead of the ground (no ``camera_height_m``):
each frame gets the synthetic 32-beam LiDAR of dehaze_ros.sim.lidar made from its exact depth,
returns up to R metres (fog), stamped with the frame, a new noise and dropout draw every frame.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

from dehaze_ros.anchor_scale import AnchorCloud
from dehaze_ros.engine import DehazeEngine, EngineConfig, EngineError
from dehaze_ros.haze import synthesize_haze
from dehaze_ros.metric_scale import LEARNED, Mounting, Pinhole
from dehaze_ros.sim.lidar import LidarModel, synthetic_lidar
from dehaze_ros.sim.scenes import SceneRenderer
from training.data.common import KOSCHMIEDER
from training.metrics import depth_metrics

# SceneRenderer's vehicle pose: pitch -2 + sin(0.4 t) degrees in its own convention (up positive).
NOMINAL_PITCH_DOWN_DEG = 2.0


def changes(factors: list[float]) -> np.ndarray:
    """|f_i / f_i-1 - 1| of consecutive finite factors."""
    values = np.asarray(factors, dtype=np.float64)
    both = np.isfinite(values[1:]) & np.isfinite(values[:-1])
    return np.abs(values[1:][both] / values[:-1][both] - 1.0)


def drive_summary(seed: int, camera_height_m: float, frames: int, rows: list[dict]) -> dict:
    """One drive's summary: how its frames were scaled, how much the factor changed from frame
    to frame, and its depth metrics."""
    factor_change = changes([row["factor"] for row in rows])
    measured_change = changes([row["measured"] for row in rows])
    summary = {
        "seed": seed,
        "camera_height_m": camera_height_m,
        "frames": frames,
        "ground": sum(row["source"] != LEARNED and not row["held"] for row in rows),
        "held": sum(row["held"] for row in rows),
        "learned": sum(row["source"] == LEARNED for row in rows),
        "change_median": float(np.median(factor_change)) if factor_change.size else math.nan,
        "change_p95": float(np.percentile(factor_change, 95)) if factor_change.size else math.nan,
        "measured_change_median": float(np.median(measured_change))
        if measured_change.size
        else math.nan,
        "measured_change_p95": float(np.percentile(measured_change, 95))
        if measured_change.size
        else math.nan,
        "abs_rel": float(np.nanmean([row["abs_rel"] for row in rows])),
        "delta1": float(np.nanmean([row["delta1"] for row in rows])),
        "median_ratio": float(np.nanmedian([row["median_ratio"] for row in rows])),
        "scale_ms": float(np.nanmedian([row["ms"] for row in rows])),
    }
    return summary


def drive(
    engine: DehazeEngine,
    seed: int,
    frames: int,
    rate_hz: float,
    visibility_m: float,
    width: int,
    height: int,
    speed_mps: float,
    pitch_known: bool,
    max_depth_m: float,
    log=print,
    anchor_range_m: float = 0.0,
) -> dict:
    """One drive through the scene of ``seed``: its rows (one per frame) and summary. With
    ``anchor_range_m`` > 0 the scale comes from a synthetic LiDAR of that range, not the ground."""
    renderer = SceneRenderer(width, height, seed=seed, vehicle_scale=True, speed_mps=speed_mps)
    scene = renderer.scene
    mounting = Mounting(
        float(scene.eye[1] - scene.eye_surface_z),
        NOMINAL_PITCH_DOWN_DEG if pitch_known else math.nan,
    )
    camera = Pinhole(renderer.K[0, 0], renderer.K[1, 1], renderer.K[0, 2], renderer.K[1, 2])
    beta = KOSCHMIEDER / visibility_m if math.isfinite(visibility_m) else 0.0
    engine.reset_scale()
    lidar = LidarModel(max_range_m=anchor_range_m)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(frames):
        stamp = index / rate_hz
        frame = renderer.render(stamp)
        hazy, _ = synthesize_haze(
            frame.rgb.astype(np.float32) / 255.0, frame.depth_m, beta, np.float32(0.9)
        )
        image = (np.clip(hazy, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        anchors = None
        if anchor_range_m > 0:
            points = synthetic_lidar(
                frame.depth_m, camera.fx, camera.fy, camera.cx, camera.cy, lidar, rng
            )
            anchors = AnchorCloud.of(points, stamp)
        result = engine.process(
            image,
            want_dehazed=False,
            camera=camera,
            stamp_s=stamp,
            mounting=None if anchors is not None else mounting,
            anchors=anchors,
        )
        predicted = result.depth.astype(np.float64)
        predicted[np.isposinf(predicted)] = engine.depth_range[1]
        predicted[np.isneginf(predicted)] = engine.depth_range[0]
        metrics = depth_metrics(predicted, frame.depth_m, max_m=max_depth_m)
        scale = result.scale
        rows.append(
            {
                "seed": seed,
                "frame": index,
                "stamp_s": stamp,
                "source": scale.source,
                "held": scale.held,
                "factor": scale.factor if scale.source != LEARNED else math.nan,
                "measured": scale.measured,
                "abs_rel": metrics["abs_rel"],
                "delta1": metrics["delta1"],
                "median_ratio": 1.0 / metrics["median_scale"]
                if metrics.get("median_scale")
                else math.nan,
                "ms": result.timings_ms.get("scale", math.nan),
            }
        )
    summary = drive_summary(seed, mounting.height_m, frames, rows)
    log(
        f"seed {seed}: camera {mounting.height_m:.2f} m, {summary['ground']} frames ground, "
        f"{summary['held']} held, {summary['learned']} learned "
        f"({'anchors' if anchor_range_m > 0 else 'ground'}); factor change median "
        f"{100 * summary['change_median']:.2f} %, p95 {100 * summary['change_p95']:.2f} %"
    )
    return {"rows": rows, "summary": summary}


def markdown(summaries: list[dict]) -> str:
    lines = [
        "| seed | camera m | frames ground / held / learned | factor change median | p95 | "
        "per-frame estimate change median | p95 | AbsRel | δ<1.25 | median pred/true | scale ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['seed']} | {s['camera_height_m']:.2f} | {s['ground']} / {s['held']} / "
            f"{s['learned']} | {100 * s['change_median']:.2f} % | {100 * s['change_p95']:.2f} % | "
            f"{100 * s['measured_change_median']:.2f} % | {100 * s['measured_change_p95']:.2f} % | "
            f"{s['abs_rel']:.3f} | {s['delta1']:.3f} | {s['median_ratio']:.2f} | "
            f"{s['scale_ms']:.1f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m training.scale_stability``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.scale_stability",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--checkpoint", default="", help="deployable checkpoint (default: the shipped one)"
    )
    parser.add_argument("--seeds", default="3", help="comma separated scene seeds, a drive each")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--speed-mps", type=float, default=8.0)
    parser.add_argument(
        "--visibility-m", type=float, default=300.0, help="fog visibility; inf = clear air"
    )
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the camera")
    parser.add_argument(
        "--pitch-unknown", action="store_true", help="camera_pitch_deg unknown (NaN)"
    )
    parser.add_argument(
        "--max-depth-m", type=float, default=80.0, help="score true depths up to this"
    )
    parser.add_argument(
        "--max-side", type=int, default=320, help="the engine's max_side (the node's default)"
    )
    parser.add_argument(
        "--anchor-range-m",
        type=float,
        default=0.0,
        help="scale from a synthetic 32-beam LiDAR with returns up to this range (m) instead "
        "of the ground plane; 0 = the ground plane",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-threads", type=int, default=0)
    parser.add_argument("--out", help="write the per-frame rows to this CSV file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(
            f"--size must be WIDTHxHEIGHT and --seeds integers, got {args.size!r}, {args.seeds!r}"
        )
    if args.frames < 2 or args.rate_hz <= 0 or args.visibility_m <= 0:
        parser.error("--frames must be at least 2, --rate-hz and --visibility-m positive")
    try:
        engine = DehazeEngine(
            EngineConfig(
                checkpoint=args.checkpoint,
                device=args.device,
                max_side=args.max_side,
                num_threads=args.num_threads,
                warmup=1,
            )
        )
    except (EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    drives = [
        drive(
            engine,
            seed,
            args.frames,
            args.rate_hz,
            args.visibility_m,
            width,
            height,
            args.speed_mps,
            not args.pitch_unknown,
            args.max_depth_m,
            anchor_range_m=args.anchor_range_m,
        )
        for seed in seeds
    ]
    engine.close()
    print(
        f"\n{args.frames} frames at {args.rate_hz:g} Hz, {width}x{height}, {args.speed_mps:g} m/s, "
        f"visibility {args.visibility_m:g} m, pitch "
        f"{'unknown' if args.pitch_unknown else 'known (2 deg)'}, max_side {args.max_side}"
        + (f", anchors: LiDAR up to {args.anchor_range_m:g} m" if args.anchor_range_m > 0 else "")
        + "\n"
    )
    print(markdown([d["summary"] for d in drives]))
    if args.out:
        rows = [row for d in drives for row in d["rows"]]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
