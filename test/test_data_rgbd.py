"""RGB-D source on folders this test writes: Middlebury PFM + calib, 16-bit PNG/PGM, haze physics."""

import dataclasses

import cv2
import numpy as np
import pytest

from training.config import HazeConfig, SourceConfig
from training.data import DataError
from training.data.common import fill_unknown_depth, hazed_sample, synthesize_random_haze
from training.data.mixture import random_flips, sample_to_tensors
from training.data.io import read_pfm, write_pfm
from training.data.rgbd import RELATIVE_MEDIAN_M, RgbdSource, load_rgbd_item, scan_rgbd_folder

CALIB = """cam0=[700.0 0 30 ; 0 700.0 20 ; 0 0 1]
cam1=[700.0 0 40 ; 0 700.0 20 ; 0 0 1]
doffs=10.0
baseline=200.0
width=64
height=48
"""
NO_DEGRADATION = dict(nonhomogeneous_prob=0.0, noise_prob=0.0, jpeg_prob=0.0, airlight_tint=0.0)


def write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def write_middlebury(folder, disparity):
    folder.mkdir(parents=True)
    write_rgb(folder / "im0.png", np.full((48, 64, 3), 120, np.uint8))
    write_pfm(folder / "disp0GT.pfm", disparity)
    (folder / "calib.txt").write_text(CALIB)


@pytest.fixture()
def rgbd_root(tmp_path):
    root = tmp_path / "rgbd"
    disparity = np.full((48, 64), 60.0, np.float32)
    disparity[40:] = 130.0
    disparity[:, :8] = np.inf  # unknown
    for scene in ("Piano", "PianoL", "Pipes", "Teddy"):
        write_middlebury(root / "middlebury2014" / scene, disparity)
    frames = root / "frames" / "kinect"
    for index in (1, 2):
        write_rgb(frames / "color" / f"{index}.png", np.full((48, 64, 3), 90, np.uint8))
        depth = np.full((48, 64), 1500 * index, np.uint16)
        depth[:4, :4] = 0
        (frames / "depth").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(frames / "depth" / f"{index}.pgm"), depth)
    tum = root / "frames" / "tum"
    write_rgb(tum / "1.png", np.full((48, 64, 3), 60, np.uint8))
    cv2.imwrite(str(tum / "1_depth.png"), np.full((48, 64), 10000, np.uint16))
    write_rgb(root / "legacy" / "Art" / "view1.png", np.zeros((8, 8, 3), np.uint8))  # relative only
    return root


def test_pfm_round_trip_keeps_orientation(tmp_path):
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    image[0, 0] = np.inf
    write_pfm(tmp_path / "x.pfm", image)
    np.testing.assert_array_equal(read_pfm(tmp_path / "x.pfm"), image)


def test_layouts_are_found_and_legacy_folders_reported(rgbd_root):
    items, skipped = scan_rgbd_folder(
        rgbd_root, SourceConfig(kind="rgbd", depth_scales={"tum": 0.0002}), "r"
    )
    names = sorted(item.name for item in items)
    assert names == ["Piano", "PianoL", "Pipes", "Teddy", "kinect/1", "kinect/2", "tum/1"]
    assert "legacy/Art" in skipped
    scenes = {item.name: item.scene for item in items}
    assert scenes["PianoL"] == "Piano"  # a lighting variant is the same scene
    assert scenes["kinect/2"] == "kinect"  # a frame sequence is one scene


def test_middlebury_disparity_becomes_metres_and_unknown_becomes_nan(rgbd_root):
    items, _ = scan_rgbd_folder(rgbd_root, SourceConfig(kind="rgbd"), "r")
    piano = next(item for item in items if item.name == "Piano")
    color, depth = load_rgbd_item(piano)
    assert color.shape == (48, 64, 3)
    # Z[mm] = baseline * f / (d + doffs) = 200 * 700 / (60 + 10) = 2000 mm
    np.testing.assert_allclose(depth[10, 20], 2.0, rtol=1e-6)
    np.testing.assert_allclose(depth[45, 20], 200 * 700 / 140 / 1000, rtol=1e-6)
    assert np.isnan(depth[:, :8]).all()


def test_16bit_depth_uses_the_folder_scale_and_zero_is_a_hole(rgbd_root):
    config = SourceConfig(kind="rgbd", depth_scale=0.001, depth_scales={"tum": 0.0002})
    items, _ = scan_rgbd_folder(rgbd_root, config, "r")
    by_name = {item.name: item for item in items}
    _, kinect = load_rgbd_item(by_name["kinect/2"])
    assert kinect[10, 10] == pytest.approx(3.0) and np.isnan(kinect[:4, :4]).all()
    _, tum = load_rgbd_item(by_name["tum/1"])
    assert tum[10, 10] == pytest.approx(2.0)


def test_variants_share_a_split_and_held_out_scenes_stay_out(rgbd_root):
    config = SourceConfig(kind="rgbd", val_scenes=["PianoL", "Teddy"], exclude=["legacy"])
    train = RgbdSource("r", config, "train", rgbd_root)
    val = RgbdSource("r", config, "val", rgbd_root)
    assert val.scenes() == ["Piano", "Teddy"]
    assert sorted(item.name for item in val.items) == ["Piano", "PianoL", "Teddy"]
    assert "Piano" not in train.scenes() and "Teddy" not in train.scenes()
    rng = np.random.default_rng(0)
    seen = {train.train_sample(rng, 16).name for _ in range(40)}
    assert not any("Piano" in name or "Teddy" in name for name in seen)


def test_synthesised_haze_follows_the_scattering_model():
    clear = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    depth = np.full((32, 32), 4.0, np.float32)
    haze = HazeConfig(transmission_range=[0.3, 0.3], airlight_range=[0.9, 0.9], **NO_DEGRADATION)
    hazy = synthesize_random_haze(clear, depth, haze, np.random.default_rng(0))
    # At the median depth the transmission is the drawn one: I = 0.3 J + 0.9 (1 - 0.3).
    np.testing.assert_allclose(hazy, clear * 0.3 + 0.9 * 0.7, atol=1e-5)


def test_a_hazed_sample_carries_the_haze_it_was_made_with_through_flips_and_turns():
    rng = np.random.default_rng(3)
    clear = rng.uniform(0, 1, (24, 40, 3)).astype(np.float32)
    depth = np.tile(np.linspace(1, 20, 40, dtype=np.float32), (24, 1))
    depth[:6, :] = np.inf  # sky: t = 0
    haze = HazeConfig(
        transmission_range=[0.4, 0.4],
        airlight_range=[0.7, 1.0],
        airlight_tint=0.05,
        nonhomogeneous_prob=1.0,
        noise_prob=0.0,
        jpeg_prob=0.0,
    )
    sample = hazed_sample((clear * 255).astype(np.uint8), depth, haze, rng, "scene", 500.0)
    assert sample.transmission.shape == depth.shape and sample.airlight.shape == (3,)
    assert np.all(sample.transmission[:6] == 0.0) and np.all(sample.transmission[6:] > 0.0)

    def reconstructs(s):  # I = J t + A (1 - t), pixel by pixel (the haze is non-homogeneous)
        t = s.transmission[..., None]
        np.testing.assert_allclose(
            s.hazy, np.clip(s.clear * t + s.airlight * (1 - t), 0, 1), atol=1e-5
        )

    reconstructs(sample)
    for seed in range(6):  # flips and 90-degree turns move t with the image
        moved = random_flips(sample, np.random.default_rng(seed), flips=True, rot90=True)
        reconstructs(moved)
    tensors = sample_to_tensors(sample)
    assert tensors["transmission"].shape == (1, 24, 40) and tensors["airlight"].shape == (3,)
    # A photograph's haze is unknown: NaN, which the losses leave out.
    unknown = sample_to_tensors(dataclasses.replace(sample, transmission=None, airlight=None))
    assert unknown["transmission"].isnan().all() and unknown["airlight"].isnan().all()


def test_farther_pixels_get_more_haze_and_holes_are_not_sky():
    clear = np.zeros((8, 16, 3), np.float32)
    depth = np.tile(np.linspace(1, 10, 16, dtype=np.float32), (8, 1))
    depth[:, 3] = np.nan
    haze = HazeConfig(transmission_range=[0.5, 0.5], airlight_range=[1.0, 1.0], **NO_DEGRADATION)
    hazy = synthesize_random_haze(clear, depth, haze, np.random.default_rng(0))
    row = hazy[0, :, 0]
    assert np.all(np.diff(np.delete(row, 3)) > 0)  # haze grows with distance
    assert row[3] < 0.9  # the hole got a neighbour's depth, not airlight
    filled = fill_unknown_depth(depth)
    assert np.isfinite(filled).all() and filled[0, 3] in (depth[0, 2], depth[0, 4])


def test_training_crop_depth_keeps_nan_for_unknown_pixels(rgbd_root):
    config = SourceConfig(kind="rgbd", scale_range=[1.0, 1.0], exclude=["frames", "legacy"])
    source = RgbdSource("r", config, "train", rgbd_root)
    rng = np.random.default_rng(3)
    unknown_seen = False
    for _ in range(30):
        sample = source.train_sample(rng, 40)  # a third of the crops reach the unknown columns
        assert sample.has_depth and sample.depth_m.shape == (40, 40)
        assert np.isfinite(sample.hazy).all() and 0 <= sample.hazy.min() and sample.hazy.max() <= 1
        unknown_seen |= bool(np.isnan(sample.depth_m).any())
    assert unknown_seen


def test_mismatched_depth_and_empty_folders_are_errors(tmp_path):
    frames = tmp_path / "bad" / "seq"
    write_rgb(frames / "color" / "1.png", np.zeros((48, 64, 3), np.uint8))
    (frames / "depth").mkdir(parents=True)
    cv2.imwrite(str(frames / "depth" / "1.png"), np.ones((24, 32), np.uint16))
    items, _ = scan_rgbd_folder(tmp_path / "bad", SourceConfig(kind="rgbd"), "r")
    with pytest.raises(DataError, match="registered and the same size"):
        load_rgbd_item(items[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no RGB-D pairs"):
        RgbdSource("r", SourceConfig(kind="rgbd"), "train", tmp_path / "empty")


def write_legacy(folder, disparity):
    folder.mkdir(parents=True)
    write_rgb(folder / "view1.png", np.full(disparity.shape + (3,), 100, np.uint8))
    assert cv2.imwrite(str(folder / "disp1.png"), disparity)


def test_legacy_middlebury_gives_relative_depth_that_trains_scale_free(tmp_path):
    """Middlebury 2001-2006: 1 / disparity, unknown (0) -> NaN, median fixed, marked not metric."""
    disparity = np.full((40, 50), 40, np.uint8)
    disparity[:, 25:] = 80  # twice the disparity: half the depth
    disparity[:3] = 0  # unknown
    write_legacy(tmp_path / "legacy" / "Aloe", disparity)
    source = RgbdSource(
        "rgbd", SourceConfig(kind="rgbd", scale_range=[1.0, 1.0]), "train", tmp_path
    )
    (item,) = source.items
    assert item.relative and item.scene == "legacy/Aloe"
    _, depth = load_rgbd_item(item)
    assert np.isnan(depth[:3]).all()
    np.testing.assert_allclose(depth[10, 5] / depth[10, 40], 2.0, rtol=1e-6)
    np.testing.assert_allclose(np.nanmedian(depth), RELATIVE_MEDIAN_M, rtol=1e-5)
    sample = source.train_sample(np.random.default_rng(0), 32)
    assert not sample.metric_depth and not sample.focal_px > 0


def test_samples_carry_the_focal_length_of_the_crop_as_the_network_sees_it(rgbd_root):
    """calib.txt's f (700 px) times the crop's zoom; frame folders from focal_px_by_folder."""
    config = SourceConfig(
        kind="rgbd",
        exclude=["legacy"],
        scale_range=[0.5, 0.5],
        focal_px_by_folder={"kinect": 520.0},
    )
    source = RgbdSource("rgbd", config, "train", rgbd_root)
    focal = {item.name: item.focal_px for item in source.items}
    assert focal["Piano"] == 700.0 and focal["kinect/1"] == 520.0 and focal["tum/1"] == 0.0
    rng = np.random.default_rng(3)
    for _ in range(6):
        sample = source.train_sample(rng, 16)
        item_focal = focal[sample.name.split("/", 1)[1]]
        # scale 0.5: a 32-pixel window resized to 16 pixels halves the focal length
        assert sample.focal_px == pytest.approx(item_focal * 0.5)
    evaluation = source.eval_sample(0, 32)  # 64 px wide stored image, max_side 32
    assert evaluation.focal_px == pytest.approx(focal[source.items[0].name] * 0.5)


def test_scale_reference_side_makes_the_crop_scale_relative_to_that_image_size(rgbd_root):
    """64 px wide stored images (f = 700 px), scale 1: with reference 32 a 16 px crop is cut from
    the image as if it were 32 px wide (a 32 px window, zoom 0.5, half the focal length); with
    reference 128 from a 2x upscaled image (an 8 px window, zoom 2); without one at stored size."""
    for reference, zoom in [(32, 0.5), (0, 1.0), (128, 2.0)]:
        config = SourceConfig(
            kind="rgbd",
            exclude=["legacy", "frames"],
            scale_range=[1.0, 1.0],
            scale_reference_side=reference,
        )
        source = RgbdSource("rgbd", config, "train", rgbd_root)
        rng = np.random.default_rng(0)
        for _ in range(3):
            sample = source.train_sample(rng, 16)
            assert sample.hazy.shape == (16, 16, 3)
            assert sample.focal_px == pytest.approx(700.0 * zoom)
    with pytest.raises(Exception, match="scale_reference_side must be 0"):
        SourceConfig(kind="rgbd", path="rgbd", scale_reference_side=8).check("data.sources.rgbd")


def test_val_items_hold_single_frames_out_of_training(rgbd_root):
    config = SourceConfig(
        kind="rgbd", exclude=["legacy"], val_scenes=["Pipes"], val_items=["kinect/2"]
    )
    train = {item.name for item in RgbdSource("rgbd", config, "train", rgbd_root).items}
    val = {item.name for item in RgbdSource("rgbd", config, "val", rgbd_root).items}
    assert "kinect/2" in val and "kinect/2" not in train and "kinect/1" in train
    assert "Pipes" in val and "Pipes" not in train
    with pytest.raises(DataError, match="val_items names kinect/9"):
        RgbdSource("rgbd", SourceConfig(kind="rgbd", val_items=["kinect/9"]), "train", rgbd_root)
