"""The paper's recipe configs (config/train/diacmpn_s_{its,ots}.yaml): what they set, and that
each trains on a folder in the RESIDE layout through the command a user runs (tiny crops, 2 steps).
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.config import load_config
from training.run_state import load_training_file
from training.train import main

CONFIGS = Path(__file__).resolve().parent.parent / "config" / "train"
# A user's command with crop, batch and length shrunk so that the full diacmpn-s runs on a CPU in
# seconds; everything else (model, optimiser, schedule, augmentation, data source) is the recipe's.
TINY = [
    "data.crop=32",
    "data.batch_size=2",
    "train.steps=2",
    "train.device=cpu",
    "data.workers=0",
    "data.val_max_side=48",
    "data.val_max_images=2",
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def write_reside_folder(
    root: Path,
    hazy_names: dict[str, list[str]],
    extension: str,
    border: int = 0,
    with_depth: bool = False,
) -> None:
    """root/hazy/<name>, root/clear/<scene><ext> (``border`` px larger on each side, as ITS's clear
    images are) and optionally root/depth/<scene>.npy in metres."""
    rng = np.random.default_rng(0)
    for folder in ("hazy", "clear") + (("depth",) if with_depth else ()):
        (root / folder).mkdir(parents=True)
    for scene, names in hazy_names.items():
        clear = rng.integers(0, 256, (40 + 2 * border, 52 + 2 * border, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "clear" / f"{scene}{extension}"), clear)
        if with_depth:
            depth_m = rng.uniform(1.0, 8.0, clear.shape[:2]).astype(np.float32)
            np.save(root / "depth" / f"{scene}.npy", depth_m)
        inner = clear[border : border + 40, border : border + 52].astype(np.float32)
        for index, name in enumerate(names):
            transmission = 0.4 + 0.1 * index
            hazy = inner * transmission + 230.0 * (1.0 - transmission)  # ASM, grey airlight
            cv2.imwrite(str(root / "hazy" / name), hazy.clip(0, 255).astype(np.uint8))


def test_the_recipes_hold_the_papers_training_settings():
    its = load_config(CONFIGS / "diacmpn_s_its.yaml")
    ots = load_config(CONFIGS / "diacmpn_s_ots.yaml")
    for config in (its, ots):
        assert config.model.preset == "diacmpn-s" and not config.model.overrides
        assert (config.data.crop, config.data.batch_size) == (256, 8)
        assert config.data.flips and config.data.rot90
        assert config.optim.lr_dehazer == config.optim.lr_depth == 1e-4
        optim = config.optim
        assert optim.weight_decay == 0.0 and optim.warmup_steps == 0  # Adam, no warm-up
        assert optim.lr_dehazer * optim.min_lr_ratio == pytest.approx(1e-6)  # cosine to 1e-6
        assert config.train.schedule == "alternating"
        # Never validated (best.pt) on the test set.
        assert "SOTS" in config.data.test_roots
    assert its.train.steps == 600 * 13_990 // 8  # 600 epochs of ITS's 13,990 hazy images
    assert [source.kind for source in its.data.sources.values()] == ["reside"]
    assert list(ots.data.sources) == ["ots"] and ots.data.sources["ots"].path == "OTS"


@pytest.mark.parametrize("recipe", ["its", "ots"])
def test_each_recipe_trains_two_steps_on_a_reside_folder(recipe, tmp_path, capsys):
    if recipe == "its":
        # ITS names: <scene>_<haze index>_<beta>.png; clear images 10 px larger on each side;
        # depth for the depth terms.
        names = {
            str(scene): [f"{scene}_{k}_0.{80 + k}.png" for k in (1, 2)] for scene in range(1, 5)
        }
        write_reside_folder(tmp_path / "ITS", names, ".png", border=10, with_depth=True)
    else:
        # OTS names: <scene>_<airlight>_<beta>.jpg.
        names = {
            f"000{scene}": [f"000{scene}_0.8_0.{k}.jpg" for k in (1, 2)] for scene in range(1, 5)
        }
        write_reside_folder(tmp_path / "OTS", names, ".jpg")
    run = tmp_path / "run"
    # One scene held out by name (a fraction of four scenes may hold out none, or all), so that
    # this tiny folder validates and writes best.pt as a real run does.
    val_scene = next(reversed(names))
    code = main(
        [
            "--config",
            str(CONFIGS / f"diacmpn_s_{recipe}.yaml"),
            "--run-dir",
            str(run),
            f"data.root={tmp_path}",
            f"data.sources.{recipe}.val_scenes=['{val_scene}']",
            *TINY,
        ]
    )
    log = capsys.readouterr().out
    assert code == 0, log
    assert "model diacmpn-s: dehazer" in log
    assert "schedule alternating, 2 steps of batch 2 at 32x32" in log
    if recipe == "its":
        assert "depth supervision: metric depth from its" in log
    else:
        assert "depth supervision OFF" in log
    state = load_training_file(run / "last.pt")
    assert state["step"] == 2 and state["best"]
    weights = [value for value in state["dehazer"].values() if value.is_floating_point()]
    assert all(torch.isfinite(value).all() for value in weights)
    # The full preset's states are hundreds of MB: not worth keeping in pytest's kept tmp folders.
    for path in run.glob("*.pt"):
        path.unlink()
