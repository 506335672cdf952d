"""Procedural source and the mixture: seeded, index-addressed, independent of DataLoader workers."""

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from training.config import HazeConfig, SourceConfig, load_config
from training.data import (
    ContinuingSampler,
    DataError,
    MixtureDataset,
    build_sources,
    build_training_dataset,
    build_validation_samples,
    worker_init,
)
from training.data.common import synthesize_random_haze
from training.data.procedural import ProceduralSource


def test_procedural_samples_are_seeded_and_keep_sky_depth_infinite():
    source = ProceduralSource("p", SourceConfig(kind="procedural"), "train")
    first = source.train_sample(np.random.default_rng([0, 5]), 32)
    again = source.train_sample(np.random.default_rng([0, 5]), 32)
    other = source.train_sample(np.random.default_rng([0, 6]), 32)
    np.testing.assert_array_equal(first.hazy, again.hazy)
    assert not np.array_equal(first.clear, other.clear)
    assert first.hazy.shape == (32, 32, 3) and first.depth_m.dtype == np.float32
    assert np.all((first.depth_m > 0) | np.isnan(first.depth_m))
    views = [source.train_sample(np.random.default_rng([1, i]), 24) for i in range(12)]
    assert any(np.isposinf(view.depth_m).any() for view in views)  # outdoor scenes show sky


def test_procedural_validation_views_are_fixed_and_not_training_views():
    val = ProceduralSource("p", SourceConfig(kind="procedural", val_count=3), "val")
    assert len(val) == 3 and val.scenes() == ["view0", "view1", "view2"]
    a, b = val.eval_sample(1, 40), val.eval_sample(1, 40)
    np.testing.assert_array_equal(a.hazy, b.hazy)
    assert a.clear.shape == (30, 40, 3)
    train = ProceduralSource("p", SourceConfig(kind="procedural"), "train")
    train_views = [train.train_sample(np.random.default_rng([0, i]), 40).clear for i in range(8)]
    assert not any(np.array_equal(view[:30], a.clear) for view in train_views)
    with pytest.raises(IndexError):
        val.eval_sample(3, 40)


def test_mixture_follows_the_weights_and_every_index_is_reproducible():
    config = load_config(
        None,
        [
            "data.sources.a={kind: procedural, weight: 3}",
            "data.sources.b={kind: procedural, weight: 1}",
            "data.crop=16",
        ],
    )
    dataset = build_training_dataset(config.data, seed=7)
    picks = [dataset.sample(i)[1] for i in range(400)]
    share_a = picks.count(0) / len(picks)
    assert 0.68 < share_a < 0.82
    torch.testing.assert_close(dataset[123]["hazy"], dataset[123]["hazy"], rtol=0, atol=0)
    other_seed = build_training_dataset(config.data, seed=8)
    assert not torch.equal(dataset[0]["clear"], other_seed[0]["clear"])


def test_batches_do_not_depend_on_the_number_of_workers_and_resume_from_an_index():
    config = load_config(None, ["data.sources.p={kind: procedural}", "data.crop=16"])
    dataset = build_training_dataset(config.data, seed=0)

    def batches(workers, start, count):
        extra = (
            {"worker_init_fn": worker_init, "multiprocessing_context": "spawn"} if workers else {}
        )
        loader = DataLoader(
            dataset,
            batch_size=2,
            sampler=ContinuingSampler(start),
            num_workers=workers,
            generator=torch.Generator(),
            **extra,
        )
        iterator = iter(loader)
        return [next(iterator) for _ in range(count)]

    serial = batches(0, 0, 3)
    parallel = batches(2, 0, 3)
    resumed = batches(0, 4, 1)  # data position 4 = the third batch
    for one, two in zip(serial, parallel):
        for key in ("hazy", "clear", "depth", "has_depth", "source"):
            torch.testing.assert_close(one[key], two[key], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(resumed[0]["hazy"], serial[2]["hazy"], rtol=0, atol=0)
    assert serial[0]["hazy"].shape == (2, 3, 16, 16) and serial[0]["depth"].shape == (2, 1, 16, 16)


def test_mixture_rejects_bad_weights_and_sources_without_training_items(tmp_path):
    with pytest.raises(ValueError, match="weights"):
        MixtureDataset(
            [ProceduralSource("p", SourceConfig(kind="procedural"), "train")], [0.0], 16, 0
        )
    root = tmp_path / "reside"
    (root / "hazy").mkdir(parents=True)
    (root / "GT").mkdir()
    cv2.imwrite(str(root / "GT" / "1.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(root / "hazy" / "1_1.png"), np.zeros((8, 8, 3), np.uint8))
    config = load_config(
        None,
        [f"data.root={tmp_path}", "data.sources.r={kind: reside, path: reside, val_scenes: ['1']}"],
    )
    with pytest.raises(
        DataError, match=r"no training items: every scene is held out \(val/test: 1\)"
    ):
        build_training_dataset(config.data, seed=0)


def test_validation_set_spreads_over_items_of_every_source():
    config = load_config(
        None,
        [
            "data.sources.p={kind: procedural, val_count: 5}",
            "data.val_max_images=3",
            "data.val_max_side=32",
        ],
    )
    samples = build_validation_samples(config.data, seed=0)
    assert [s.name for s in samples] == ["p/view0", "p/view2", "p/view4"]
    assert (
        build_sources(config.data, "train")[0]
        .describe()
        .startswith("procedural source 'p' (train)")
    )


def test_outdoor_share_mixes_vehicle_scale_scenes_with_their_own_fog():
    config = SourceConfig(kind="procedural", outdoor_share=1.0, outdoor_val_count=2, val_count=1)
    source = ProceduralSource("procedural", config, "train")
    samples = [source.train_sample(np.random.default_rng(seed), 64) for seed in range(8)]
    assert all(sample.name == "procedural/outdoor" for sample in samples)
    assert any(np.isposinf(sample.depth_m).any() for sample in samples)
    assert max(np.nanmax(s.depth_m[np.isfinite(s.depth_m)]) for s in samples) > 200
    # A crop is a window of a deployed frame (256-640 px wide, 45-100 degrees): its focal length is
    # that frame's, not the focal length of a 64 px image with the whole field of view (~46 px).
    focal = [sample.focal_px for sample in samples]
    assert min(focal) >= 256 / 2 / np.tan(np.radians(50)) - 1e-6 and max(focal) <= 640 / 2 / np.tan(
        np.radians(22.5)
    )
    assert len(set(np.round(focal))) == len(focal)
    val = ProceduralSource("procedural", config, "val")
    assert len(val) == 3 and val.scenes() == ["view0", "outdoor0", "outdoor1"]
    names = [val.eval_sample(index, 64).name for index in range(3)]
    assert names == ["procedural/view0", "procedural_outdoor/view0", "procedural_outdoor/view1"]
    again = val.eval_sample(2, 64)
    np.testing.assert_array_equal(
        again.hazy, val.eval_sample(2, 64).hazy
    )  # fixed views, fixed haze


def test_fog_by_visibility_follows_koschmieder():
    """visibility V: beta = 3.912 / V, so at distance V the transmission is 2% (Koschmieder)."""
    haze = HazeConfig(
        visibility_range_m=[200.0, 200.0],
        airlight_range=[0.8, 0.8],
        airlight_tint=0.0,
        nonhomogeneous_prob=0.0,
        noise_prob=0.0,
        jpeg_prob=0.0,
    )
    clear = np.zeros((2, 3, 3), np.float32)
    depth = np.array([[0.0, 200.0, np.inf], [100.0, 50.0, 10.0]], np.float32)
    hazy = synthesize_random_haze(clear, depth, haze, np.random.default_rng(0))
    expected_t = np.exp(-3.912 / 200.0 * np.nan_to_num(depth, posinf=1e9))
    np.testing.assert_allclose(hazy[..., 0], 0.8 * (1 - expected_t), atol=1e-5)
    assert hazy[0, 1, 0] == pytest.approx(0.8 * 0.98, abs=1e-4)


def test_vehicle_samples_bring_their_camera_and_the_fog_of_their_turn():
    from training.data.procedural import VEHICLE_VISIBILITIES_M, vehicle_sample

    foggy, clear = vehicle_sample(0, 320), vehicle_sample(4, 320)
    assert foggy.name == "vehicle/view0_wide_fog50m" and clear.name == "vehicle/view4_16x9_clear"
    assert VEHICLE_VISIBILITIES_M[0] == 50.0 and VEHICLE_VISIBILITIES_M[4] == float("inf")
    assert foggy.hazy.shape == (97, 320, 3) and clear.hazy.shape == (180, 320, 3)
    assert foggy.focal_px == pytest.approx(721.0 * 320 / 1242, rel=0.01)  # the zoom of the resize
    for sample in (foggy, clear):
        assert 1.2 <= sample.camera_height_m <= 2.0 and -5.0 <= sample.camera_pitch_deg <= 5.0
    np.testing.assert_array_equal(clear.hazy, clear.clear)  # clear air: no haze
    assert np.abs(foggy.hazy - foggy.clear).mean() > 0.05
    np.testing.assert_array_equal(vehicle_sample(0, 320).hazy, foggy.hazy)  # fixed views, fixed fog


def test_vehicle_share_draws_windows_of_vehicle_cameras_among_the_outdoor_samples():
    from dehaze_ros.sim.scenes import render_random_outdoor_view, render_random_vehicle_window
    from training.data.procedural import FRAME_WIDTH_RANGE_PX, crop_field_of_view

    def vehicle_source(share: float) -> ProceduralSource:
        config = SourceConfig(kind="procedural", outdoor_share=1.0, vehicle_share=share)
        return ProceduralSource("procedural", config, "train")

    # vehicle_share 1: every sample is the window the rng's next draws give (after the outdoor
    # and the vehicle coin), hazed as an outdoor sample.
    for seed in range(3):
        sample = vehicle_source(1.0).train_sample(np.random.default_rng(seed), 48)
        rng = np.random.default_rng(seed)
        rng.random(), rng.random()
        window = render_random_vehicle_window(rng, 48, FRAME_WIDTH_RANGE_PX)
        assert sample.name == "procedural/outdoor"
        np.testing.assert_array_equal(sample.depth_m, window.depth_m)
        assert sample.focal_px == window.K[0, 0]
    # vehicle_share 0: the outdoor samples are the scenes they always were (no extra draw).
    for seed in range(3):
        sample = vehicle_source(0.0).train_sample(np.random.default_rng(seed), 32)
        rng = np.random.default_rng(seed)
        rng.random()
        expected = render_random_outdoor_view(rng, 32, 32, hfov_deg=crop_field_of_view(rng, 32))
        np.testing.assert_array_equal(sample.depth_m, expected.depth_m)
    # A share in between mixes the two: some samples are the windows of share 1, some not.
    kinds = {
        np.array_equal(
            vehicle_source(0.5).train_sample(np.random.default_rng(seed), 32).depth_m,
            vehicle_source(1.0).train_sample(np.random.default_rng(seed), 32).depth_m,
        )
        for seed in range(8)
    }
    assert kinds == {True, False}
    # The vehicle depth fine-tune's config loads and asks for what its comment says.
    vehicle = load_config("config/train/diacmpn_rt_vehicle_depth.yaml")
    assert vehicle.train.freeze == ["dehazer"] and vehicle.train.select_metric == "abs_rel"
    assert vehicle.data.sources["procedural"].vehicle_share == 0.8
    assert vehicle.data.sources["its"].weight == 0.0
    with pytest.raises(Exception, match="vehicle_share must lie in"):
        load_config(
            "config/train/diacmpn_rt_vehicle_depth.yaml",
            ["data.sources.procedural.vehicle_share=2"],
        )
    with pytest.raises(Exception, match="share of the outdoor samples"):
        load_config(
            "config/train/diacmpn_rt_vehicle_depth.yaml",
            ["data.sources.procedural.outdoor_share=0"],
        )
