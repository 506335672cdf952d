"""Metric scale from the ground plane: the fit on rendered frames, its refusals, the stream's smoothing."""

import dataclasses
import math

import numpy as np
import pytest

from dehaze_ros.metric_scale import (
    GROUND,
    LEARNED,
    SUPPORT_BOUNDED,
    SUPPORT_NONE,
    SUPPORT_PLANE,
    SUPPORT_SCALED,
    FactorSmoother,
    Mounting,
    Pinhole,
    ScaleEstimate,
    ScaleRefusal,
    Smoothing,
    StreamScale,
    apply_ground,
    confidence_map,
    fit_ground,
    ground_estimate,
)
from dehaze_ros.sim.scenes import (
    SceneRenderer,
    intrinsics,
    outdoor_validation_view,
    random_outdoor_scene,
    render,
    vehicle_validation_view,
)


def camera_of(frame) -> Pinhole:
    return Pinhole(frame.K[0, 0], frame.K[1, 1], frame.K[0, 2], frame.K[1, 2])


@pytest.fixture(scope="module")
def views():
    """Rendered frames with exact depth: vehicle cameras (one wide) and outdoor views of robots
    and cars, pitched between looking up 5 and down 10 degrees, 0.3 to 2.5 m up."""
    frames = [vehicle_validation_view(index)[1] for index in (0, 2)]
    frames += [outdoor_validation_view(index, 160, 120) for index in range(6)]
    return frames


def test_the_fit_recovers_camera_height_and_pitch_from_true_depth(views):
    for frame in views:
        known, _ = fit_ground(frame.depth_m, camera_of(frame), frame.camera_pitch_deg)
        unknown, _ = fit_ground(frame.depth_m, camera_of(frame))
        for plane in (known, unknown):
            assert plane is not None
            assert plane.distance == pytest.approx(frame.camera_height_m, rel=0.02)
            assert plane.pitch_deg == pytest.approx(frame.camera_pitch_deg, abs=0.5)
            assert abs(plane.roll_deg) < 0.5  # the renderer's cameras never roll
        assert known.prior_height == pytest.approx(frame.camera_height_m, rel=0.01)
        assert math.isnan(unknown.prior_height)


def test_the_metres_after_the_fit_do_not_depend_on_the_depths_scale(views):
    """Depth k times too long or short (a network's learned scale) gives the same metres."""
    frame = views[0]
    camera = camera_of(frame)
    mounting = Mounting(frame.camera_height_m, frame.camera_pitch_deg)
    results = []
    for k in (0.3, 1.0, 2.7):
        depth = frame.depth_m * np.float32(k)
        estimate = ground_estimate(depth, camera, mounting)
        assert isinstance(estimate, ScaleEstimate) and estimate.factor == pytest.approx(
            1 / k, rel=0.02
        )
        metres, support = apply_ground(
            depth,
            depth.shape[1],
            depth.shape[0],
            camera,
            estimate.factor,
            estimate.details["plane"],
            mounting,
        )
        results.append(metres)
        assert (support == SUPPORT_PLANE).mean() > 0.3
    finite = np.isfinite(frame.depth_m)
    for metres in results:
        np.testing.assert_allclose(metres[finite], results[1][finite], rtol=0.03)
    # The truth, however wrong the input scale: exact on most pixels; a kerb or the foot of a car
    # within the plane's band (8 % of the height) takes the ground's depth there.
    error = np.abs(results[0][finite] / frame.depth_m[finite] - 1)
    assert np.median(error) < 1e-3 and error.max() < 0.1


def test_a_frame_looking_at_a_wall_is_refused():
    scene = random_outdoor_scene(np.random.default_rng(5))
    position = np.array([0.0, scene.eye[0], 1.5])
    # A building face 1.5 m ahead, wider and taller than the view: no ground in sight.
    wall = dataclasses.replace(
        scene,
        box_lo=np.vstack([scene.box_lo, [1.5, scene.eye[0] - 20, 0.0]]),
        box_hi=np.vstack([scene.box_hi, [3.0, scene.eye[0] + 20, 30.0]]),
        box_color=np.vstack([scene.box_color, [[0.6, 0.5, 0.4]]]).astype(np.float32),
        box_material=np.append(scene.box_material, 1).astype(np.int32),
        box_accent=np.vstack([scene.box_accent, [[0.1, 0.1, 0.1]]]).astype(np.float32),
        box_pattern=np.vstack([scene.box_pattern, [[1.0, 1.0, 0.0, 0.0, 0.0]]]),
    )
    frame = render(wall, 96, 72, position, 0.0, 0.0, K=intrinsics(96, 72, 70.0))
    assert frame.depth_m.max() < 3.1
    for pitch in (0.0, math.nan):
        estimate = ground_estimate(frame.depth_m, camera_of(frame), Mounting(1.5, pitch))
        assert isinstance(estimate, ScaleRefusal) and estimate.source == GROUND
        assert "expected ground" in estimate.reason or "orientation" in estimate.reason, (
            estimate.reason
        )
    # Nothing but sky and far terrain (a camera looking up): too few pixels below the horizon.
    sky = np.full((72, 96), np.inf, np.float32)
    refusal = ground_estimate(sky, camera_of(frame), Mounting(1.5, 0.0))
    assert isinstance(refusal, ScaleRefusal) and "too few pixels with depth" in refusal.reason


def test_plane_depth_and_the_bound_below_the_horizon():
    frame = SceneRenderer(160, 120, seed=4, vehicle_scale=True).render(2.0)
    camera, mounting = camera_of(frame), Mounting(frame.camera_height_m, frame.camera_pitch_deg)
    plane, _ = fit_ground(frame.depth_m, camera, mounting.pitch_deg)
    # The network's depth with an object put beyond the ground (a hole the network dreamt up) and
    # an unknown pixel: the first is bounded by the ground, the second stays unknown.
    depth = frame.depth_m.copy()
    depth[-10:, :20] = 500.0
    depth[-1, -1] = np.nan
    metres, support = apply_ground(depth, 160, 120, camera, 1.0, plane, mounting)
    bottom = frame.depth_m[-5, 5]
    assert metres[-5, 5] == pytest.approx(bottom, rel=1e-3) and support[-5, 5] == SUPPORT_BOUNDED
    assert np.isnan(metres[-1, -1]) and support[-1, -1] == SUPPORT_NONE
    assert (
        support[:40] != SUPPORT_PLANE
    ).all() or frame.camera_pitch_deg > 5  # the sky half is no ground
    # Without a known pitch only the scale is applied: the plane's orientation is the network's guess.
    scaled, support = apply_ground(
        depth, 160, 120, camera, 2.0, plane, Mounting(frame.camera_height_m)
    )
    np.testing.assert_array_equal(scaled[np.isfinite(depth)], 2.0 * depth[np.isfinite(depth)])
    assert set(np.unique(support)) <= {SUPPORT_SCALED, SUPPORT_NONE}
    confidence = confidence_map(support)
    assert confidence.dtype == np.float32 and confidence[-1, -1] == 0.0 and confidence.max() <= 1.0


def test_smoothing_follows_stamps_rejects_an_outlier_and_resets_after_a_gap():
    smoother = FactorSmoother(Smoothing(time_constant_s=1.0, gap_reset_s=5.0, hold_s=3.0))

    def estimate(factor):
        return ScaleEstimate(GROUND, factor, 0.6)

    factor, age, note = smoother.update(estimate(2.0), 0.0)
    assert factor == pytest.approx(2.0) and note == ""  # the first frame sets it
    factor, _, _ = smoother.update(estimate(2.2), 0.1)
    assert 2.0 < factor < 2.05  # 0.1 s of a 1 s time constant
    before = factor
    factor, _, note = smoother.update(estimate(4.0), 0.2)  # a car filling the lower image
    assert factor == before and note.startswith("outlier")
    factor, age, note = smoother.update(None, 1.2)  # no ground: the last factor held
    assert factor == before and age == pytest.approx(1.1)
    factor, age, note = smoother.update(None, 4.0)  # held beyond hold_s: dropped
    assert factor is None and "beyond the hold" in note
    smoother.update(estimate(2.0), 4.1)
    factor, _, note = smoother.update(estimate(3.0), 10.0)  # a 5.9 s gap: start again there
    assert factor == pytest.approx(3.0) and "stamp gap" in note
    factor, _, note = smoother.update(estimate(3.0), 9.0)  # time ran backwards (a looped bag)
    assert factor == pytest.approx(3.0) and "stamp gap" in note
    # Five frames in a row that agree on a new factor are the scale, not outliers.
    for stamp in np.arange(9.1, 9.6, 0.1):
        factor, _, note = smoother.update(estimate(5.0), float(stamp))
    assert factor == pytest.approx(5.0) and note.startswith("restarted")


def test_stream_scale_holds_then_falls_back_to_the_learned_scale():
    stream = StreamScale(Smoothing(hold_frames=2))
    state = stream.update([ScaleEstimate(GROUND, 1.7, 0.64)], None)
    assert (state.source, state.factor, state.held) == (GROUND, pytest.approx(1.7), False)
    assert state.describe() == "ground plane (factor 1.70, inliers 64 %)"
    state = stream.update([ScaleRefusal(GROUND, "too little ground")], None)
    assert (
        state.held
        and state.factor == pytest.approx(1.7)
        and "this frame: too little ground" in state.describe()
    )
    stream.update([ScaleRefusal(GROUND, "too little ground")], None)
    state = stream.update([ScaleRefusal(GROUND, "too little ground")], None)
    assert (state.source, state.factor) == (LEARNED, 1.0) and state.fell_back
    assert state.describe().startswith("learned only (ground plane: ")
    assert stream.update([], None) == stream.update(
        [], None
    )  # no source configured: learned, quietly
    assert not stream.update([], None).fell_back
    stream.update([ScaleEstimate(GROUND, 1.7, 0.64)], None)
    stream.reset()
    assert stream.update([ScaleRefusal(GROUND, "wall")], None).source == LEARNED
    with pytest.raises(ValueError, match="unknown scale sources"):
        stream.update([ScaleEstimate("lidar", 1.0, 1.0)], None)


def test_mounting_values_are_checked():
    Mounting(1.65, math.nan).check()
    Mounting(0.0).check()
    for bad, problem in (
        (Mounting(-1.0), "camera_height_m"),
        (Mounting(math.inf), "camera_height_m"),
        (Mounting(1.0, 60.0), "camera_pitch_deg"),
    ):
        with pytest.raises(ValueError, match=problem):
            bad.check()
