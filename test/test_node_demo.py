"""`make demo` end to end, shortened: two node processes over DDS, recorded, and nothing left behind."""
from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)")

from ros_helpers import REPO_ROOT, child_env  # noqa: E402


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find leftovers")
def test_demo_records_mosaics_and_video_prints_a_summary_and_cleans_up(tmp_path):
    marker = f"DEHAZE_DEMO_TEST_{uuid.uuid4().hex}"
    env = child_env()
    env[marker] = "1"
    output = tmp_path / "demo_output"
    result = subprocess.run(
        [sys.executable, "-m", "dehaze_ros.demo", "--duration", "4", "--model", "dcp",
         "--width", "160", "--height", "120", "--rate", "8", "--mosaics", "2", "--output", str(output)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = [line for line in result.stdout.splitlines() if line.startswith("demo summary:")]
    assert len(summary) == 1, result.stdout
    numbers = re.search(r"frames in (\d+), out (\d+), dropped (\d+); "
                        r"latency stamp->received median (\d+) ms, p95 (\d+) ms; output ([\d.]+) fps",
                        summary[0])
    assert numbers, summary[0]
    frames_in, frames_out = int(numbers.group(1)), int(numbers.group(2))
    assert frames_in > 0 and frames_out > 0 and float(numbers.group(6)) > 0
    assert int(numbers.group(4)) <= int(numbers.group(5))  # median <= p95

    mosaics = sorted(output.glob("mosaic_*.png"))
    assert len(mosaics) == 2
    mosaic = cv2.imread(str(mosaics[0]))
    assert mosaic.shape == (120, 3 * 160, 3)  # hazy | dehazed | depth colormap
    video = cv2.VideoCapture(str(output / "demo.mp4"))
    assert video.isOpened() and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) >= 1
    assert (output / "logs" / "dehaze_node.log").read_text().count("active: listening") == 1
    assert processes_with_marker(marker) == [], "the demo left processes running"
