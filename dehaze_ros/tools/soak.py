"""Soak test: the node on the sample camera for a long time; its memory, latency and drops.

    python -m dehaze_ros.tools.soak [--minutes 30] [--rate 15] [--interval 60]
                                    [--output soak_output]

Starts `sample_camera` (pre-rendered loop at --rate) and `dehaze_node` (the shipped checkpoint,
the node's defaults) as two processes, the way the demo does, and a listener here subscribed to
dehazed/image, depth/image and points (what an RViz user looks at). Every --interval seconds it
writes one row to soak_output/soak.csv:

    minute, node RSS (MB), outputs/s, latency stamp->received median and p95 (ms),
    frames the node dropped (newer frame arrived), invalid, failed, processing thread restarts

and at the end one summary line: RSS growth from the end of the warm-up (--warmup-minutes) to
the end, and the latency drift (median of the last third of the rows against the first third
after warm-up). Not a test: a measurement to run once in a while and put in docs/robustness.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from dehaze_ros.ros.stats import KEY_DROPPED, KEY_INVALID, percentile
from dehaze_ros.tools import processes
from dehaze_ros.tools.demo import NAMESPACE, choose_model, demo_environment, start_child

COLUMNS = (
    "minute",
    "node_rss_mb",
    "outputs_per_s",
    "latency_median_ms",
    "latency_p95_ms",
    "dropped",
    "invalid",
    "failed",
    "thread_restarts",
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--minutes", type=float, default=30.0, help="how long to run after start-up"
    )
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=3.0,
        help="rows before this are left out of the growth and drift figures",
    )
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per CSV row")
    parser.add_argument("--rate", type=float, default=15.0, help="camera frame rate (Hz)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--model", choices=("auto", "checkpoint", "dcp"), default="auto")
    parser.add_argument("--checkpoint", default="")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="dehaze_node num_threads (1: the camera shares the cores; the demo picks 1 for "
        "torch and 0 for openvino)",
    )
    parser.add_argument("--output", type=Path, default=Path("soak_output"))
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.minutes * 60 < 2 * args.interval:
        parser.error("--minutes must cover at least two --interval rows")
    return args


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Listener:
    """What an RViz user subscribes to, plus /diagnostics; latencies of dehazed/image."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        reliable = QoSProfile(depth=2, reliability=QoSReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, f"{NAMESPACE}/dehazed/image", self.on_dehazed, reliable)
        node.create_subscription(Image, f"{NAMESPACE}/depth/image", lambda msg: None, reliable)
        node.create_subscription(PointCloud2, f"{NAMESPACE}/points", lambda msg: None, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)
        self.latencies_ms: list[float] = []
        self.outputs = 0
        self.diagnostics: dict[str, str] = {}

    def on_dehazed(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.latencies_ms.append((time.time() - stamp) * 1e3)
        self.outputs += 1

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NAMESPACE}/dehaze_node"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def take(self) -> tuple[list[float], int]:
        latencies, outputs = self.latencies_ms, self.outputs
        self.latencies_ms, self.outputs = [], 0
        return latencies, outputs


def counter(diagnostics: dict, key: str) -> int:
    try:
        return int(diagnostics.get(key, "0"))
    except ValueError:
        return 0


def summarise(rows: list[dict], warmup_minutes: float) -> str:
    steady = [row for row in rows if row["minute"] >= warmup_minutes]
    if len(steady) < 3:
        return "soak summary: fewer than 3 rows after the warm-up; run longer"
    first_rss, last_rss = steady[0]["node_rss_mb"], steady[-1]["node_rss_mb"]
    peak_rss = max(row["node_rss_mb"] for row in steady)
    third = max(1, len(steady) // 3)
    early = statistics.median(row["latency_median_ms"] for row in steady[:third])
    late = statistics.median(row["latency_median_ms"] for row in steady[-third:])
    early_p95 = statistics.median(row["latency_p95_ms"] for row in steady[:third])
    late_p95 = statistics.median(row["latency_p95_ms"] for row in steady[-third:])
    rate = statistics.median(row["outputs_per_s"] for row in steady)
    return (
        f"soak summary: {rows[-1]['minute']:.0f} min; node RSS {first_rss:.0f} MB after "
        f"{warmup_minutes:g} min warm-up -> {last_rss:.0f} MB at the end "
        f"({(last_rss / first_rss - 1) * 100:+.1f} %, peak {peak_rss:.0f} MB); latency median "
        f"{early:.0f} -> {late:.0f} ms, p95 {early_p95:.0f} -> {late_p95:.0f} ms (first vs last "
        f"third); output {rate:.1f} frames/s median; dropped {rows[-1]['dropped']}, invalid "
        f"{rows[-1]['invalid']}, failed {rows[-1]['failed']}, thread restarts "
        f"{rows[-1]['thread_restarts']}"
    )


def _stop_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM (kill, a time limit) and SIGINT (also when started as a background job, which
    # inherits SIGINT ignored) end the run the same way: children stopped, the rows so far kept
    # and summarised.
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    signal.signal(signal.SIGINT, _stop_like_ctrl_c)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("soak: stopped early; the rows so far are in the CSV", file=sys.stderr)
        return 130


def child_arguments(args: argparse.Namespace, model: str, checkpoint: str) -> tuple[list, list]:
    """The ROS arguments of the sample camera and of the dehazing node."""
    camera_args = [
        "-r",
        f"__ns:={NAMESPACE}",
        "-p",
        f"width:={args.width}",
        "-p",
        f"height:={args.height}",
        "-p",
        f"rate_hz:={float(args.rate)}",
        "-p",
        f"prerender_frames:={round(4 * args.rate)}",
    ]
    node_args = [
        "-r",
        f"__ns:={NAMESPACE}",
        "-p",
        f"model:={model}",
        "-p",
        f"num_threads:={args.num_threads}",
    ]
    if checkpoint:
        node_args += ["-p", f"checkpoint:={checkpoint}"]
    return camera_args, node_args


def wait_for_output(executor, listener: Listener, children: list, output: Path) -> bool:
    """Spin until the node's first output (False: none within 120 s, or a process exited)."""
    deadline = time.monotonic() + 120
    while listener.outputs == 0:
        if time.monotonic() > deadline or any(child.poll() is not None for child in children):
            print(
                f"soak: no output within 120 s (or a process exited); see {output}/",
                file=sys.stderr,
            )
            return False
        executor.spin_once(timeout_sec=0.1)
    return True


def soak_row(listener: Listener, dehaze, started: float, interval: float) -> dict:
    """One CSV row: the node's memory, output rate and latency over the last interval, and its
    counters."""
    latencies, outputs = listener.take()
    diagnostics = listener.diagnostics
    return {
        "minute": round((time.monotonic() - started) / 60, 2),
        "node_rss_mb": round(rss_mb(dehaze.pid), 1),
        "outputs_per_s": round(outputs / interval, 2),
        "latency_median_ms": round(statistics.median(latencies), 1) if latencies else float("nan"),
        "latency_p95_ms": round(percentile(latencies, 0.95), 1) if latencies else float("nan"),
        "dropped": counter(diagnostics, KEY_DROPPED),
        "invalid": counter(diagnostics, KEY_INVALID),
        "failed": counter(diagnostics, "frames failed (engine error)"),
        "thread_restarts": counter(diagnostics, "processing thread restarts"),
    }


def run(args: argparse.Namespace) -> int:
    env = demo_environment()
    os.environ.clear()
    os.environ.update(env)  # the listener here needs the same DDS setup as the children
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    model, checkpoint = choose_model(args)
    args.output.mkdir(parents=True, exist_ok=True)
    camera_args, node_args = child_arguments(args, model, checkpoint)
    children = []
    context = Context()
    rclpy.init(context=context, args=[])
    node = None
    rows: list[dict] = []
    try:
        dehaze = start_child(
            "dehaze_ros.ros.dehaze_node", node_args, env, args.output / "dehaze_node.log"
        )
        children.append(dehaze)
        children.append(
            start_child(
                "dehaze_ros.sim.sample_camera", camera_args, env, args.output / "sample_camera.log"
            )
        )
        node = rclpy.create_node("soak_listener", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        listener = Listener(node)
        if not wait_for_output(executor, listener, children, args.output):
            return 1
        listener.take()
        started = time.monotonic()
        print(
            f"soak: {model} at {args.width}x{args.height}, {args.rate:g} Hz, {args.minutes:g} min, "
            f"rows every {args.interval:g} s into {args.output}/soak.csv",
            flush=True,
        )
        with open(args.output / "soak.csv", "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS)
            writer.writeheader()
            next_row = started + args.interval
            while time.monotonic() - started < args.minutes * 60:
                executor.spin_once(timeout_sec=0.1)
                if time.monotonic() < next_row:
                    continue
                if any(child.poll() is not None for child in children):
                    print("soak: a process exited; see the logs", file=sys.stderr)
                    return 1
                row = soak_row(listener, dehaze, started, args.interval)
                rows.append(row)
                writer.writerow(row)
                file.flush()
                print(", ".join(f"{key} {value}" for key, value in row.items()), flush=True)
                next_row += args.interval
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
        processes.stop(children)
        summary = summarise(rows, args.warmup_minutes)
        (args.output / "summary.txt").write_text(summary + "\n")
        print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
