"""Latency of every model variant and of DCP, through the engine, on this machine's device.

    python -m dehaze_ros.tools.benchmark [--device auto] [--precisions fp32,bf16]
                                         [--backends torch,onnxruntime]
                                         [--sizes 320x240,640x480,1280x720]

Each cell runs the whole ``DehazeEngine.process`` (conversion, dehazing, depth, resizing back) on
a rendered hazy frame, after one warm-up pass: what the node pays per frame. The weights are
randomly initialised (speed does not depend on their values). A cell stops after ``--max-runs``
runs or when ``--budget-s`` seconds are spent, with at least one timed run, so that the paper-size
model at 1280x720 on a 2-core CPU does not take an hour; the ``runs`` column says how many
runs each median stands on. Every network row is measured in each of ``--precisions`` (fp32 and
bf16 by default, side by side in one run); a precision this device does not support is skipped
with a line that says why. ``--backends`` (torch and onnxruntime by default) puts the ONNX Runtime
rows (the variant exported once with ``dehaze_ros.onnx_export``) next to torch's; without the onnx
extra they are skipped with a note. ``--checkpoint`` times trained checkpoints (the shipped
default, one of your own) instead: their own model config (e.g. a depth network that reads the
transmission), rows labelled by file name, at max_side 0 and ``--rt-max-side``.

A second table times the metric scale sources (``--scale-sources``; dehaze_ros.metric_scale):
what the engine adds per frame on top of the network (its ``scale`` stage: the ground plane's
fit on the network's pixels, the plane's depth and bound at full size), with the shipped
checkpoint at the node's max_side on a rendered, fogged vehicle-scale frame (random weights give
no ground to find), frames of one stream stamped 0.1 s apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dehaze_ros.anchor_scale import AnchorCloud
from dehaze_ros.checkpoint import CheckpointError, build_models, load_checkpoint, save_checkpoint
from dehaze_ros.devices import PRECISIONS, DeviceError, precision_name, resolve_precision
from dehaze_ros.engine import (
    DEFAULT_CHECKPOINT,
    DehazeEngine,
    EngineConfig,
    EngineError,
    resolve_device,
    scaled_size,
)
from dehaze_ros.haze import synthesize_haze
from dehaze_ros.metric_scale import Mounting, Pinhole
from dehaze_ros.models import PRESETS, build_dehazer, build_depth_net, count_macs, count_parameters
from dehaze_ros.ros.node_config import SPECS
from dehaze_ros.sim.lidar import synthetic_lidar
from dehaze_ros.sim.scenes import SceneRenderer


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            width, height = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {item!r} is not WIDTHxHEIGHT") from None
        sizes.append((width, height))
    return sizes


def hazy_frame(width: int, height: int) -> np.ndarray:
    frame = SceneRenderer(width, height, seed=1).render(2.0)
    hazy, _ = synthesize_haze(frame.rgb, frame.depth_m, 0.06, [0.85, 0.86, 0.9])
    return (hazy * 255 + 0.5).astype(np.uint8)


# --scale-sources: name -> the row's label; what the camera's mounting tells the engine.
SCALE_SOURCES = {
    "learned": "no source (camera_height_m 0)",
    "ground-height": "ground plane, pitch unknown",
    "ground": "ground plane, pitch known",
    "anchors": "anchors (synthetic 32-beam LiDAR, 30 m)",
}


def time_scale_sources(
    sources: list[str],
    sizes: list[tuple[int, int]],
    device: str,
    threads: int,
    max_side: int,
    max_runs: int,
    budget_s: float,
) -> None:
    """The second table: the engine's ``scale`` stage per source and size, in ms."""
    print(
        f"\n# metric scale sources: time added per frame (the engine's 'scale' stage), shipped "
        f"checkpoint, max_side {max_side}, a fogged vehicle-scale frame"
    )
    # The stage brings the depth to full size with or without a source: what a source adds is
    # its median over the no-source row's.
    print(
        "| scale source | input | median ms | p95 ms | added ms (median over no source) | runs | "
        "frames with the source's factor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    engine = DehazeEngine(
        EngineConfig(
            checkpoint=str(DEFAULT_CHECKPOINT),
            device=device,
            max_side=max_side,
            warmup=0,
            num_threads=threads,
        )
    )
    for size in sizes:
        renderer = SceneRenderer(*size, seed=0, vehicle_scale=True)
        frame = renderer.render(2.0)
        hazy, _ = synthesize_haze(
            frame.rgb.astype(np.float32) / 255, frame.depth_m, 3.912 / 300.0, 0.9
        )
        image = (hazy * 255 + 0.5).astype(np.uint8)
        camera = Pinhole(frame.K[0, 0], frame.K[1, 1], frame.K[0, 2], frame.K[1, 2])
        height = float(renderer.scene.eye[1] - renderer.scene.eye_surface_z)
        mountings = {
            "learned": Mounting(),
            "ground-height": Mounting(height),
            "ground": Mounting(height, 2.0),
            "anchors": Mounting(),
        }
        points = synthetic_lidar(frame.depth_m, camera.fx, camera.fy, camera.cx, camera.cy)
        # Warm-up at this size (first oneDNN calls), untimed: on a busy machine it alone can
        # outlast --budget-s and leave a row with one run.
        engine.process(image, want_dehazed=False, camera=camera)
        baseline = None
        for source in sorted(sources, key=lambda name: name != "learned"):
            engine.reset_scale()
            stage, with_factor = [], 0
            started = time.perf_counter()
            while len(stage) < max_runs and (not stage or time.perf_counter() - started < budget_s):
                stamp = 0.1 * len(stage)
                anchors = AnchorCloud.of(points, stamp) if source == "anchors" else None
                result = engine.process(
                    image,
                    want_dehazed=False,
                    camera=camera,
                    stamp_s=stamp,
                    mounting=mountings[source],
                    anchors=anchors,
                )
                stage.append(result.timings_ms["scale"])
                with_factor += result.scale.source != "learned"
            if source == "learned":
                baseline = float(np.median(stage))
            added = f"{np.median(stage) - baseline:.2f}" if baseline is not None else "–"
            print(
                f"| {SCALE_SOURCES[source]} | {size[0]}x{size[1]} | {np.median(stage):.2f} | "
                f"{np.percentile(stage, 95):.2f} | {added} | {len(stage)} | {with_factor} |",
                flush=True,
            )
    engine.close()


def time_engine(
    engine: DehazeEngine, image: np.ndarray, max_runs: int, budget_s: float
) -> list[float]:
    engine.process(image)  # warm-up at this size (allocator, oneDNN/cuDNN kernel choice)
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < max_runs and (not latencies or time.perf_counter() - started < budget_s):
        latencies.append(engine.process(image).timings_ms["total"])
    return latencies


def write_random_checkpoint(name: str, folder: Path) -> tuple[Path, int, object]:
    config = PRESETS[name]
    dehazer, depth_net = build_dehazer(config), build_depth_net(config)
    path = folder / f"{name}.pt"
    save_checkpoint(
        path,
        model_config=config.to_dict(),
        dehazer_state=dehazer.state_dict(),
        depth_net_state=depth_net.state_dict(),
        provenance={"note": "benchmark, random"},
    )
    return path, count_parameters(dehazer) + count_parameters(depth_net), (dehazer, depth_net)


def load_trained_checkpoint(path: str) -> tuple[Path, int, object]:
    dehazer, depth_net = build_models(load_checkpoint(path))
    params = count_parameters(dehazer) + (
        count_parameters(depth_net) if depth_net is not None else 0
    )
    return Path(path), params, (dehazer, depth_net)


def build_parser() -> argparse.ArgumentParser:
    """The command line: devices, precisions, sizes, models and backends to time."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default=SPECS["device"].default, help="auto | cpu | cuda | cuda:N"
    )
    parser.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated, each of auto | fp32 | fp16 | bf16: rows for every one",
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=parse_sizes("320x240,640x480,1280x720")
    )
    parser.add_argument("--variants", default=",".join(PRESETS), help="comma-separated presets")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PATH",
        help="time this trained checkpoint instead of the random presets (repeatable)",
    )
    parser.add_argument(
        "--rt-max-side",
        type=int,
        default=SPECS["max_side"].default,
        help="extra rows for diacmpn-rt and --checkpoint files at this max_side (default: the "
        "node's; 0 = none)",
    )
    parser.add_argument("--max-runs", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=8.0, help="time budget per cell")
    parser.add_argument(
        "--threads",
        type=int,
        default=SPECS["num_threads"].default,
        help="torch (and onnxruntime) CPU threads (0 = their default), as the node's num_threads",
    )
    parser.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help="comma-separated, each of torch | onnxruntime | openvino: rows for every one "
        "(onnxruntime / openvino are skipped with a note when their extra is missing)",
    )
    parser.add_argument(
        "--scale-sources",
        default=",".join(SCALE_SOURCES),
        help=f"comma separated, rows of the second table: {', '.join(SCALE_SOURCES)}; '' = none",
    )
    return parser


def chosen_precisions(parser: argparse.ArgumentParser, names: str, device) -> list[str]:
    """The precisions of ``--precisions`` this device runs (the others skipped with a note)."""
    precisions = []
    for name in (p for p in names.split(",") if p):
        if name not in PRECISIONS:
            parser.error(f"unknown precision {name!r}; choose from {PRECISIONS}")
        try:
            precisions.append(precision_name(resolve_precision(name, device)))
        except DeviceError as exc:
            print(f"# {name} skipped: {exc}")
    precisions = list(dict.fromkeys(precisions))  # auto may resolve to a listed one
    return precisions


def chosen_backends(parser: argparse.ArgumentParser, names: str) -> list[str]:
    """The backends of ``--backends`` whose extras are installed (the others skipped with a
    note)."""
    backends = [b for b in names.split(",") if b]
    if set(backends) - {"torch", "onnxruntime", "openvino"}:
        parser.error(
            f"unknown backends {sorted(set(backends) - {'torch', 'onnxruntime', 'openvino'})}; "
            "choose torch, onnxruntime, openvino"
        )
    if "onnxruntime" in backends:
        missing = [
            m for m in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(m) is None
        ]
        if missing:
            print(
                f"# onnxruntime rows skipped: {', '.join(missing)} not installed (pip install "
                f"'.[onnx]')"
            )
            backends.remove("onnxruntime")
    if "openvino" in backends:
        missing = [
            m for m in ("openvino", "onnx", "onnxscript") if importlib.util.find_spec(m) is None
        ]
        if missing:
            print(
                f"# openvino rows skipped: {', '.join(missing)} not installed (pip install "
                f"'.[openvino]')"
            )
            backends.remove("openvino")
    return backends


def chosen_variants(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The models to time and the trained checkpoints by file name: the ``--checkpoint`` files
    where given, otherwise the ``--variants`` presets."""
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in PRESETS]
    if unknown:
        parser.error(f"unknown variants {unknown}; presets: {list(PRESETS)}")
    trained = {}
    for path in args.checkpoint:
        if Path(path).name in trained:
            parser.error(
                f"--checkpoint: two files named {Path(path).name!r}; rows are labelled by file name"
            )
        try:
            trained[Path(path).name] = load_trained_checkpoint(path)
        except (CheckpointError, OSError) as exc:
            parser.error(f"--checkpoint: {exc}")
    if trained:
        variants = list(trained)
    return variants, trained


def print_header(device, rt_max_side: int) -> None:
    """The device line, what is timed, and the table's head."""
    processor = platform.processor() or platform.machine()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else processor
    print(
        f"# device: {device} ({device_name}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print(
        "# one network pass per frame at the internal size (depth_max_side 0); a node at "
        f"max_side 0 adds a depth pass at depth_max_side, timed by the max_side {rt_max_side} "
        "rows"
    )
    print(
        "| model | backend | precision | input | internal | params (M) | GMACs "
        "| median ms | p95 ms | frames/s | runs |"
    )
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")


def print_row(label, backend, precision, size, internal, params, gmacs, latencies):
    """Print one row of the timing table."""
    median, p95 = np.median(latencies), np.percentile(latencies, 95)
    params_text = f"{params / 1e6:.2f}" if params else "-"
    gmacs_text = f"{gmacs:.1f}" if gmacs is not None else "-"
    print(
        f"| {label} | {backend} | {precision} | {size[0]}x{size[1]} "
        f"| {internal[1]}x{internal[0]} | {params_text} | {gmacs_text} "
        f"| {median:.1f} | {p95:.1f} | {1000 / median:.1f} | {len(latencies)} |",
        flush=True,
    )


def time_dcp(args: argparse.Namespace, images: dict) -> None:
    """The DCP baseline's rows, one per frame size."""
    for size in args.sizes:
        # At the frame's size, as the "internal" column says (the engine default is the node's).
        engine = DehazeEngine(EngineConfig(model="dcp", max_side=0, warmup=0))
        print_row(
            "dcp",
            "numpy",
            "fp32",
            size,
            size[::-1],
            0,
            None,
            time_engine(engine, images[size], args.max_runs, args.budget_s),
        )


def time_variant(
    name: str,
    folder: str,
    trained: dict,
    backends: list[str],
    precisions: list[str],
    args: argparse.Namespace,
    images: dict,
) -> None:
    """The rows of one model: every max_side setting, frame size, backend and precision."""
    path, params, (dehazer, depth_net) = trained.get(name) or write_random_checkpoint(
        name, Path(folder)
    )
    graph = Path(folder) / f"{name}.onnx"
    if {"onnxruntime", "openvino"} & set(backends):
        from dehaze_ros.onnx_export import export_onnx

        print(f"# exporting {name} to ONNX ...", flush=True)
        export_onnx(path, graph)
    refused: set[str] = set()
    settings = [0] + (
        [args.rt_max_side] if name in ("diacmpn-rt", *trained) and args.rt_max_side else []
    )
    for max_side in settings:
        label = name if not max_side else f"{name} (max_side {max_side})"
        for size in args.sizes:
            internal = scaled_size(size[1], size[0], max_side)
            shape = (1, 3, internal[0], internal[1])
            gmacs = (
                count_macs(dehazer, shape) + (count_macs(depth_net, shape) if depth_net else 0)
            ) / 1e9
            # Backends and precisions of one cell next to each other: like with like.
            for backend in backends:
                for precision in precisions:
                    try:
                        engine = DehazeEngine(
                            EngineConfig(
                                checkpoint=str(path),
                                backend=backend,
                                onnx_model=str(graph),
                                device=args.device,
                                precision=precision,
                                max_side=max_side,
                                depth_max_side=0,
                                warmup=0,
                                num_threads=args.threads,
                            )
                        )
                    except EngineError as exc:
                        if f"{backend} {precision}" not in refused:
                            refused.add(f"{backend} {precision}")
                            print(f"# {backend} {precision} skipped: {exc}", flush=True)
                        continue
                    print_row(
                        label,
                        backend,
                        engine.describe()["precision"],
                        size,
                        internal,
                        params,
                        gmacs,
                        time_engine(engine, images[size], args.max_runs, args.budget_s),
                    )
                    engine.close()


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    scale_sources = [source for source in args.scale_sources.split(",") if source]
    if set(scale_sources) - set(SCALE_SOURCES):
        parser.error(
            f"unknown scale sources {sorted(set(scale_sources) - set(SCALE_SOURCES))}; "
            f"choose from {', '.join(SCALE_SOURCES)}"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = chosen_precisions(parser, args.precisions, device)
    backends = chosen_backends(parser, args.backends)
    variants, trained = chosen_variants(parser, args)

    print_header(device, args.rt_max_side)
    images = {size: hazy_frame(*size) for size in args.sizes}
    time_dcp(args, images)

    with tempfile.TemporaryDirectory() as folder:
        for name in variants:
            time_variant(name, folder, trained, backends, precisions, args, images)
    if scale_sources:
        time_scale_sources(
            scale_sources,
            args.sizes,
            args.device,
            args.threads,
            args.rt_max_side or SPECS["max_side"].default,
            args.max_runs,
            args.budget_s,
        )


if __name__ == "__main__":
    main()
