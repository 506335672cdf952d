"""The int8 trial of issue 28: post-training quantisation of the exported graph, calibrated on
rendered hazy frames, for OpenVINO's CPU plugin (docs/performance.md, "int8").

    python -m training.quantize_trial GRAPH.onnx --out int8.onnx [--frames 64]
    python -m training.quantize_trial GRAPH.onnx --out int8.onnx --time 640x480 [--rounds 20]
    python -m training.quantize_trial GRAPH.onnx --out mixed.onnx --keep-float SCOPES
    python -m training.quantize_trial GRAPH.onnx --out photos.onnx --images DIR

GRAPH.onnx is an fp32 graph of ``python -m training.export CHECKPOINT --onnx GRAPH.onnx``. The
result is the same graph with QuantizeLinear / DequantizeLinear pairs (onnxruntime.quantization,
QDQ format, MinMax calibration) on the inputs of the convolutions, the transposed convolutions and
the airlight head's Gemm: weights int8, symmetric, per output channel; activations uint8,
asymmetric, one range per tensor. Everything else (the DCP prior's erosion and box sums, the
guided filter, concatenations, additions) stays float. The graph keeps the fp32 graph's
metadata (plus a ``quantization`` entry saying what was done), so ``backend: openvino`` with
``onnx_model`` runs it as it is, and OpenVINO's CPU plugin runs the quantised convolutions in
int8; ``training.evaluate --backend openvino --onnx-model`` scores it.

Calibration frames: the package's own renderer (``dehaze_ros.sim.scenes``: room-scale and
vehicle-scale scenes, half each) under the training haze (``synthesize_random_haze``), at the
node's default network size 320x240, from a seed stream of their own; never the validation sets.
``--images DIR`` calibrates on the photos of DIR instead (their longer side resized to 320).
``--keep-float`` leaves the convolutions of the named module scopes (the exporter's
``pkg.torch.onnx.name_scopes``, e.g. ``dehazer.structure_branch,depth_net``) in float.

``--time WxH``: OpenVINO fp32 and bf16 (where the CPU has it) on GRAPH.onnx and the quantised
graph (the rest of its graph in fp32, and in bf16) through the whole engine
(``DehazeEngine.process`` at ``--max-side``, depth in the same pass, as the benchmark's rows),
interleaved round by round in one process so that a shared machine's load falls on all alike.

The trial did not pass issue 28's gate, so the package has no ``precision: int8``: this script is
how to run it again (another checkpoint, another OpenVINO, another CPU).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np

from dehaze_ros.sim.scenes import render_random_outdoor_view, render_random_view
from training.config import HazeConfig

CALIBRATION_SEED = 20261207  # a stream of its own: no training or validation rng uses it
OUTDOOR_SHARE = 0.5  # the share of vehicle-scale outdoor frames
# The outdoor haze of training.data.procedural.ProceduralConfig.outdoor_haze.
OUTDOOR_HAZE = HazeConfig(visibility_range_m=[30.0, 5000.0], airlight_range=[0.6, 1.0])
QUANTISED_OPS = ("Conv", "ConvTranspose", "Gemm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def as_input(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB (uint8, or float in [0, 1]) -> the graph's float32 1 x 3 x H x W input."""
    scale = 1.0 / 255.0 if rgb.dtype == np.uint8 else 1.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) * np.float32(scale)


def calibration_frames(count: int, width: int = 320, height: int = 240, seed: int = 0) -> list:
    """``count`` rendered hazy frames, each the graph's float32 1 x 3 x height x width input."""
    from training.data.common import synthesize_random_haze, to_float

    rng = np.random.default_rng([CALIBRATION_SEED, seed])
    frames = []
    for _ in range(count):
        outdoor = rng.random() < OUTDOOR_SHARE
        render = render_random_outdoor_view if outdoor else render_random_view
        frame = render(rng, width, height)
        haze = OUTDOOR_HAZE if outdoor else HazeConfig()
        frames.append(
            as_input(synthesize_random_haze(to_float(frame.rgb), frame.depth_m, haze, rng))
        )
    return frames


def photo_frames(folder: Path, longer_side: int = 320) -> list:
    """The photos under ``folder`` (recursively), longer side resized to ``longer_side``."""
    import cv2

    frames = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        scale = longer_side / max(bgr.shape[:2])
        size = (max(16, round(bgr.shape[1] * scale)), max(16, round(bgr.shape[0] * scale)))
        frames.append(as_input(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)[..., ::-1]))
    return frames


def module_scope(node) -> str:
    """The torch module a node of the exported graph came from ("" when unknown)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = ast.literal_eval(prop.value)
            return scopes[-2] if len(scopes) >= 2 else ""
    return ""


def in_scopes(scope: str, prefixes: list[str]) -> bool:
    return any(scope == p or scope.startswith(p + ".") for p in prefixes)


def quantize_graph(
    source: Path, out: Path, frames: list, keep_float: list[str] = (), calibration: str = ""
) -> dict:
    """Write the QDQ graph of ``source`` calibrated on ``frames``; returns what was done."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.items = iter(frames)

        def get_next(self):
            frame = next(self.items, None)
            return None if frame is None else {"hazy": frame}

    fp32 = onnx.load(str(source))
    candidates = [node for node in fp32.graph.node if node.op_type in QUANTISED_OPS]
    chosen = [node.name for node in candidates if not in_scopes(module_scope(node), keep_float)]
    quantize_static(
        str(source),
        str(out),
        Frames(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTISED_OPS),
        nodes_to_quantize=chosen,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True},
    )
    graph = onnx.load(str(out))
    producer = {output: node.op_type for node in graph.graph.node for output in node.output}
    quantised = [
        node
        for node in graph.graph.node
        if node.op_type in QUANTISED_OPS and producer.get(node.input[0]) == "DequantizeLinear"
    ]
    summary = {
        "tool": "onnxruntime.quantization.quantize_static, QDQ",
        "weights": "int8 symmetric per output channel",
        "activations": "uint8 asymmetric per tensor, MinMax",
        "calibration": calibration or f"{len(frames)} frames",
        "quantised": f"{len(quantised)} of {len(candidates)} Conv/ConvTranspose/Gemm",
        "kept_float": list(keep_float),
    }
    # The fp32 graph's metadata, so that OnnxMetadata reads the quantised graph alike.
    del graph.metadata_props[:]
    for prop in fp32.metadata_props:
        graph.metadata_props.add(key=prop.key, value=prop.value)
    graph.metadata_props.add(key="quantization", value=json.dumps(summary, sort_keys=True))
    onnx.save(graph, str(out))
    return summary


def time_engines(graphs: dict, size: tuple[int, int], max_side: int, rounds: int) -> dict:
    """Per engine, ``rounds`` interleaved ``DehazeEngine.process`` calls: wall ms, the network's
    share of each (the engine's "dehaze" stage: the graph's inference) and the CPU ms of the whole
    process (all threads; steadier than wall time on a shared machine)."""
    from dehaze_ros.devices import cpu_supports_bf16
    from dehaze_ros.engine import DehazeEngine, EngineConfig
    from dehaze_ros.tools.benchmark import hazy_frame

    engines = {}
    for label, (graph, precision) in graphs.items():
        if precision == "bf16" and not cpu_supports_bf16():
            print(f"# {label} skipped: this CPU has no native bf16", flush=True)
            continue
        engines[label] = DehazeEngine(
            EngineConfig(
                model="checkpoint",
                backend="openvino",
                onnx_model=str(graph),
                precision=precision,
                max_side=max_side,
                depth_max_side=0,
                warmup=0,
            )
        )
    frame = hazy_frame(*size)
    for engine in engines.values():
        engine.process(frame)  # compiles for this size
    times = {label: ([], [], []) for label in engines}
    for _ in range(rounds):
        for label, engine in engines.items():
            mark, cpu = time.perf_counter(), time.process_time()
            result = engine.process(frame)
            times[label][0].append((time.perf_counter() - mark) * 1e3)
            times[label][1].append(result.timings_ms["dehaze"])
            times[label][2].append((time.process_time() - cpu) * 1e3)
    for engine in engines.values():
        engine.close()
    return times


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.quantize_trial",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("graph", type=Path, help="the fp32 graph (training.export --onnx)")
    parser.add_argument("--out", type=Path, required=True, help="the quantised graph to write")
    parser.add_argument("--frames", type=int, default=64, help="rendered calibration frames")
    parser.add_argument("--seed", type=int, default=0, help="the rendered frames' seed")
    parser.add_argument(
        "--images", type=Path, default=None, help="calibrate on these photos instead"
    )
    parser.add_argument(
        "--keep-float", default="", help="comma-separated module scopes left in float"
    )
    parser.add_argument("--time", type=parse_size, default=None, metavar="WxH")
    parser.add_argument("--max-side", type=int, default=320, help="with --time: engine max_side")
    parser.add_argument("--rounds", type=int, default=20, help="with --time: interleaved rounds")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.graph.is_file():
        parser.error(f"{args.graph} not found")
    if args.images is not None and not args.images.is_dir():
        parser.error(f"--images {args.images} is not a folder")
    if args.out.is_file():
        print(f"# {args.out} exists: not quantised again", flush=True)
    else:
        if args.images is not None:
            frames = photo_frames(args.images)
            calibration = f"{len(frames)} photos of {args.images}, longer side 320"
        else:
            frames = calibration_frames(args.frames, seed=args.seed)
            seed = f"[{CALIBRATION_SEED}, {args.seed}]"
            calibration = f"{len(frames)} rendered hazy frames 320x240, seed {seed}"
        if not frames:
            parser.error(f"no images under {args.images}")
        keep_float = [scope for scope in args.keep_float.split(",") if scope]
        summary = quantize_graph(args.graph, args.out, frames, keep_float, calibration)
        print(json.dumps(summary, indent=1, sort_keys=True), flush=True)
    if args.time:
        graphs = {
            "openvino fp32": (args.graph, "fp32"),
            "openvino bf16": (args.graph, "bf16"),
            "int8, rest fp32": (args.out, "fp32"),
            "int8, rest bf16": (args.out, "bf16"),
        }
        times = time_engines(graphs, args.time, args.max_side, args.rounds)
        print(
            "| engine | median ms | p95 ms | network median ms | CPU median ms | runs |\n"
            "|---|---:|---:|---:|---:|---:|"
        )
        for label, (total, network, cpu) in times.items():
            print(
                f"| {label} | {np.median(total):.1f} | {np.percentile(total, 95):.1f} "
                f"| {np.median(network):.1f} | {np.median(cpu):.1f} | {len(total)} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
