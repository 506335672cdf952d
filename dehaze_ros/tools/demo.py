"""`make demo`: the sample camera and the dehaze node as two processes over DDS, recorded.

    python -m dehaze_ros.tools.demo [--duration 20] [--model auto|checkpoint|dcp]
                                    [--output demo_output]

Starts `sample_camera` (procedural hazy stream) and `dehaze_node` as separate processes, the
way `ros2 launch` would, and a recorder node here that subscribes to the camera and to the
node's outputs. After the first dehazed frame it records for `--duration` seconds and writes

    demo_output/mosaic_NN.png   hazy | dehazed | depth colormap, a few moments of the run
    demo_output/demo.mp4        every recorded mosaic
    demo_output/logs/*.log      what the two child processes printed
    demo_output/visibility.csv  the node's visibility estimate of every recorded frame

then prints one summary line (frames in/out/dropped, end-to-end latency from the camera's
header stamp to the recorder's receipt, output rate). Children are stopped with SIGINT (a
clean rclpy shutdown), killed if they do not exit within 10 s: nothing is left running.
Ctrl-C and SIGTERM stop the demo the same way. Each child runs in its own session and, on
Linux, gets SIGTERM from the kernel if the demo dies without cleaning up (even by SIGKILL).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dehaze_ros.ros.stats import KEY_DEVICE, KEY_DROPPED, KEY_MODEL, KEY_STAGES, percentile
from dehaze_ros.tools import processes

PACKAGE = "dehaze_ros"
NAMESPACE = "/dehaze_demo"
PROFILE_NAME = "fastdds_localhost.xml"
STARTUP_TIMEOUT_S = 90.0


def parse_args(argv=None) -> argparse.Namespace:
    # The node's defaults come from its parameter table (imported here: it loads torch, which
    # the test helpers that only want local_dds_environment need not pay for).
    from dehaze_ros.ros.node_config import SPECS

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds to record after the first output"
    )
    parser.add_argument(
        "--model",
        choices=("auto", *SPECS["model"].choices),
        default="auto",
        help="auto: the shipped checkpoint when there is one, else dcp",
    )
    parser.add_argument(
        "--checkpoint", default="", help="checkpoint path (model checkpoint); empty = shipped one"
    )
    parser.add_argument("--device", default=SPECS["device"].default, help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--backend",
        default=SPECS["backend"].default,
        choices=SPECS["backend"].choices,
        help="dehaze_node backend (the node's parameter table says what each needs)",
    )
    parser.add_argument(
        "--precision",
        default=SPECS["precision"].default,
        choices=SPECS["precision"].choices,
        help="dehaze_node precision",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=SPECS["max_side"].default,
        help="dehaze_node max_side (0 = native; the default is the node's)",
    )
    parser.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="dehaze_node num_threads. Default: 1 when the node runs torch (the camera and "
        "this recorder share the machine with it; on 2 cores torch's second thread lost more "
        "to them than it gained, docs/performance.md 'Measured: make demo'), 0 (the "
        "runtime's own choice) for openvino, which gained from both cores",
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=15.0, help="camera frame rate (Hz)")
    parser.add_argument(
        "--loop-seconds",
        type=float,
        default=4.0,
        help="pre-render this many seconds of the scene at start-up and play them back and "
        "forth, so the camera publishes at --rate (live rendering reaches about 6 Hz "
        "at 640x480); 0 = render live",
    )
    parser.add_argument(
        "--mosaics", type=int, default=4, help="PNG mosaics to save, spread over the run"
    )
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    args = parser.parse_args(argv)
    from dehaze_ros.sim.sample_camera import (
        MAX_PRERENDER_FRAMES,
    )  # rclpy and the renderer: only here

    if args.rate <= 0 or not 0 <= args.loop_seconds * args.rate <= MAX_PRERENDER_FRAMES:
        parser.error(
            f"--loop-seconds x --rate must give 0 to {MAX_PRERENDER_FRAMES} pre-rendered frames "
            f"(sample_camera's prerender_frames), got {args.loop_seconds:g} s at {args.rate:g} Hz"
        )
    return args


def find_localhost_profile() -> Path | None:
    """config/fastdds_localhost.xml: in the installed share (colcon), else in the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config" / PROFILE_NAME)
    except (ImportError, LookupError, OSError):
        pass  # not installed with colcon, or no ament_index (the virtualenv)
    candidates.append(Path(__file__).resolve().parents[2] / "config" / PROFILE_NAME)
    return next((path for path in candidates if path.is_file()), None)


def local_dds_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which ROS 2 processes on this machine exchange camera-sized frames
    over loopback and shared memory only (see config/fastdds_localhost.xml for the why).

    A user's own Fast DDS profile is respected. FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA is set
    too: the profile overrides it, and without the profile it is what large frames need.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    profile = find_localhost_profile()
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env and profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        # LOCALHOST would make rmw_fastrtps replace the profile's transports with a 512 KiB
        # shared-memory segment; the profile itself already keeps discovery on 127.0.0.1.
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
    else:
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env


def demo_environment() -> dict[str, str]:
    """Environment for this process and the children (set before rclpy is imported)."""
    env = local_dds_environment()
    # A private domain unless the user chose one (to watch the demo in RViz, set ROS_DOMAIN_ID).
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 200)))
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # idle OpenBLAS threads busy-wait and steal cores
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


def choose_model(args: argparse.Namespace) -> tuple[str, str]:
    from dehaze_ros.ros.node_config import NodeConfig, resolve_model

    if args.model == "dcp":
        return "dcp", ""
    choice = resolve_model(NodeConfig(model="checkpoint", checkpoint=args.checkpoint))
    if args.model == "checkpoint" and choice.model != "checkpoint":
        raise SystemExit(f"--model checkpoint: {choice.warning}")
    return choice.model, choice.checkpoint


def start_child(module: str, ros_args: list[str], env: dict, log_path: Path):
    return processes.start([sys.executable, "-m", module, "--ros-args", *ros_args], log_path, env)


def label_panel(panel: np.ndarray, text: str) -> None:
    """Write ``text`` in the top-left corner, white on a dark box, readable on any image."""
    import cv2

    scale = max(0.4, panel.shape[1] / 1000)
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(panel, (0, 0), (width + 12, height + baseline + 10), (0, 0, 0), thickness=-1)
    cv2.putText(
        panel,
        text,
        (6, height + 5),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )


class Recorder:
    """Subscribes to the camera and the outputs; keeps latencies and builds mosaics."""

    def __init__(self, node, mosaic_writer, labels: tuple[str, str, str]):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import Image

        self.node = node
        self.write_mosaic = mosaic_writer
        self.labels = labels
        self.recording = False
        self.hazy: dict[tuple[int, int], np.ndarray] = {}
        self.dehazed: dict[tuple[int, int], np.ndarray] = {}
        self.colormap: dict[tuple[int, int], np.ndarray] = {}
        self.camera_frames = 0  # camera frames received while recording
        self.window_stamps: set[tuple[int, int]] = set()  # ... their stamps
        self.outputs_of_window = 0  # dehazed frames of those camera frames
        self.output_times: list[float] = []
        self.latencies_ms: list[float] = []
        self.first_output_at: float | None = None
        self.diagnostics: dict[str, str] = {}
        self.visibility: list[tuple[float, float, float, float]] = []  # stamp, range, min, max
        sensor = QoSProfile(depth=2, reliability=QoSReliabilityPolicy.BEST_EFFORT)
        reliable = QoSProfile(depth=2, reliability=QoSReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, f"{NAMESPACE}/image", self.on_hazy, sensor)
        node.create_subscription(Image, f"{NAMESPACE}/dehazed/image", self.on_dehazed, reliable)
        node.create_subscription(Image, f"{NAMESPACE}/depth/colormap", self.on_colormap, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)
        from sensor_msgs.msg import Range

        node.create_subscription(Range, f"{NAMESPACE}/visibility", self.on_visibility, reliable)

    @staticmethod
    def key(msg) -> tuple[int, int]:
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    @staticmethod
    def as_bgr(msg) -> np.ndarray:
        import cv2

        from dehaze_ros.ros.image_conversion import image_to_numpy, to_rgb8

        return cv2.cvtColor(to_rgb8(image_to_numpy(msg), msg.encoding), cv2.COLOR_RGB2BGR)

    def on_hazy(self, msg) -> None:
        if self.recording:
            self.camera_frames += 1
            self.window_stamps.add(self.key(msg))
        self.hazy[self.key(msg)] = self.as_bgr(msg)
        self._trim(self.hazy)

    def on_dehazed(self, msg) -> None:
        now = time.time()
        if self.first_output_at is None:
            self.first_output_at = time.monotonic()
        # Counted by stamp, also after the window closes: the output of the window's last camera
        # frame arrives a latency later. So `out` and `in` are about the same frames.
        if self.key(msg) in self.window_stamps:
            self.outputs_of_window += 1
        if not self.recording:
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.latencies_ms.append((now - stamp) * 1e3)
        self.output_times.append(time.monotonic())
        self.dehazed[self.key(msg)] = self.as_bgr(msg)
        self._trim(self.dehazed)
        self._try_mosaic(self.key(msg))

    def on_colormap(self, msg) -> None:
        if not self.recording:
            return
        self.colormap[self.key(msg)] = self.as_bgr(msg)
        self._trim(self.colormap)
        self._try_mosaic(self.key(msg))

    def on_visibility(self, msg) -> None:
        if self.recording:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            self.visibility.append((stamp, msg.range, msg.min_range, msg.max_range))

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NAMESPACE}/dehaze_node"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics["message"] = status.message

    def _try_mosaic(self, key) -> None:
        if key in self.hazy and key in self.dehazed and key in self.colormap:
            panels = [self.hazy.pop(key), self.dehazed.pop(key), self.colormap.pop(key)]
            for panel, label in zip(panels, self.labels):
                label_panel(panel, label)
            self.write_mosaic(np.hstack(panels))

    @staticmethod
    def _trim(frames: dict) -> None:
        while len(frames) > 30:  # unmatched frames (e.g. a lost colormap) must not pile up
            frames.pop(next(iter(frames)))


def _stop_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM (kill, a CI timeout, a service manager) stops the demo the way Ctrl-C does: the
    # cleanup in run() stops the children and closes the video. Without a handler SIGTERM ends
    # the process at once and the children would be left to their parent-death signal.
    previous = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("demo: interrupted; the nodes were stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def node_threads(args: argparse.Namespace, model: str, checkpoint: str) -> int:
    """--num-threads, or the demo's choice for the backend the node will run."""
    if args.num_threads is not None:
        return args.num_threads
    from dehaze_ros.backends import resolve_backend
    from dehaze_ros.engine import DEFAULT_CHECKPOINT

    try:
        backend = resolve_backend(
            args.backend, model, checkpoint or DEFAULT_CHECKPOINT, args.device
        ).name
    except Exception:  # noqa: BLE001 - a device the node will refuse with its own message
        backend = "torch"
    return 1 if backend == "torch" else 0


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
        f"prerender_frames:={max(0, round(args.loop_seconds * args.rate))}",
    ]
    node_args = [
        "-r",
        f"__ns:={NAMESPACE}",
        "-p",
        f"model:={model}",
        "-p",
        f"device:={args.device}",
        "-p",
        f"backend:={args.backend}",
        "-p",
        f"precision:={args.precision}",
        "-p",
        f"max_side:={args.max_side}",
        "-p",
        f"num_threads:={node_threads(args, model, checkpoint)}",
    ]
    if checkpoint:
        node_args += ["-p", f"checkpoint:={checkpoint}"]
    return camera_args, node_args


def mosaic_writer(args: argparse.Namespace, output: Path) -> tuple[dict, Callable]:
    """The video's state and the function that writes each mosaic to demo.mp4 (and the first
    ``--mosaics`` of them, spread over the run, as PNG); ``video["started"]`` is when the
    recording began."""
    import cv2

    video = {
        "writer": None,
        "frames": 0,
        "mosaics": 0,
        "saved": 0,
        "next_png": 0.0,
        "started": 0.0,
    }
    png_every = args.duration / max(1, args.mosaics)

    def write_mosaic(mosaic: np.ndarray) -> None:
        if video["writer"] is None:
            height, width = mosaic.shape[:2]
            video["writer"] = cv2.VideoWriter(
                str(output / "demo.mp4"),
                cv2.VideoWriter_fourcc(*"mp4v"),
                float(args.rate),
                (width, height),
            )
        # The video runs at the camera rate and plays in real time: each mosaic fills the frame
        # slots up to its arrival (repeated when the node runs slower than the camera).
        elapsed = time.monotonic() - video["started"]
        while True:
            video["writer"].write(mosaic)
            video["frames"] += 1
            if video["frames"] >= elapsed * args.rate:
                break
        video["mosaics"] += 1
        if video["saved"] < args.mosaics and elapsed >= video["next_png"]:
            cv2.imwrite(str(output / f"mosaic_{video['saved']:02d}.png"), mosaic)
            video["saved"] += 1
            video["next_png"] += png_every

    return video, write_mosaic


def record(
    executor,
    recorder: Recorder,
    children: list[subprocess.Popen],
    output: Path,
    video: dict,
    duration: float,
) -> tuple[dict, dict] | None:
    """Wait for the first dehazed output, record ``duration`` seconds and return the node's
    diagnostics before and after the window (None: no output came, or a process exited)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while recorder.first_output_at is None:
        if time.monotonic() > deadline or any(child.poll() is not None for child in children):
            print(
                f"demo: no dehazed output within {STARTUP_TIMEOUT_S:.0f} s (or a process "
                f"exited); see {output}/logs/",
                file=sys.stderr,
            )
            return None
        executor.spin_once(timeout_sec=0.1)
    executor.spin_once(timeout_sec=0.5)  # let the first colormap arrive before counting
    before = dict(recorder.diagnostics)
    recorder.recording = True
    video["started"] = time.monotonic()
    while time.monotonic() - video["started"] < duration:
        executor.spin_once(timeout_sec=0.1)
    recorder.recording = False
    settle = time.monotonic() + 1.2  # one more diagnostics message covering the run, and the
    while time.monotonic() < settle:  # outputs of the window's last frames
        executor.spin_once(timeout_sec=0.1)
    after = recorder.diagnostics
    return before, after


def print_summary(
    args: argparse.Namespace,
    model: str,
    output: Path,
    recorder: Recorder,
    video: dict,
    before: dict,
    after: dict,
) -> None:
    """The demo's summary, timing and visibility lines."""

    def counter(diagnostics: dict, key: str) -> int:
        try:
            return int(diagnostics.get(key, "0"))
        except ValueError:
            return 0

    def delta(key: str) -> int:
        return counter(after, key) - counter(before, key)

    dropped = delta(KEY_DROPPED)
    out = recorder.outputs_of_window
    received = len(recorder.output_times)
    if received >= 2:
        fps = (received - 1) / (recorder.output_times[-1] - recorder.output_times[0])
    else:
        fps = 0.0
    latencies = recorder.latencies_ms
    median = statistics.median(latencies) if latencies else float("nan")
    p95 = percentile(latencies, 0.95) if latencies else float("nan")
    print(
        f"demo summary: model {after.get(KEY_MODEL, model)} ({after.get(KEY_DEVICE, '?')}), "
        f"{args.width}x{args.height}, {args.duration:g} s: frames in {recorder.camera_frames}, out "
        f"{out}, dropped {dropped}; latency stamp->received median {median:.0f} ms, p95 {p95:.0f} "
        f"ms; output {fps:.1f} fps; wrote {video['saved']} PNG + MP4 of {video['mosaics']} mosaics "
        f"({video['frames'] / args.rate:.0f} s) to {output}/",
        flush=True,
    )
    print(
        f"demo timing: the node's time per frame, medians over its last frames (ms, /diagnostics): "
        f"{after.get(KEY_STAGES, 'n/a')}",
        flush=True,
    )
    print(visibility_summary(recorder.visibility, output, model), flush=True)


def run(args: argparse.Namespace) -> int:
    env = demo_environment()
    os.environ.clear()
    os.environ.update(env)  # this process runs a recorder node: same DDS setup as the children
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from dehaze_ros.ros.node_config import SPECS

    model, checkpoint = choose_model(args)
    colormap_min_m, colormap_max_m = (
        SPECS["colormap_min_m"].default,
        SPECS["colormap_max_m"].default,
    )
    output = args.output
    (output / "logs").mkdir(parents=True, exist_ok=True)
    for old in list(output.glob("mosaic_*.png")) + [output / "demo.mp4"]:
        old.unlink(missing_ok=True)

    camera_args, node_args = child_arguments(args, model, checkpoint)
    print(
        f"demo: {args.width}x{args.height} camera at {args.rate:g} Hz, model {model}"
        + (f" ({checkpoint})" if checkpoint else "")
        + f", ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, "
        f"recording {args.duration:g} s into {output}/",
        flush=True,
    )

    video, write_mosaic = mosaic_writer(args, output)
    children: list[subprocess.Popen] = []
    context = Context()
    rclpy.init(context=context, args=[])
    node = None
    try:
        children.append(
            start_child(
                "dehaze_ros.ros.dehaze_node", node_args, env, output / "logs" / "dehaze_node.log"
            )
        )
        children.append(
            start_child(
                "dehaze_ros.sim.sample_camera",
                camera_args,
                env,
                output / "logs" / "sample_camera.log",
            )
        )
        node = rclpy.create_node("demo_recorder", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        depth_label = (
            "depth (relative, DCP)"
            if model == "dcp"
            else f"depth colormap, {colormap_min_m:g}-{colormap_max_m:g} m log scale"
        )
        recorder = Recorder(node, write_mosaic, ("hazy input", f"dehazed ({model})", depth_label))

        window = record(executor, recorder, children, output, video, args.duration)
        if window is None:
            return 1
        before, after = window
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
        processes.stop(children)
        if video["writer"] is not None:
            video["writer"].release()

    print_summary(args, model, output, recorder, video, before, after)
    return 0 if len(recorder.output_times) > 0 else 1


def visibility_summary(
    estimates: list[tuple[float, float, float, float]], output: Path, model: str
) -> str:
    """One line on the node's visibility estimates against the camera's drifting fog, and
    visibility.csv with every estimate (to plot it following the drift)."""
    import math

    from dehaze_ros.sim.sample_camera import CAMERA_PARAMETERS
    from dehaze_ros.visibility import KOSCHMIEDER

    with open(output / "visibility.csv", "w") as csv:
        csv.write("stamp_s,visibility_m,min_range_m,max_range_m\n")
        for row in estimates:
            csv.write(",".join(f"{value:.3f}" for value in row) + "\n")
    beta_min, beta_max = CAMERA_PARAMETERS["beta_min"][0], CAMERA_PARAMETERS["beta_max"][0]
    truth = (
        f"the camera's fog drifts between {KOSCHMIEDER / beta_max:.0f} and "
        f"{KOSCHMIEDER / beta_min:.0f} m over {CAMERA_PARAMETERS['beta_period_s'][0]:g} s"
    )
    if model == "dcp":
        return (
            "demo visibility: none, model dcp gives relative depth and visibility needs metres "
            f"({truth})"
        )
    values = [row[1] for row in estimates]
    finite = [value for value in values if math.isfinite(value)]
    text = (
        f"demo visibility: {len(values)} estimates, {len(finite)} with a value, "
        f"{sum(math.isnan(v) for v in values)} none, {sum(v == math.inf for v in values)} clear, "
        f"{sum(v == -math.inf for v in values)} dense"
    )
    if finite:
        text += (
            f"; {min(finite):.0f}-{max(finite):.0f} m, median {statistics.median(finite):.0f} m, "
            f"first {finite[0]:.0f} m, last {finite[-1]:.0f} m"
        )
    return text + f" ({truth}); written to {output}/visibility.csv"


if __name__ == "__main__":
    sys.exit(main())
