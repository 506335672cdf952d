"""Depth from the haze: the fit of beta, the fusion's limits (clear air, sky, saturated haze, NaN),
and depth_from_haze in the engine end to end. Rendered scenes with exact depth, hazed by the ASM."""

import dataclasses
import math

import cv2
import numpy as np
import pytest

from dehaze_ros.checkpoint import save_checkpoint
from dehaze_ros.engine import DEFAULT_CHECKPOINT, DehazeEngine, EngineConfig
from dehaze_ros.models import build_dehazer, build_depth_net, get_model_config
from dehaze_ros.haze import synthesize_haze
from dehaze_ros.haze_depth import FUSED, NETWORK, T_LOW, fuse_depth_with_haze
from dehaze_ros.sim.scenes import outdoor_validation_view, render_random_view
from dehaze_ros.upsampling import upsample_depth
from training.metrics import depth_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why

AIRLIGHT = 0.9


def median_scaled_abs_rel(pred, truth):
    return depth_metrics(pred, truth)["abs_rel_median"]


@pytest.fixture(scope="module")
def indoor():
    """A rendered room (1.3-11 m, no sky) and beta giving t = 0.4 at its median depth, as the
    evaluator hazes RGB-D scenes."""
    frame = render_random_view(np.random.default_rng(3), 160, 120)
    beta = -math.log(0.4) / float(np.median(frame.depth_m))
    return frame, beta


def distorted(depth, scale=1.7, power=0.6, seed=0):
    """A network that knows roughly the metres but not the shape: compressed depth, noise."""
    noise = np.random.default_rng(seed).normal(0.0, 0.05, depth.shape).astype(np.float32)
    return (scale * np.median(depth) * (depth / np.median(depth)) ** power * np.exp(noise)).astype(
        np.float32
    )


def test_minus_ln_t_alone_has_the_scenes_shape_and_the_fit_recovers_beta(indoor):
    frame, _ = indoor
    # Light enough that every pixel is informative: t from 0.86 (1.3 m) to 0.28 (11 m).
    beta = -math.log(0.6) / float(np.median(frame.depth_m))
    _, transmission = synthesize_haze(
        frame.rgb.astype(np.float32) / 255, frame.depth_m, beta, AIRLIGHT
    )
    assert median_scaled_abs_rel(-np.log(transmission), frame.depth_m) < 1e-4
    # A network with exact metres: beta per metre comes back.
    exact = fuse_depth_with_haze(frame.depth_m, transmission)
    assert exact.status == FUSED and exact.beta_per_unit == pytest.approx(beta, rel=1e-4)
    assert exact.pixels == frame.depth_m.size
    # A network whose metres are 2x: beta is per ITS unit, so the haze's depth lands on its scale.
    doubled = fuse_depth_with_haze(2.0 * frame.depth_m, transmission)
    assert doubled.beta_per_unit == pytest.approx(beta / 2.0, rel=1e-4)
    np.testing.assert_allclose(doubled.depth_m, 2.0 * frame.depth_m, rtol=1e-4)
    # Trusting the transmission fully (no t noise, no agreement test) gives -ln t's shape in the
    # network's metres, whatever the network's own shape was.
    network = distorted(frame.depth_m)
    haze_only = fuse_depth_with_haze(
        network, transmission, transmission_noise=1e-6, agreement_window=0.0
    )
    assert haze_only.haze_weight.min() > 0.99
    assert median_scaled_abs_rel(haze_only.depth_m, frame.depth_m) < 1e-3
    assert np.median(haze_only.depth_m) / np.median(network) == pytest.approx(1.0, rel=0.05)


def test_fusion_improves_a_distorted_network_and_keeps_its_metres(indoor):
    frame, beta = indoor
    rng = np.random.default_rng(1)
    # The transmission as an estimator gives it: off by a few hundredths, smoothly.
    error = cv2.GaussianBlur(
        rng.normal(0.0, 0.03, frame.depth_m.shape).astype(np.float32), (0, 0), 2.0
    )
    transmission = np.clip(np.exp(-beta * frame.depth_m) + error, 0.0, 1.0).astype(np.float32)
    network = distorted(frame.depth_m)
    result = fuse_depth_with_haze(network, transmission, (0.1, 80.0))
    assert result.status == FUSED
    before = median_scaled_abs_rel(network, frame.depth_m)
    after = median_scaled_abs_rel(result.depth_m, frame.depth_m)
    assert after < 0.6 * before, (before, after)
    assert np.median(result.depth_m) / np.median(network) == pytest.approx(1.0, rel=0.1)
    assert 0.0 <= result.haze_weight.min() and result.haze_weight.max() <= 1.0
    assert 0.3 < result.mean_weight < 1.0


def test_clear_air_leaves_the_network_untouched(indoor):
    frame, _ = indoor
    network = distorted(frame.depth_m)
    clear = np.exp(-0.001 * frame.depth_m).astype(np.float32)  # V of about 4 km: t > 0.98
    result = fuse_depth_with_haze(network, clear)
    assert (
        result.status == NETWORK
        and "clear air" in result.reason
        and math.isnan(result.beta_per_unit)
    )
    np.testing.assert_array_equal(result.depth_m, network)
    assert not result.haze_weight.any() and result.depth_m is not network  # a copy, not the input


def test_a_clear_region_keeps_the_network_where_the_rest_is_hazy(indoor):
    frame, _ = indoor
    beta = -math.log(0.6) / float(np.median(frame.depth_m))  # no pixel saturated
    network = distorted(frame.depth_m)
    transmission = np.exp(-beta * frame.depth_m).astype(np.float32)
    transmission[:, :40] = 0.99  # clear air there (t says nothing)
    transmission[:, 40:60] = 0.98
    result = fuse_depth_with_haze(network, transmission)
    np.testing.assert_array_equal(result.depth_m[:, :60], network[:, :60])
    assert (result.haze_weight[:, 60:] > 0).all()


def test_sky_saturated_haze_and_unknown_pixels_keep_their_rep117_values():
    frame = outdoor_validation_view(0, 160, 120)
    depth = frame.depth_m.copy()
    sky = np.isposinf(depth)
    assert sky.any() and (~sky).any()
    transmission = np.exp(-(3.912 / 100.0) * depth).astype(np.float32)  # fog, V = 100 m: sky t = 0
    network = distorted(np.where(sky, 500.0, depth).astype(np.float32))
    network[sky] = np.inf
    network[:3, :3] = np.nan  # a hole
    network[-2:, -2:] = -np.inf  # closer than the model can see
    result = fuse_depth_with_haze(network, transmission, (0.1, 80.0))
    assert result.status == FUSED
    assert np.isposinf(result.depth_m[np.isposinf(network)]).all()
    assert np.isnan(result.depth_m[:3, :3]).all() and np.isneginf(result.depth_m[-2:, -2:]).all()
    saturated = ~sky & (transmission <= T_LOW)  # beyond 86 m: -ln t only says "far"
    assert saturated.any()
    np.testing.assert_array_equal(result.depth_m[saturated], network[saturated])
    assert not result.haze_weight[sky | saturated].any()
    # Depths outside the model's range are the engine's REP-117 markers later: kept as they are.
    beyond = network > 80.0
    np.testing.assert_array_equal(result.depth_m[beyond], network[beyond])


def test_dense_haze_everywhere_keeps_the_network(indoor):
    frame, _ = indoor
    network = distorted(frame.depth_m)
    opaque = np.full(frame.depth_m.shape, 0.1, np.float32)  # the t0 floor: all airlight
    result = fuse_depth_with_haze(network, opaque)
    assert result.status == NETWORK
    np.testing.assert_array_equal(result.depth_m, network)


def test_shapes_are_checked_and_a_transmission_of_another_size_is_resampled(indoor):
    frame, beta = indoor
    transmission = np.exp(-beta * frame.depth_m).astype(np.float32)
    half = cv2.resize(transmission, (80, 60), interpolation=cv2.INTER_AREA)
    result = fuse_depth_with_haze(frame.depth_m.astype(np.float64), half)
    assert result.depth_m.shape == frame.depth_m.shape and result.depth_m.dtype == np.float32
    assert (
        result.haze_weight.shape == frame.depth_m.shape and result.haze_weight.dtype == np.float32
    )
    assert result.beta_per_unit == pytest.approx(beta, rel=0.05)
    with pytest.raises(ValueError, match="H x W"):
        fuse_depth_with_haze(frame.depth_m[..., None], transmission)
    with pytest.raises(ValueError, match="H x W"):
        fuse_depth_with_haze(np.zeros((0, 4), np.float32), transmission)
    with pytest.raises(ValueError, match="t_low"):
        fuse_depth_with_haze(frame.depth_m, transmission, t_low=0.5, t_full=0.4)
    with pytest.raises(ValueError, match="network_error"):
        fuse_depth_with_haze(frame.depth_m, transmission, network_error=0.0)


def test_a_region_the_haze_contradicts_keeps_the_network(indoor):
    """A pale wall reads as haze: its t is low although it is near. Where the transmission
    disagrees with the network over a whole region, the agreement test keeps the network."""
    frame, _ = indoor
    beta = -math.log(0.7) / float(np.median(frame.depth_m))  # light: the wall stays above T_LOW
    transmission = np.exp(-beta * frame.depth_m).astype(np.float32)
    wall = (slice(30, 90), slice(50, 110))
    transmission[wall] = np.exp(-beta * 2.0 * frame.depth_m[wall])  # "twice as far"
    network = frame.depth_m.copy()  # right, here
    trusting = fuse_depth_with_haze(network, transmission, agreement_window=0.0)
    agreeing = fuse_depth_with_haze(network, transmission)
    error = lambda depth: float(np.median(np.abs(np.log(depth[wall] / frame.depth_m[wall]))))  # noqa: E731
    assert error(trusting.depth_m) > 0.5
    assert error(agreeing.depth_m) < 0.25 * error(trusting.depth_m)
    assert agreeing.haze_weight[wall].mean() < 0.3 < agreeing.haze_weight[:20].mean()


# --- the engine -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines():
    """The shipped checkpoint fused and, sharing its networks, not fused."""
    fused = DehazeEngine(
        EngineConfig(
            checkpoint=str(DEFAULT_CHECKPOINT),
            device="cpu",
            precision="fp32",
            max_side=96,
            depth_max_side=96,
            warmup=0,
            depth_from_haze="fuse",
        )
    )
    plain = DehazeEngine(
        dataclasses.replace(fused.config, depth_from_haze="off"), backend=fused.backend
    )
    yield fused, plain
    fused.close()


def hazy_room(width=128, height=96):
    frame = render_random_view(np.random.default_rng(5), width, height)
    beta = -math.log(0.4) / float(np.median(frame.depth_m))
    hazy, _ = synthesize_haze(frame.rgb.astype(np.float32) / 255, frame.depth_m, beta, AIRLIGHT)
    return (np.clip(hazy, 0, 1) * 255 + 0.5).astype(np.uint8), frame


def test_engine_fuses_the_depth_passs_depth_with_that_passs_transmission(engines):
    fused, plain = engines
    hazy, frame = hazy_room(96, 72)  # the depth pass's size: no resizing, pixel for pixel
    focal = float(frame.K[0, 0])
    with_haze = fused.process(hazy, focal_px=focal)
    without = plain.process(hazy, want_dehazed=False, focal_px=focal)
    assert without.haze_depth is None and "depth_from_haze" not in without.timings_ms
    details = with_haze.haze_depth
    assert details is not None and details.status == FUSED and details.beta_per_unit > 0
    assert with_haze.timings_ms["depth_from_haze"] >= 0
    # The engine's depth is the network's fused with the same pass's t, then given the REP-117
    # markers of the model's range (the network's own markers pass through the fusion).
    near, far = fused.depth_range
    expected = fuse_depth_with_haze(
        without.depth, with_haze.transmission, fused.depth_range
    ).depth_m
    expected[expected > far] = np.inf
    expected[expected < near] = -np.inf
    np.testing.assert_allclose(with_haze.depth, expected, rtol=1e-5)
    assert not np.allclose(with_haze.depth, without.depth)
    # The dehazed image does not depend on the setting.
    np.testing.assert_array_equal(with_haze.dehazed, plain.process(hazy, focal_px=focal).dehazed)


def test_engine_fuses_at_the_depth_pass_resolution_and_keeps_the_metres(engines):
    fused, plain = engines
    hazy, frame = hazy_room(160, 120)
    focal = float(frame.K[0, 0])
    with_haze = fused.process(hazy, want_dehazed=False, focal_px=focal)
    without = plain.process(hazy, want_dehazed=False, focal_px=focal)
    assert with_haze.haze_depth.haze_weight.shape == with_haze.transmission.shape == (72, 96)
    assert with_haze.depth.shape == without.depth.shape == (120, 160)
    # The fusion corrects the shape, not the scale: the network's metres stay.
    finite = np.isfinite(with_haze.depth) & np.isfinite(without.depth)
    assert np.median(with_haze.depth[finite]) / np.median(without.depth[finite]) == pytest.approx(
        1.0, rel=0.15
    )
    # On this hazy room it moves the shape towards the truth.
    truth = frame.depth_m
    assert median_scaled_abs_rel(with_haze.depth, truth) < median_scaled_abs_rel(
        without.depth, truth
    )


def test_engine_setting_is_checked_and_relative_depth_is_left_alone():
    with pytest.raises(ValueError, match="depth_from_haze"):
        EngineConfig(depth_from_haze="always").validate()
    dcp = DehazeEngine(EngineConfig(model="dcp", max_side=64, warmup=0, depth_from_haze="fuse"))
    hazy, _ = hazy_room(80, 60)
    result = dcp.process(hazy)
    assert result.depth_units == "relative" and result.haze_depth is None
    np.testing.assert_allclose(
        result.depth, -np.log(upsample_depth(result.transmission, 60, 80)), rtol=1e-5
    )


def test_a_model_without_transmission_keeps_its_depth(tmp_path):
    """The paper's residual head predicts J only: nothing to read the haze from."""
    config = dataclasses.replace(
        get_model_config("diacmpn-rt"), head="residual", canonical_focal_px=0.0
    )
    path = tmp_path / "residual.pt"
    save_checkpoint(
        path,
        model_config=config.to_dict(),
        dehazer_state=build_dehazer(config).state_dict(),
        depth_net_state=build_depth_net(config).state_dict(),
        depth_units="meters",
        depth_range_m=(0.1, 80.0),
    )
    engine = DehazeEngine(
        EngineConfig(
            checkpoint=str(path),
            device="cpu",
            precision="fp32",
            max_side=64,
            depth_max_side=64,
            warmup=0,
            depth_from_haze="fuse",
        )
    )
    plain = DehazeEngine(
        dataclasses.replace(engine.config, depth_from_haze="off"), backend=engine.backend
    )
    hazy, _ = hazy_room(80, 60)
    result = engine.process(hazy, want_dehazed=False)
    assert result.transmission is None and result.haze_depth is None
    np.testing.assert_array_equal(result.depth, plain.process(hazy, want_dehazed=False).depth)
    engine.close()
