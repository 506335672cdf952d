"""dehaze_ros/tools/gpu_check.py, the script for the first GPU machine at hand, dry-run on the CPU:
every row runs or says why it cannot, the table and CSV land in the folder it is given."""

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
HAVE_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
HAVE_RCLPY = importlib.util.find_spec("rclpy") is not None


def run_check(out: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dehaze_ros.tools.gpu_check",
            "--out",
            str(out),
            "--dry-run",
            *extra,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def table(out: Path) -> list[dict[str, str]]:
    with open(out / "gpu_check.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_the_dry_run_runs_what_a_cpu_can_and_says_why_for_the_rest(tmp_path):
    completed = run_check(tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    rows = table(tmp_path)
    assert (tmp_path / "gpu_check.md").read_text().count("| diacmpn-rt |") == len(rows) == 13
    by_key = {(row["backend"], row["precision"], row["input"]): row for row in rows}
    for size in ("64x48", "96x72"):
        reference = by_key[("torch", "fp32", size)]
        assert float(reference["median ms"]) > 0 and reference["dehazed max diff"] == "ref"
        assert by_key[("torch", "fp16", size)]["note"].startswith(
            "not available: precision fp16 needs a CUDA device"
        )
        for precision in ("fp32", "fp16"):
            assert (
                by_key[("TensorRT", precision, size)]["note"]
                == "not available: TensorRT needs a CUDA device"
            )
        onnx_row = by_key[("onnxruntime CUDA", "fp32", size)]
        if HAVE_ONNX:  # the exported graph agrees with torch (the parity the ONNX tests hold it to)
            assert float(onnx_row["median ms"]) > 0 and int(onnx_row["dehazed max diff"]) <= 2
            assert float(onnx_row["depth median diff %"]) < 0.1
        else:
            assert onnx_row["note"].startswith("not available: onnxruntime is not installed")
    node = by_key[("node (demo)", "auto", "160x120")]
    if HAVE_RCLPY:
        assert float(node["frames/s"]) > 0, node
        assert (tmp_path / "node_mosaic.png").is_file()
    else:
        assert node["note"].startswith("not available: rclpy")


def test_rows_past_the_time_budget_are_written_as_not_run(tmp_path):
    completed = run_check(tmp_path, "--budget-s", "1", timeout=300)
    assert completed.returncode == 1, completed.stderr[-3000:]  # nothing measured: not a pass
    notes = {row["note"] for row in table(tmp_path)}
    assert "not run: time budget (--budget-s) spent" in notes
    assert not any(note.startswith("failed") for note in notes)
    assert "0 of 13 rows measured" in completed.stdout
