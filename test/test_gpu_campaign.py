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
from training.gpu_data import (
    CARRY_LIMIT_BYTES,
    UNPACK_MARK,
    PackError,
    check,
    collect_units,
    folder_bytes,
    pack,
    unpack,
    working_tree_bytes,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "rgbd").is_dir(), reason="needs ../shared/data (the reference data)"
)


@pytest.fixture(scope="module")
def data_pack(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "pack"
    manifest = pack(SHARED_DATA, out, repo=ROOT)
    return out, manifest


@needs_data
def test_the_pack_fits_beside_the_working_tree_and_holds_every_scene_the_training_reads(data_pack):
    out, manifest = data_pack
    assert folder_bytes(out) + working_tree_bytes(ROOT) <= CARRY_LIMIT_BYTES
    assert check(out, repo=ROOT) == folder_bytes(out) + working_tree_bytes(ROOT)
    units = collect_units(SHARED_DATA)
    assert {unit.name for unit in units} == set(manifest["units"])
    # the validation scenes, the test scene, the RGB-D cameras, ITS and the 2001-2006 scenes travel
    assert {
        "rgbd/middlebury2014/Pipes",
        "rgbd/middlebury2014/Teddy",
        "rgbd/middlebury2014/Recycle",
        "rgbd/frames/tum",
        "its_train",
    } <= set(manifest["units"])
    assert (
        len([name for name in manifest["units"] if name.startswith("rgbd/middlebury_legacy/")])
        >= 20
    )
    # what is read is what travels: redwood's other formats (excluded by the config) do not
    travelling = [path for unit in units for path in unit.files]
    assert travelling and not any("other_formats" in path.parts for path in travelling)


@needs_data
def test_unpack_restores_the_files_the_training_reads_byte_for_byte(data_pack, tmp_path):
    out, manifest = data_pack
    root = unpack(out, to=tmp_path / "root")
    restored = [path for path in root.rglob("*") if path.is_file() and path.name != UNPACK_MARK]
    assert len(restored) == sum(unit["files"] for unit in manifest["units"].values())
    for path in restored:
        original = SHARED_DATA / path.relative_to(root)
        assert filecmp.cmp(path, original, shallow=False), path
    assert not (root / "rgbd" / "middlebury_legacy" / "Aloe" / "view5.png").exists()
    assert (root / "rgbd" / "middlebury2014" / "Pipes" / "disp0GT.pfm").is_file()


def _tiny_data(root: Path) -> Path:
    """ITS pairs (metric) and two relative-depth legacy scenes."""
    rng = np.random.default_rng(0)
    for folder in ("hazy", "gt"):
        (root / "its_train" / folder).mkdir(parents=True)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "its_train" / "gt" / "1.png"), noise)
    cv2.imwrite(str(root / "its_train" / "hazy" / "1_1_0.9.png"), noise)
    for scene, side in (("Big", 256), ("Small", 128)):
        folder = root / "rgbd" / "middlebury_legacy" / scene
        folder.mkdir(parents=True)
        cv2.imwrite(
            str(folder / "view1.png"), rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        )
        cv2.imwrite(str(folder / "disp1.png"), rng.integers(1, 256, (side, side), dtype=np.uint8))
        cv2.imwrite(str(folder / "view5.png"), noise)  # the second view: not read, not packed
    config = root / "train.yaml"
    config.write_text(
        "name: t\nmodel: {preset: diacmpn-rt}\ndata:\n  sources:\n"
        "    its: {kind: reside, path: its_train, weight: 0.5}\n"
        "    rgbd: {kind: rgbd, path: rgbd, weight: 0.5}\n"
    )
    return config


def test_the_pack_holds_one_archive_per_scene_and_fails_whole_when_it_does_not_fit(tmp_path):
    config = _tiny_data(tmp_path / "data")
    everything = pack(
        tmp_path / "data", tmp_path / "pack", repo=ROOT, config_path=config, limit_bytes=2**40
    )
    assert sorted(everything["units"]) == [
        "its_train",
        "rgbd/middlebury_legacy/Big",
        "rgbd/middlebury_legacy/Small",
    ]
    assert everything["units"]["rgbd/middlebury_legacy/Big"]["files"] == 2
    assert sorted(path.name for path in (tmp_path / "pack").glob("*.tar.xz")) == [
        "its_train.tar.xz",
        "rgbd__middlebury_legacy__Big.tar.xz",
        "rgbd__middlebury_legacy__Small.tar.xz",
    ]
    # one byte short of room for the whole pack: an error, and no pack left that a device call could carry
    limit = working_tree_bytes(ROOT) + 1024 * 1024 + everything["pack_bytes"] - 1
    with pytest.raises(PackError, match="take .* MiB packed"):
        pack(tmp_path / "data", tmp_path / "pack", repo=ROOT, config_path=config, limit_bytes=limit)
    assert list((tmp_path / "pack").iterdir()) == []
    with pytest.raises(PackError, match="no manifest.json"):
        unpack(tmp_path / "pack")
    # and check refuses a pack that no longer fits beside the working tree
    pack(tmp_path / "data", tmp_path / "pack", repo=ROOT, config_path=config, limit_bytes=2**40)
    with pytest.raises(PackError, match="over the"):
        check(tmp_path / "pack", repo=ROOT, limit_bytes=working_tree_bytes(ROOT))


def test_unpack_replaces_its_own_earlier_output_and_refuses_a_folder_it_did_not_write(tmp_path):
    config = _tiny_data(tmp_path / "data")
    pack(tmp_path / "data", tmp_path / "pack", repo=ROOT, config_path=config, limit_bytes=2**40)
    root = unpack(tmp_path / "pack")
    assert root == tmp_path / "pack" / "root"
    stale = root / "rgbd" / "middlebury_legacy" / "Gone" / "view1.png"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier pack's scene")
    unpack(tmp_path / "pack")
    assert (
        not stale.exists() and (root / "rgbd" / "middlebury_legacy" / "Big" / "view1.png").is_file()
    )
    with pytest.raises(PackError, match="was not written by unpack"):
        unpack(tmp_path / "pack", to=tmp_path / "data")
    assert (tmp_path / "data" / "its_train" / "gt" / "1.png").is_file()


def _campaign(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path / "tmp"),
        **env,
    }
    return subprocess.run(
        ["bash", str(ROOT / "training" / "gpu_campaign.sh"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_data
def test_gpu_campaign_dry_run_unpacks_trains_exports_and_evaluates(data_pack, tmp_path):
    out_pack, _ = data_pack
    done = _campaign(["--dry-run"], tmp_path, DRY_RUN_DATA=str(out_pack))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # unpacked into a temporary folder, removed at the end, not into the carried pack
    unpacked = Path(done.stdout.split("unpacked into ", 1)[1].split()[0])
    assert unpacked.parent.parent == tmp_path / "tmp" and not unpacked.parent.exists()
    assert not (out_pack / "root").exists()
    out = tmp_path / "out"
    checkpoint = load_checkpoint(out / "diacmpn_rt.pt")
    assert checkpoint.model_config["head"] == "asm_dcp" and checkpoint.provenance["steps"] == 3
    # a fine-tune of the shipped weights, with their network (whose depth net reads -ln t, unlike the preset's)
    assert (
        'starting from dehaze_ros/checkpoints/default.pt model.overrides.depth_inputs="image_transmission"'
        in (out / "campaign.log").read_text()
    )
    assert checkpoint.model_config["depth_inputs"] == "image_transmission"
    assert checkpoint.provenance["init_from"]["path"] == "dehaze_ros/checkpoints/default.pt"
    # the GPU window's recipe reached the trainer (a mistyped key would have stopped it), the dry
    # run's own crop size after it
    trained = checkpoint.provenance["config"]
    assert trained["loss"]["ssim"] == 1.0 and trained["loss"]["transmission"] == 1.0
    assert trained["optim"]["lr_depth"] == 2e-4 and trained["data"]["crop"] == 48
    summary = (out / "eval_val.md").read_text()
    assert (
        "| middlebury2014 | dcp | 3 |" in summary
        and "| middlebury2014 | model (diacmpn-rt-custom) | 3 |" in summary
    )
    assert "finished at step 3/3" in (out / "campaign.log").read_text()


def test_gpu_campaign_stops_on_a_checkpoint_it_cannot_fine_tune_instead_of_training_from_scratch(
    tmp_path,
):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    for init, message in (
        (str(broken), "broken.pt"),
        (str(tmp_path / "missing.pt"), "does not exist"),
    ):
        done = _campaign(["--dry-run"], tmp_path, INIT=init, DRY_RUN_DATA=str(tmp_path))
        assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
        assert (
            "starting from scratch" not in done.stdout
            and not (tmp_path / "out" / "run_rt").exists()
        )
