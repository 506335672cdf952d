"""The GPU check: every GPU path of the engine and the node, measured in one run, into a table.

    python -m dehaze_ros.tools.gpu_check --out DIR            # on a GPU machine
    python -m dehaze_ros.tools.gpu_check --out DIR --dry-run  # on a CPU: same code, tiny sizes

For the presets rt (the shipped checkpoint), t and s (random weights: no checkpoint of theirs
ships; speed does not depend on the values) at 640x480 and 1280x720, native resolution (one
network pass at the input size, as a GPU runs them), it times the whole ``DehazeEngine.process``
with torch fp32, fp16 and bf16, onnxruntime's CUDA provider, and TensorRT in fp32 and fp16 (engine
cache in a temporary folder; the first run's time includes the engine build), and compares each
row's outputs with torch fp32 at the same size. Then it runs the node for ``--demo-seconds`` on
the GPU with the bundled camera (``dehaze_ros.tools.demo``). It brings what it needs: the shipped
checkpoint from the package, random checkpoints and ONNX exports made on the spot; nothing is
downloaded.

A row that cannot run is written as ``not available: <why>`` (no CUDA, an onnxruntime without
the CUDA or TensorRT provider, no rclpy for the node, ...), never a crash; one that fails while
running as ``failed: <why>``. ``--budget-s`` bounds the whole run: rows past it read
``not run: time budget``. Written to ``--out``: gpu_check.md (environment and table),
gpu_check.csv (the same rows) and node_mosaic.png (a frame of the node run).

``--dry-run`` runs the same code on the CPU at 64x48 and 96x72 with the rt preset only and a
3 s node run at 160x120: what can run on a CPU runs (torch fp32, bf16 on CPUs with native bf16,
onnxruntime on its CPU provider), the CUDA rows say why they cannot. It is a test
(test/test_gpu_check.py). The device command: docs/performance.md, "The GPU check".
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dehaze_ros.engine import DEFAULT_CHECKPOINT, DehazeEngine, EngineConfig

PRESETS = {"rt": "diacmpn-rt", "t": "diacmpn-t", "s": "diacmpn-s"}
# (row label, backend, precision): torch fp32 first, the reference of the difference columns.
ROWS = (
    ("torch", "torch", "fp32"),
    ("torch", "torch", "fp16"),
    ("torch", "torch", "bf16"),
    ("onnxruntime CUDA", "onnxruntime", "fp32"),
    ("TensorRT", "tensorrt", "fp32"),
    ("TensorRT", "tensorrt", "fp16"),
)
COLUMNS = (
    "model",
    "weights",
    "backend",
    "precision",
    "input",
    "median ms",
    "p95 ms",
    "frames/s",
    "runs",
    "first run s",
    "dehazed max diff",
    "depth median diff %",
    "device",
    "note",
)
NOT_RUN = "not run: time budget (--budget-s) spent"


@dataclass
class Row:
    model: str
    weights: str
    backend: str
    precision: str
    size: str
    values: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def cells(self) -> list[str]:
        numbers = [self.values.get(key, "") for key in COLUMNS[5:12]]
        return [
            self.model,
            self.weights,
            self.backend,
            self.precision,
            self.size,
            *numbers,
            self.values.get("device", ""),
            self.note,
        ]


def short(exc: BaseException | str) -> str:
    """One line of an error, safe in a markdown cell."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace("|", "/")[:300]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for gpu_check.md, .csv and the node's frame"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="on the CPU at tiny sizes: the test of this script"
    )
    parser.add_argument("--device", default="", help="default: cuda (cpu with --dry-run)")
    parser.add_argument(
        "--presets",
        default="",
        help="comma-separated of rt, t, s (default: all; rt with --dry-run)",
    )
    parser.add_argument(
        "--sizes",
        default="",
        help="WIDTHxHEIGHT,... (default 640x480,1280x720; tiny with --dry-run)",
    )
    parser.add_argument(
        "--runs", type=int, default=0, help="timed runs per row (default 30; 2 with --dry-run)"
    )
    parser.add_argument(
        "--cell-budget-s",
        type=float,
        default=0.0,
        help="seconds of timed runs per row at most (default 6; 1 with --dry-run)",
    )
    parser.add_argument(
        "--demo-seconds", type=float, default=0.0, help="node run (default 20; 3 with --dry-run)"
    )
    parser.add_argument(
        "--node-max-side",
        type=int,
        default=0,
        help="the node's max_side in the node run (default 0, native: what a GPU is for)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="the whole run at most (the device tool gives a command 600 s)",
    )
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.device = args.device or ("cpu" if dry else "cuda")
    args.presets = [p for p in (args.presets or ("rt" if dry else "rt,t,s")).split(",") if p]
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown presets {unknown}; choose from {list(PRESETS)}")
    from dehaze_ros.tools.benchmark import parse_sizes

    try:
        args.sizes = parse_sizes(args.sizes or ("64x48,96x72" if dry else "640x480,1280x720"))
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    args.runs = args.runs or (2 if dry else 30)
    args.cell_budget_s = args.cell_budget_s or (1.0 if dry else 6.0)
    args.demo_seconds = args.demo_seconds or (3.0 if dry else 20.0)
    return args


def environment() -> list[str]:
    """What the numbers were measured with, one line each."""
    import torch

    lines = [
        f"python {platform.python_version()}, torch {torch.__version__} (CUDA build "
        f"{torch.version.cuda}), cuDNN "
        f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'none'}"
    ]
    if torch.cuda.is_available():
        lines.append(
            f"GPU: {torch.cuda.get_device_name(0)}, compute capability "
            f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}"
        )
    else:
        lines.append(
            f"GPU: none usable by torch (torch.cuda.is_available() False); CPU "
            f"{platform.processor() or platform.machine()}"
        )
    smi = shutil.which("nvidia-smi")
    if smi:
        query = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines.append(f"nvidia-smi: {query.stdout.strip() or query.stderr.strip()}")
    try:
        import onnxruntime

        lines.append(
            f"onnxruntime {onnxruntime.__version__}: "
            f"{', '.join(onnxruntime.get_available_providers())}"
        )
    except ImportError:
        lines.append("onnxruntime: not installed")
    try:
        import tensorrt

        lines.append(f"tensorrt {tensorrt.__version__}")
    except ImportError:
        lines.append("tensorrt (Python): not installed")
    return lines


def checkpoints(presets: list[str], folder: Path) -> dict[str, tuple[Path, str]]:
    """preset -> (checkpoint, what its weights are): the shipped one for rt, else random."""
    from dehaze_ros.tools.benchmark import write_random_checkpoint

    chosen = {}
    for preset in presets:
        if preset == "rt" and DEFAULT_CHECKPOINT.is_file():
            chosen[preset] = (DEFAULT_CHECKPOINT, "shipped")
        else:
            path, _, _ = write_random_checkpoint(PRESETS[preset], folder)
            chosen[preset] = (path, "random init (no shipped checkpoint)")
    return chosen


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


def row_unavailable(backend: str, precision: str, device: str, providers: list[str]) -> str:
    """Why a row cannot run here, known before trying; "" when it may (the engine decides)."""
    if backend == "torch":
        return ""
    if not providers:
        return "not available: onnxruntime is not installed (pip install 'dehaze_ros[onnx-gpu]')"
    if device == "cpu":
        # The dry run: onnxruntime's CPU provider stands in for CUDA, TensorRT needs a GPU.
        return "not available: TensorRT needs a CUDA device" if backend == "tensorrt" else ""
    if "CUDAExecutionProvider" not in providers:
        return (
            "not available: this onnxruntime has no CUDAExecutionProvider (providers: "
            f"{', '.join(providers)}): the CPU package; onnxruntime-gpu is needed"
        )
    if backend == "tensorrt" and "TensorrtExecutionProvider" not in providers:
        return "not available: this onnxruntime has no TensorrtExecutionProvider"
    if backend == "onnxruntime" and precision != "fp32":
        return "not available: the CUDA provider runs the fp32 graph"
    return ""


def make_engine(
    backend: str, precision: str, device: str, checkpoint: Path, graph: Path | None, trt_cache: Path
) -> DehazeEngine:
    """The engine of one row at native resolution (one pass at the input size, no warm-up)."""
    config = EngineConfig(
        checkpoint=str(checkpoint),
        backend="torch",  # the torch rows are torch's, not auto's choice
        device=device,
        precision=precision,
        max_side=0,
        depth_max_side=0,
        warmup=0,
        trt_cache_dir=str(trt_cache),
    )
    if backend == "torch":
        return DehazeEngine(config)
    from dehaze_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    onnx_backend = OnnxRuntimeBackend(
        graph,
        device=device,
        precision=precision,
        trt_cache_dir=trt_cache,
        tensorrt=backend == "tensorrt",
    )
    if backend == "tensorrt" and "TensorrtExecutionProvider" not in onnx_backend.providers:
        onnx_backend.close()
        raise RuntimeError(
            "onnxruntime could not load TensorRT (session providers: "
            f"{', '.join(onnx_backend.providers)}; its log above says why, usually libnvinfer)"
        )
    return DehazeEngine(
        dataclasses.replace(config, backend="onnxruntime", onnx_model=str(graph)),
        backend=onnx_backend,
    )


def compare(result, reference) -> dict[str, str]:
    """The difference columns against torch fp32's result on the same frame."""
    if reference is None:
        return {}
    dehazed = int(
        np.abs(result.dehazed.astype(np.int16) - reference.dehazed.astype(np.int16)).max()
    )
    finite = np.isfinite(result.depth) & np.isfinite(reference.depth) & (reference.depth > 0)
    depth = (
        float(
            np.median(
                np.abs(result.depth[finite] - reference.depth[finite]) / reference.depth[finite]
            )
            * 100
        )
        if finite.any()
        else float("nan")
    )
    return {"dehazed max diff": str(dehazed), "depth median diff %": f"{depth:.3f}"}


def measure(row: Row, engine: DehazeEngine, image: np.ndarray, args, reference) -> object:
    """Times one row in place; returns the result of its first run (for the differences)."""
    from dehaze_ros.tools.benchmark import time_engine

    started = time.perf_counter()
    first = engine.process(image)  # CUDA context, cuDNN autotuning, the TensorRT build
    first_s = time.perf_counter() - started
    latencies = time_engine(engine, image, args.runs, args.cell_budget_s)
    median = float(np.median(latencies))
    row.values.update(
        {
            "median ms": f"{median:.1f}",
            "p95 ms": f"{np.percentile(latencies, 95):.1f}",
            "frames/s": f"{1000 / median:.1f}",
            "runs": str(len(latencies)),
            "first run s": f"{first_s:.1f}",
            "device": str(engine.describe().get("device", "")),
        }
    )
    row.values.update(compare(first, reference))
    return first


def measure_engines(
    args, ckpts: dict[str, tuple[Path, str]], work: Path, deadline: float, log
) -> list[Row]:
    from dehaze_ros.tools.benchmark import hazy_frame

    providers = onnxruntime_providers()
    rows: list[Row] = []
    images = {size: hazy_frame(*size) for size in args.sizes}
    for preset in args.presets:
        checkpoint, weights = ckpts[preset]
        graph, export_note = None, ""
        wants_graph = any(
            not row_unavailable(backend, p, args.device, providers)
            for _, backend, p in ROWS
            if backend != "torch"
        )
        if wants_graph and time.monotonic() < deadline:
            from dehaze_ros.onnx_export import export_onnx

            log(f"exporting {PRESETS[preset]} to ONNX ...")
            started = time.monotonic()
            try:
                graph = work / f"{preset}.onnx"
                export_onnx(checkpoint, graph)
                log(f"exported in {time.monotonic() - started:.0f} s")
            except Exception as exc:  # noqa: BLE001 - any export failure makes its rows unavailable
                graph, export_note = None, f"not available: the ONNX export failed: {short(exc)}"
        for width, height in args.sizes:
            reference = None
            for label, backend, precision in ROWS:
                row = Row(PRESETS[preset], weights, label, precision, f"{width}x{height}")
                rows.append(row)
                row.note = row_unavailable(backend, precision, args.device, providers)
                if not row.note and backend != "torch" and graph is None:
                    row.note = export_note or NOT_RUN
                if row.note:
                    continue
                if time.monotonic() > deadline:
                    row.note = NOT_RUN
                    continue
                log(f"{row.model} {label} {precision} {width}x{height} ...")
                try:
                    engine = make_engine(
                        backend, precision, args.device, checkpoint, graph, work / "trt"
                    )
                except Exception as exc:  # noqa: BLE001 - Engine/Backend/DeviceError, CUDA: alike
                    row.note = f"not available: {short(exc)}"
                    continue
                try:
                    first = measure(row, engine, images[(width, height)], args, reference)
                    if (backend, precision) == ("torch", "fp32"):
                        reference = first
                        row.values.update({"dehazed max diff": "ref", "depth median diff %": "ref"})
                    if backend == "onnxruntime" and args.device == "cpu":
                        row.note = "dry run: onnxruntime's CPU provider in place of CUDA"
                except Exception as exc:  # noqa: BLE001 - out of memory, a provider failing
                    row.note = f"failed: {short(exc)}"
                finally:
                    engine.close()
    return rows


def demo_command(args, work: Path) -> list[str]:
    """The `make demo` command line the node run starts, sized for the dry run or the GPU."""
    command = [
        sys.executable,
        "-m",
        "dehaze_ros.tools.demo",
        "--duration",
        str(args.demo_seconds),
        "--device",
        args.device,
        "--model",
        "checkpoint",
        "--output",
        str(work / "demo"),
        "--max-side",
        str(args.node_max_side),
    ]
    # The dry run shares a small CPU with the camera and the recorder (the demo's own default, 1
    # thread); on a GPU machine torch's default, as the node has.
    command += (
        [
            "--width",
            "160",
            "--height",
            "120",
            "--rate",
            "5",
            "--loop-seconds",
            "1",
            "--num-threads",
            "1",
        ]
        if args.dry_run
        else ["--num-threads", "0"]
    )
    return command


def run_node(args, work: Path, deadline: float, log) -> tuple[Row, list[str]]:
    """The node on the bundled camera, as `make demo` runs it, on the checked device."""
    row = Row(
        "diacmpn-rt", "shipped", "node (demo)", "auto", "160x120" if args.dry_run else "640x480"
    )
    if importlib.util.find_spec("rclpy") is None:
        row.note = (
            "not available: rclpy is not importable (source a ROS 2 install, or pip install -r "
            "requirements-ros-pypi.txt)"
        )
        return row, []
    remaining = deadline - time.monotonic()
    if remaining < args.demo_seconds + 30:
        row.note = NOT_RUN
        return row, []
    command = demo_command(args, work)
    log("node run: " + " ".join(command[1:]))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=remaining)
    except subprocess.TimeoutExpired:
        row.note = "failed: the node run outlasted the time budget"
        return row, []
    lines = [
        line
        for line in completed.stdout.splitlines()
        if line.startswith(("demo summary", "demo timing"))
    ]
    summary = next((line for line in lines if line.startswith("demo summary")), "")
    if completed.returncode != 0 or not summary:
        tail = (
            completed.stderr.strip().splitlines()
            or completed.stdout.strip().splitlines()
            or ["no output"]
        )[-1]
        row.note = f"failed (exit {completed.returncode}): {short(tail)}"
        return row, lines
    fps = re.search(r"output ([\d.]+) fps", summary)
    latency = re.search(r"median (\d+) ms, p95 (\d+) ms", summary)
    device = re.search(r"\(([^)]*)\), \d+x\d+", summary)
    row.values.update(
        {"frames/s": fps.group(1) if fps else "", "device": device.group(1) if device else ""}
    )
    if latency:
        row.values.update({"median ms": latency.group(1), "p95 ms": latency.group(2)})
    row.note = (
        f"latency camera stamp -> received, {args.demo_seconds:g} s, max_side {args.node_max_side}"
    )
    mosaic = work / "demo" / "mosaic_00.png"
    if mosaic.is_file():
        shutil.copy(mosaic, args.out / "node_mosaic.png")
    return row, lines


def write_report(
    args, rows: list[Row], env: list[str], node_lines: list[str], started: float
) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "gpu_check.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows(row.cells() for row in rows)
    mode = "dry run on the CPU (tiny sizes)" if args.dry_run else f"device {args.device}"
    lines = [
        f"# GPU check ({mode}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{time.monotonic() - started:.0f} s",
        "",
        *[f"- {line}" for line in env],
        "",
        "Engine rows: the whole `DehazeEngine.process` at native resolution (max_side 0, depth "
        "in the same pass), median over the timed runs after a first run (`first run s`: CUDA "
        "context, cuDNN autotuning, TensorRT engine build). Differences against torch fp32 on the "
        "same frame: dehazed image, max over pixels (0-255); depth, median relative difference.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    if node_lines:
        lines += [
            "",
            "Node run (`python -m dehaze_ros.tools.demo`):",
            "",
            "```",
            *node_lines,
            "```",
        ]
    path = args.out / "gpu_check.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_s

    def log(message: str) -> None:
        print(f"gpu_check [{time.monotonic() - started:5.0f} s] {message}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    for line in env:
        log(line)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        work = Path(folder)
        ckpts = checkpoints(args.presets, work)
        # The node run is kept its share of the budget: the engine rows stop before it.
        rows = measure_engines(args, ckpts, work, deadline - args.demo_seconds - 60, log)
        node_row, node_lines = run_node(args, work, deadline, log)
        rows.append(node_row)
        path = write_report(args, rows, env, node_lines, started)
    print(path.read_text(), flush=True)
    measured = sum(1 for row in rows if row.values.get("median ms") or row.values.get("frames/s"))
    log(f"{measured} of {len(rows)} rows measured; written to {args.out}/")
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
