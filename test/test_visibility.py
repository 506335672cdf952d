"""The visibility estimator on frames with exact depth and a known beta (no network in the loop).

Tolerances: with the exact transmission of the scattering model the estimate is the truth
(1%); with noise of 0.01 in t and 5% in depth, within 10%; with 10% of the pixels' t replaced
by garbage, within 5% (the median's robustness).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dehaze_ros import visibility
from dehaze_ros.engine import DehazeEngine, EngineConfig, EngineResult
from dehaze_ros.haze import synthesize_haze, transmission_from_depth
from dehaze_ros.sim.scenes import SceneRenderer, outdoor_validation_view
from dehaze_ros.visibility import KOSCHMIEDER, estimate_visibility

VISIBILITIES_M = (30.0, 100.0, 300.0, 1000.0, 3000.0, 5000.0)


@pytest.fixture(scope="module")
def outdoor_views():
    return [outdoor_validation_view(index, 160, 120) for index in range(3)]


def check_estimate(estimate, true_visibility: float, tolerance: float) -> None:
    """ok within ``tolerance``, or clear with a lower bound the truth exceeds."""
    if estimate.status == visibility.CLEAR:
        assert estimate.interval_m[0] <= true_visibility, estimate
        return
    assert estimate.status == visibility.OK, estimate
    assert estimate.valid and math.isfinite(estimate.visibility_m)
    assert estimate.visibility_m == pytest.approx(true_visibility, rel=tolerance), (
        estimate.describe()
    )
    assert estimate.beta_per_m == pytest.approx(KOSCHMIEDER / estimate.visibility_m)
    low, high = estimate.interval_m
    assert low <= estimate.visibility_m <= high


@pytest.mark.parametrize("true_visibility", VISIBILITIES_M)
def test_exact_transmission_and_depth_give_the_visibility_of_the_haze(
    outdoor_views, true_visibility
):
    valid = 0
    for frame in outdoor_views:
        _, transmission = synthesize_haze(
            frame.rgb, frame.depth_m, KOSCHMIEDER / true_visibility, 0.85
        )
        estimate = estimate_visibility(transmission, frame.depth_m)
        check_estimate(estimate, true_visibility, 0.01)
        valid += estimate.valid
    assert valid >= 2, "vehicle-scale scenes resolve 30 m - 5 km in most views"


@pytest.mark.parametrize("true_visibility", (30.0, 300.0, 3000.0))
def test_noisy_transmission_and_depth_stay_within_ten_percent(outdoor_views, true_visibility):
    rng = np.random.default_rng(1)
    for frame in outdoor_views:
        transmission = transmission_from_depth(frame.depth_m, KOSCHMIEDER / true_visibility)
        noisy_t = np.clip(transmission + rng.normal(0, 0.01, transmission.shape), 0, 1).astype(
            np.float32
        )
        noisy_depth = (frame.depth_m * np.exp(rng.normal(0, 0.05, frame.depth_m.shape))).astype(
            np.float32
        )
        estimate = estimate_visibility(noisy_t, noisy_depth)
        assert estimate.valid, estimate
        assert estimate.visibility_m == pytest.approx(true_visibility, rel=0.10)
        # The pixels' disagreement is the reported uncertainty.
        low, high = estimate.interval_m
        assert low < estimate.visibility_m < high and estimate.variance_m2 > 0


def test_a_tenth_of_the_pixels_wrong_does_not_move_the_median(outdoor_views):
    rng = np.random.default_rng(2)
    frame = outdoor_views[0]
    transmission = transmission_from_depth(frame.depth_m, KOSCHMIEDER / 300.0)
    wrong = rng.random(transmission.shape) < 0.1
    transmission[wrong] = rng.uniform(0.05, 1.0, int(wrong.sum()))
    estimate = estimate_visibility(transmission, frame.depth_m)
    assert estimate.visibility_m == pytest.approx(300.0, rel=0.05)


def test_indoor_scale_scene_resolves_fog_and_says_clear_beyond_its_depths():
    frame = SceneRenderer(160, 120, seed=1, indoor=True).render(0.0)
    for true_visibility in (10.0, 30.0, 100.0):
        transmission = transmission_from_depth(frame.depth_m, KOSCHMIEDER / true_visibility)
        check_estimate(estimate_visibility(transmission, frame.depth_m), true_visibility, 0.01)
    # Rooms a few metres deep cannot see 100 km of visibility: clear, with a bound below the truth.
    transmission = transmission_from_depth(frame.depth_m, KOSCHMIEDER / 100_000.0)
    estimate = estimate_visibility(transmission, frame.depth_m)
    assert estimate.status == visibility.CLEAR and estimate.visibility_m == math.inf
    assert 100.0 < estimate.interval_m[0] < 100_000.0
    assert estimate.max_range_m == estimate.interval_m[0] and not estimate.valid


def test_fog_denser_than_the_nearest_pixels_can_show_is_dense_not_clear(outdoor_views):
    frame = outdoor_views[0]
    transmission = transmission_from_depth(frame.depth_m, KOSCHMIEDER / 1.0)  # 1 m visibility
    estimate = estimate_visibility(transmission, frame.depth_m)
    assert estimate.status == visibility.DENSE and estimate.visibility_m == -math.inf
    assert estimate.interval_m[1] >= 1.0 and estimate.interval_m[1] == estimate.min_range_m


def test_a_wall_in_front_of_the_camera_gives_no_estimate():
    depth = np.full((120, 160), 4.0, np.float32) + np.random.default_rng(3).normal(
        0, 0.02, (120, 160)
    ).astype(np.float32)
    transmission = transmission_from_depth(depth, KOSCHMIEDER / 30.0)
    estimate = estimate_visibility(transmission, depth)
    assert estimate.status == visibility.NONE and not estimate.valid
    assert math.isnan(estimate.visibility_m) and math.isnan(estimate.beta_per_m)
    assert (
        "no depth spread" in estimate.reason and estimate.depth_spread < visibility.MIN_DEPTH_SPREAD
    )
    assert estimate.variance_m2 == 0.0


def test_sky_and_depth_outside_the_model_range_are_left_out(outdoor_views):
    frame = outdoor_views[0]
    transmission = transmission_from_depth(frame.depth_m, KOSCHMIEDER / 100.0)
    sky_only = np.full_like(frame.depth_m, np.inf)
    assert estimate_visibility(transmission, sky_only).status == visibility.NONE
    # A model that measures only 0.1-80 m: the estimate stands on the pixels it can measure.
    limited = estimate_visibility(transmission, frame.depth_m, depth_range_m=(0.1, 80.0))
    assert limited.visibility_m == pytest.approx(100.0, rel=0.01)
    assert limited.max_range_m <= KOSCHMIEDER * 80.0 / -math.log(visibility.T_HIGH) + 1e-6
    # Transmission at the clamp floor of the DCP / physics heads (t0 = 0.1) is not a measurement.
    floored = np.maximum(transmission, np.float32(0.1))
    assert estimate_visibility(floored, frame.depth_m).visibility_m == pytest.approx(
        100.0, rel=0.01
    )


def test_depth_and_transmission_at_different_resolutions(outdoor_views):
    frame = outdoor_views[1]
    transmission = transmission_from_depth(frame.depth_m, KOSCHMIEDER / 200.0)
    small_t = transmission[::2, ::2].copy()  # the networks ran at half size
    estimate = estimate_visibility(small_t, frame.depth_m)
    assert estimate.visibility_m == pytest.approx(200.0, rel=0.01)
    with pytest.raises(ValueError, match="H x W"):
        estimate_visibility(transmission[..., None], frame.depth_m)


def test_relative_depth_of_the_dcp_model_gives_no_visibility():
    frame = outdoor_validation_view(0, 160, 120)
    hazy, _ = synthesize_haze(frame.rgb, frame.depth_m, KOSCHMIEDER / 100.0, 0.85)
    rgb = (hazy * 255 + 0.5).astype(np.uint8)
    engine = DehazeEngine(EngineConfig(model="dcp", warmup=0))
    result = engine.process(rgb)
    assert result.depth_units == "relative" and result.transmission is not None
    estimate = visibility.estimate_from_result(result, rgb, max_side=0)
    assert estimate.status == visibility.NONE and "metric depth" in estimate.reason


def test_a_model_without_transmission_gets_the_dcp_of_what_its_networks_saw():
    frame = outdoor_validation_view(2, 160, 120)
    hazy, _ = synthesize_haze(frame.rgb, frame.depth_m, KOSCHMIEDER / 60.0, 0.85)
    rgb = (hazy * 255 + 0.5).astype(np.uint8)
    # A residual-head result: dehazed and metric depth, no transmission (what the engine returns).
    result = EngineResult(
        dehazed=rgb, depth=frame.depth_m.copy(), depth_units="meters", timings_ms={}
    )
    transmission, source = visibility.transmission_for(result, rgb, max_side=80)
    assert transmission.shape == (60, 80) and "dcp" in source
    estimate = visibility.estimate_from_result(result, rgb, max_side=80)
    assert estimate.transmission_source == source and estimate.status != visibility.NONE
    physics = EngineResult(
        dehazed=rgb,
        depth=frame.depth_m.copy(),
        depth_units="meters",
        timings_ms={},
        transmission=transmission_from_depth(frame.depth_m, KOSCHMIEDER / 60.0),
        airlight=np.full(3, 0.85, np.float32),
    )
    own = visibility.estimate_from_result(physics, rgb, max_side=80)
    assert own.transmission_source == "model" and own.visibility_m == pytest.approx(60.0, rel=0.01)


def test_range_message_carries_rep117_values_and_the_header():
    pytest.importorskip("sensor_msgs", reason="sensor_msgs is not installed")
    from sensor_msgs.msg import Range
    from std_msgs.msg import Header

    frame = outdoor_validation_view(0, 160, 120)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    fov = visibility.horizontal_fov_rad(frame.K[0, 0], 160)
    assert fov == pytest.approx(2 * math.atan(80 / frame.K[0, 0]))
    cases = {30.0: 30.0, 1e-3: -math.inf}
    for true_visibility, expected in cases.items():
        estimate = estimate_visibility(
            transmission_from_depth(frame.depth_m, KOSCHMIEDER / true_visibility), frame.depth_m
        )
        msg = visibility.range_message(estimate, header, fov)
        assert (
            isinstance(msg, Range) and msg.header.frame_id == "cam" and msg.header.stamp.sec == 12
        )
        assert msg.radiation_type == Range.INFRARED
        assert msg.field_of_view == pytest.approx(fov, rel=1e-6)
        assert msg.range == pytest.approx(expected, rel=1e-5)
        assert 0.0 < msg.min_range < msg.max_range
        if hasattr(msg, "variance"):
            assert msg.variance == pytest.approx(estimate.variance_m2, rel=1e-5)
    wall = np.full((120, 160), 4.0, np.float32)
    none = visibility.range_message(
        estimate_visibility(transmission_from_depth(wall, 0.1), wall), header, fov
    )
    assert math.isnan(none.range)  # REP-117 "invalid", never +inf ("clear")
