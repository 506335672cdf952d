"""RESIDE-layout source on folders this test writes: name mapping, splits by scene, aligned crops."""

import cv2
import numpy as np
import pytest

from training.config import SourceConfig
from training.data import DataError
from training.data.reside import ResideSource, clear_name_candidates, scan_paired_folder


def write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def clear_image(seed, height=48, width=64):
    rng = np.random.default_rng(seed)
    # Smooth content, so that resizing during crops does not blur away the check below.
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def hazy_from(clear):
    """A fixed, known 'haze': hazy = 0.5 clear + 100 (so crops can be checked for alignment)."""
    return (clear.astype(np.float32) * 0.5 + 100).astype(np.uint8)


@pytest.fixture()
def reside_root(tmp_path):
    root = tmp_path / "reside"
    for scene in ("1400", "1401", "1402"):
        clear = clear_image(int(scene))
        write_rgb(root / "GT" / f"{scene}.png", clear)
        for level in (1, 2):
            write_rgb(root / "hazy" / f"{scene}_{level}.png", hazy_from(clear))
    depth = np.full((48, 64), 2500, np.uint16)  # 2.5 m at 1 mm per unit
    depth[0, 0] = 0  # a hole
    (root / "depth").mkdir()
    cv2.imwrite(str(root / "depth" / "1400.png"), depth)
    return root


def test_clear_names_cover_every_reside_convention():
    assert "1400" in clear_name_candidates("1400_3")  # SOTS / ITS
    assert "2" in clear_name_candidates("2_1_0.99082")  # ITS with beta
    assert "0001" in clear_name_candidates("0001_0.8_0.2")  # OTS
    assert "0025" in clear_name_candidates("0025_heavy")  # outdoor light/heavy
    assert "g0016" in clear_name_candidates("g0016_slide")
    assert "35_outdoor_GT" in clear_name_candidates("35_outdoor_hazy")  # O-HAZE


def test_scan_pairs_every_hazy_image_with_its_clear_one_and_depth(reside_root):
    items = scan_paired_folder(reside_root, "r")
    assert len(items) == 6
    assert {item.scene for item in items} == {"1400", "1401", "1402"}
    for item in items:
        assert item.clear.stem == item.hazy.stem.split("_")[0]
        assert (item.depth is not None) == (item.scene == "1400")


def test_split_is_by_scene_and_val_scenes_never_reach_training(reside_root):
    config = SourceConfig(
        kind="reside", path=str(reside_root), val_scenes=["1401"], test_scenes=["1402"]
    )
    train = ResideSource("r", config, "train", reside_root)
    val = ResideSource("r", config, "val", reside_root)
    test = ResideSource("r", config, "test", reside_root)
    assert train.scenes() == ["1400"] and val.scenes() == ["1401"] and test.scenes() == ["1402"]
    assert len(train) == len(val) == len(test) == 2  # both haze levels follow their scene
    rng = np.random.default_rng(0)
    names = {train.train_sample(rng, 16).name for _ in range(20)}
    assert names <= {"r/1400_1.png", "r/1400_2.png"}


def test_crops_of_hazy_clear_and_depth_are_aligned(reside_root):
    source = ResideSource(
        "r",
        SourceConfig(kind="reside", path=str(reside_root), scale_range=[0.5, 1.0]),
        "train",
        reside_root,
    )
    rng = np.random.default_rng(1)
    for _ in range(10):
        sample = source.train_sample(rng, 24)
        assert sample.hazy.shape == sample.clear.shape == (24, 24, 3)
        assert sample.depth_m.shape == (24, 24)
        expected = sample.clear * 0.5 + 100 / 255
        assert np.abs(sample.hazy - expected).max() < 3 / 255
        if sample.has_depth:
            finite = np.isfinite(sample.depth_m)
            assert np.allclose(sample.depth_m[finite], 2.5)
        else:
            assert np.isnan(sample.depth_m).all()


def test_its_style_larger_clear_images_are_cropped_to_the_hazy_size(tmp_path):
    root = tmp_path / "its"
    clear = clear_image(
        7, 68, 84
    )  # 20 px larger in both directions, like RESIDE ITS 640x480 vs 620x460
    write_rgb(root / "gt" / "7.png", clear)
    write_rgb(root / "hazy" / "7_1_0.8.png", hazy_from(clear[10:-10, 10:-10]))
    source = ResideSource("its", SourceConfig(kind="reside", path=str(root)), "train", root)
    sample = source.eval_sample(0, max_side=1000)
    assert sample.clear.shape == sample.hazy.shape == (48, 64, 3)
    assert np.abs(sample.hazy - (sample.clear * 0.5 + 100 / 255)).max() < 2 / 255


def test_missing_clear_image_and_bad_layout_are_named(tmp_path, reside_root):
    write_rgb(reside_root / "hazy" / "9999_1.png", clear_image(1))
    with pytest.raises(DataError, match=r"no clear image for .*9999_1.png.*tried 9999_1, 9999"):
        scan_paired_folder(reside_root, "r")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="not in RESIDE layout.*hazy/"):
        scan_paired_folder(tmp_path / "flat", "r")
    with pytest.raises(DataError, match="does not exist"):
        scan_paired_folder(tmp_path / "missing", "r")


def test_unknown_validation_scene_is_an_error_listing_the_scenes(reside_root):
    config = SourceConfig(kind="reside", path=str(reside_root), val_scenes=["1499"])
    with pytest.raises(DataError, match="'1499'.*1400, 1401, 1402"):
        ResideSource("r", config, "train", reside_root)
