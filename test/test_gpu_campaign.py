"""training/gpu_campaign.sh, the script a GPU window runs, dry-run on the CPU through the data pack
that travels with it (training.gpu_data): the pack fits beside the working tree in what the device
tool carries, restores the files the training reads byte for byte, and every stage (unpack, train,
export, evaluate beside DCP) runs and leaves what the device tool brings back in $OUT."""
import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dehaze_ros.checkpoint import load_checkpoint
from training.gpu_data import CARRY_LIMIT_BYTES, PackError, collect_units, pack, unpack, working_tree_bytes

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED_DATA / "rgbd").is_dir(), reason="needs ../shared/data (the reference data)")


@pytest.fixture(scope="module")
def data_pack(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "pack"
    manifest = pack(SHARED_DATA, out, repo=ROOT)
    return out, manifest


@needs_data
def test_the_pack_fits_beside_the_working_tree_and_keeps_every_metric_scene(data_pack):
    out, manifest = data_pack
    on_disk = sum(path.stat().st_size for path in out.iterdir())
    assert on_disk + working_tree_bytes(ROOT) <= CARRY_LIMIT_BYTES
    metric = {unit.name for unit in collect_units(SHARED_DATA) if not unit.relative}
    # the validation scenes, the test scene, the RGB-D cameras and ITS are never left out
    assert {"rgbd/middlebury2014/Pipes", "rgbd/middlebury2014/Teddy", "rgbd/middlebury2014/Recycle",
            "rgbd/frames/tum", "its_train"} <= metric <= set(manifest["units"])
    assert not set(manifest["left_out"]) & metric
    # what is read is what travels: redwood's other formats (excluded by the config) do not
    travelling = [path for unit in collect_units(SHARED_DATA) if unit.name in manifest["units"] for path in unit.files]
    assert travelling and not any("other_formats" in path.parts for path in travelling)


@needs_data
def test_unpack_restores_the_files_the_training_reads_byte_for_byte(data_pack, tmp_path):
    out, manifest = data_pack
    root = unpack(out)
    restored = [path for path in root.rglob("*") if path.is_file()]
    assert len(restored) == sum(unit["files"] for unit in manifest["units"].values())
    for path in restored:
        original = SHARED_DATA / path.relative_to(root)
        assert filecmp.cmp(path, original, shallow=False), path
    assert not (root / "rgbd" / "middlebury_legacy" / "Aloe" / "view5.png").exists()
    assert (root / "rgbd" / "middlebury2014" / "Pipes" / "disp0GT.pfm").is_file()


def test_a_pack_that_cannot_fit_says_so_and_an_unpacked_folder_without_manifest_is_refused(tmp_path):
    data = tmp_path / "data" / "its_train"
    for folder in ("hazy", "gt"):
        (data / folder).mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(data / "gt" / "1.png"), noise)
    cv2.imwrite(str(data / "hazy" / "1_1_0.9.png"), noise)
    config = tmp_path / "train.yaml"
    config.write_text("name: t\nmodel: {preset: diacmpn-rt}\ndata:\n  sources:\n"
                      "    its: {kind: reside, path: its_train, weight: 1.0}\n")
    with pytest.raises(PackError, match="metric scenes alone take"):
        pack(tmp_path / "data", tmp_path / "pack", repo=ROOT, config_path=config,
             limit_bytes=working_tree_bytes(ROOT))
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert manifest["units"]["its_train"]["files"] == 2
    with pytest.raises(PackError, match="no manifest.json"):
        unpack(tmp_path / "data")


@needs_data
def test_gpu_campaign_dry_run_unpacks_trains_exports_and_evaluates(data_pack, tmp_path):
    out_pack, _ = data_pack
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "DRY_RUN_DATA": str(out_pack), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "training" / "gpu_campaign.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"unpacked into {out_pack}/root" in done.stdout
    out = tmp_path / "out"
    checkpoint = load_checkpoint(out / "diacmpn_rt.pt")
    assert checkpoint.model_config["head"] == "asm_dcp" and checkpoint.provenance["steps"] == 3
    summary = (out / "eval_val.md").read_text()
    assert "| middlebury2014 | dcp | 3 |" in summary and "model (diacmpn-rt)" in summary
    assert "finished at step 3/3" in (out / "campaign.log").read_text()
