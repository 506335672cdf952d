"""`make demo` end to end, shortened: two node processes over DDS, recorded, and nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import pytest

pytest.importorskip(
    "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
)

from dehaze_ros.tools import processes  # noqa: E402
from ros_helpers import REPO_ROOT, child_env  # noqa: E402

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="reads /proc to find leftovers; parent-death signal is Linux's",
)


def processes_with_marker(marker: str) -> list[int]:
    """PIDs whose environment holds ``marker`` (the demo's children inherit it)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return found


def assert_nothing_left(marker: str, timeout: float) -> None:
    """No process with ``marker`` within ``timeout`` s; any leftover is killed, then reported."""
    deadline = time.monotonic() + timeout
    while (left := processes_with_marker(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:  # do not let a failing test leave nodes running on the machine
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert left == [], f"the demo left processes running: {left}"


def start_demo(marker: str, output: Path, duration: float) -> subprocess.Popen:
    env = child_env()
    env[marker] = "1"
    # Its own session and process group: a timeout can kill the demo and whatever shares its group.
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dehaze_ros.tools.demo",
            "--duration",
            str(duration),
            "--model",
            "dcp",
            "--width",
            "160",
            "--height",
            "120",
            "--rate",
            "8",
            "--mosaics",
            "2",
            "--output",
            str(output),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(process: subprocess.Popen) -> None:
    processes.signal_group(process, signal.SIGKILL)


def test_demo_records_mosaics_and_video_prints_a_summary_and_cleans_up(tmp_path):
    marker = f"DEHAZE_DEMO_TEST_{uuid.uuid4().hex}"
    output = tmp_path / "demo_output"
    demo = start_demo(marker, output, duration=4)
    try:
        stdout, stderr = demo.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        kill_group(demo)
        stdout, stderr = demo.communicate()
        # The children run in sessions of their own: the kernel's parent-death signal stops them.
        assert_nothing_left(marker, timeout=20)
        pytest.fail(f"the demo did not finish in 240 s:\n{stdout}\n{stderr}")
    finally:
        kill_group(demo)  # pytest interrupted: the demo must not outlive it either
    assert demo.returncode == 0, stdout + stderr
    summary = [line for line in stdout.splitlines() if line.startswith("demo summary:")]
    assert len(summary) == 1, stdout
    numbers = re.search(
        r"frames in (\d+), out (\d+), dropped (\d+); "
        r"latency stamp->received median (\d+) ms, p95 (\d+) ms; output ([\d.]+) fps",
        summary[0],
    )
    assert numbers, summary[0]
    frames_in, frames_out = int(numbers.group(1)), int(numbers.group(2))
    assert frames_in > 0 and frames_out > 0 and float(numbers.group(6)) > 0
    assert frames_out <= frames_in, "out counts the outputs of the frames counted in"
    assert int(numbers.group(4)) <= int(numbers.group(5))  # median <= p95
    # Where the node's time went, read from /diagnostics: the DCP's engine stages among them.
    timing = re.search(r"^demo timing: .*: (.*)$", stdout, re.M)
    assert timing and re.fullmatch(
        r"wait [\d.]+, decode [\d.]+, preprocess [\d.]+, .*dehaze [\d.]+, .*"
        r"postprocess [\d.]+, publish [\d.]+",
        timing.group(1),
    ), stdout

    # The DCP has no metric depth, so no visibility: the demo says so (a checkpoint gives a CSV row
    # per recorded frame).
    assert "demo visibility: none, model dcp gives relative depth" in stdout, stdout
    rows = (output / "visibility.csv").read_text().splitlines()
    assert rows == ["stamp_s,visibility_m,min_range_m,max_range_m"]

    mosaics = sorted(output.glob("mosaic_*.png"))
    assert len(mosaics) == 2
    mosaic = cv2.imread(str(mosaics[0]))
    assert mosaic.shape == (120, 3 * 160, 3)  # hazy | dehazed | depth colormap
    video = cv2.VideoCapture(str(output / "demo.mp4"))
    assert video.isOpened() and video.get(cv2.CAP_PROP_FPS) == 8
    # Real-time playback: about as many video frames as 4 s at the camera's 8 Hz, whatever the
    # node's own rate (the last mosaic may arrive up to a frame period before the window closes).
    assert 4 * 8 - 12 <= int(video.get(cv2.CAP_PROP_FRAME_COUNT)) <= 4 * 8 + 2
    assert (output / "logs" / "dehaze_node.log").read_text().count("active: listening") == 1
    assert_nothing_left(marker, timeout=0)  # the demo waited for its nodes before it exited


def wait_for_nodes(marker: str, demo: subprocess.Popen, timeout: float) -> bool:
    """True once both node processes run (the demo itself carries the marker too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and demo.poll() is None:
        if len([pid for pid in processes_with_marker(marker) if pid != demo.pid]) >= 2:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_the_demo_stops_its_nodes(tmp_path, how):
    """SIGTERM: the demo stops its nodes itself, as on Ctrl-C. SIGKILL: no cleanup can run; the
    parent-death signal the demo gave its nodes takes them down."""
    marker = f"DEHAZE_DEMO_TEST_{uuid.uuid4().hex}"
    demo = start_demo(marker, tmp_path / "demo_output", duration=600)
    try:
        started = wait_for_nodes(marker, demo, timeout=60)
        if started:
            time.sleep(2.0)  # into the nodes' start-up, where a real interruption would land
            os.killpg(demo.pid, getattr(signal, how))
        else:
            kill_group(demo)
        stdout, stderr = demo.communicate(timeout=60)
    finally:
        kill_group(demo)
    assert started, f"the nodes never started:\n{stdout}\n{stderr}"
    if how == "SIGTERM":
        assert demo.returncode == 130 and "interrupted" in stderr, stdout + stderr
    else:
        assert demo.returncode == -signal.SIGKILL
    assert_nothing_left(marker, timeout=20)
