"""training/gpu_campaign.sh, the script a GPU window runs, dry-run on the CPU: every stage (train,
export, evaluate beside DCP) runs and leaves what the device tool brings back in $OUT."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dehaze_ros.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "rgbd").is_dir(), reason="needs ../shared/data (the reference data)")
def test_gpu_campaign_dry_run_trains_exports_and_evaluates(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "DRY_RUN_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "training" / "gpu_campaign.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    checkpoint = load_checkpoint(out / "diacmpn_rt.pt")
    assert checkpoint.model_config["head"] == "asm_dcp" and checkpoint.provenance["steps"] == 3
    summary = (out / "eval_val.md").read_text()
    assert "| middlebury2014 | dcp | 3 |" in summary and "model (diacmpn-rt)" in summary
    assert "finished at step 3/3" in (out / "campaign.log").read_text()
