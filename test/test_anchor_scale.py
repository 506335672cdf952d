"""Metric scale from sparse points (dehaze_ros.anchor_scale, sim.lidar, ros.pointcloud.cloud_xyz,
ros.anchor_input): on a rendered vehicle view, its exact depth and a synthetic LiDAR from it."""

import numpy as np
import pytest

from dehaze_ros import anchor_scale
from dehaze_ros.anchor_scale import (
    AnchorCloud,
    AnchorRules,
    anchor_estimate,
    apply_anchors,
    extrinsic_matrix,
    project,
    transform_points,
)
from dehaze_ros.engine import DehazeEngine, EngineConfig
from dehaze_ros.metric_scale import (
    ANCHORS,
    LEARNED,
    SUPPORT_ANCHORED,
    Pinhole,
    ScaleEstimate,
    ScaleRefusal,
    ScaleState,
)
from dehaze_ros.ros.anchor_input import AnchorInput
from dehaze_ros.ros.pointcloud import CloudError, cloud_xyz, make_pointcloud2
from dehaze_ros.sim.lidar import LidarModel, synthetic_lidar
from training.data.procedural import vehicle_sample


@pytest.fixture(scope="module")
def view():
    """A 640x480 rendered vehicle view: exact depth (+inf sky), its focal length."""
    sample = vehicle_sample(2, 640, 0)
    assert sample.depth_m.shape == (480, 640)
    return sample


def camera_of(sample) -> Pinhole:
    height, width = sample.depth_m.shape
    return Pinhole.centred(width, height, sample.focal_px)


def test_the_synthetic_lidar_returns_the_scene_within_its_noise_and_range(view):
    points = synthetic_lidar(
        view.depth_m,
        view.focal_px,
        model=LidarModel(max_range_m=30.0),
        rng=np.random.default_rng(0),
    )
    assert len(points) > 1000
    assert np.linalg.norm(points, axis=1).max() <= 30.0 + 1e-3
    projected = project(view.depth_m, camera_of(view), AnchorCloud.of(points), 0.1)
    # Every return lies on the surface it hit: its z against the exact depth there, +-3 cm along
    # the beam (a little more along z at the edges of the view, never more than 4 cm).
    assert np.abs(projected.z - projected.predicted).max() < 0.04


@pytest.mark.parametrize("factor", [0.3, 1.0, 2.7])
def test_a_depth_k_times_off_gets_the_true_metres_back(view, factor):
    points = synthetic_lidar(view.depth_m, view.focal_px, rng=np.random.default_rng(1))
    predicted = (view.depth_m / factor).astype(np.float32)
    estimate = anchor_estimate(
        predicted, camera_of(view), AnchorCloud.of(points), None, AnchorRules(refine=False)
    )
    assert isinstance(estimate, ScaleEstimate) and estimate.source == ANCHORS
    assert estimate.factor == pytest.approx(factor, rel=0.01)
    assert estimate.details["residual"] < 0.01


def test_outliers_among_the_anchors_do_not_move_the_factor(view):
    rng = np.random.default_rng(2)
    points = synthetic_lidar(view.depth_m, view.focal_px, rng=rng)
    wrong = rng.random(len(points)) < 0.3  # 30 % of the returns far off: rain, a mirror
    points[wrong] *= rng.uniform(0.2, 0.6, (int(wrong.sum()), 1)).astype(np.float32)
    estimate = anchor_estimate(
        view.depth_m.astype(np.float32), camera_of(view), AnchorCloud.of(points), None
    )
    assert estimate.factor == pytest.approx(1.0, rel=0.02)
    assert estimate.quality < 0.8  # the outliers are counted out, and it shows


def test_refinement_corrects_a_wrong_shape_near_the_anchors(view):
    """A prediction whose error grows with distance (the typical monocular error) is straightened
    near the points; away from them it keeps the global factor."""
    truth = view.depth_m.astype(np.float32)
    predicted = truth ** np.float32(0.8)  # near too long, far too short, relatively
    camera = camera_of(view)
    points = synthetic_lidar(truth, view.focal_px, rng=np.random.default_rng(3))
    estimate = anchor_estimate(predicted, camera, AnchorCloud.of(points), None)
    scaled_only, _ = apply_anchors(predicted, camera, estimate.factor, None)
    refined, weight = apply_anchors(predicted, camera, estimate.factor, estimate.details)
    scored = np.isfinite(truth) & (truth < 30) & np.isfinite(refined)

    def abs_rel(depth):
        return float(np.mean(np.abs(depth[scored] - truth[scored]) / truth[scored]))

    assert abs_rel(refined) < 0.5 * abs_rel(scaled_only)
    assert weight.max() <= 1.0 and weight.min() >= 0.0
    assert weight[scored].mean() > 0.5


@pytest.mark.parametrize(
    "case, points, expected",
    [
        ("empty", np.zeros((0, 3)), "no points"),
        ("nan", np.full((500, 3), np.nan), "no finite point"),
        (
            "behind",
            np.column_stack([np.zeros(500), np.zeros(500), -np.linspace(1, 20, 500)]),
            "every point behind the camera",
        ),
        (
            "few",
            np.column_stack([np.linspace(-2, 2, 5), np.full(5, 0.5), np.full(5, 10.0)]),
            "5 usable, 20 needed",
        ),
        (
            "outside",
            np.column_stack([np.full(500, 100.0), np.zeros(500), np.full(500, 1.0)]),
            "0 usable",
        ),
    ],
)
def test_a_useless_cloud_is_a_refusal_that_says_why(view, case, points, expected):
    result = anchor_estimate(
        view.depth_m.astype(np.float32), camera_of(view), AnchorCloud.of(points), None
    )
    assert isinstance(result, ScaleRefusal), case
    assert expected in result.reason


def test_a_stale_cloud_is_refused_either_way_in_time(view):
    points = synthetic_lidar(view.depth_m, view.focal_px)
    depth, camera = view.depth_m.astype(np.float32), camera_of(view)
    rules = AnchorRules(max_age_s=0.1)
    assert isinstance(
        anchor_estimate(depth, camera, AnchorCloud.of(points, 10.0), 10.05, rules), ScaleEstimate
    )
    for cloud_stamp, word in ((9.5, "older"), (10.5, "newer")):
        refusal = anchor_estimate(depth, camera, AnchorCloud.of(points, cloud_stamp), 10.0, rules)
        assert (
            isinstance(refusal, ScaleRefusal)
            and "stale" in refusal.reason
            and word in refusal.reason
        )


def test_extrinsic_takes_sensor_points_into_the_camera_frame():
    # A sensor frame x forward, y left, z up (REP-103 body) 0.2 m above the camera: its pose in
    # the optical frame (what tf2 gives for target camera, source sensor) is the rotation
    # x -> z, y -> -x, z -> -y, quaternion (0.5, -0.5, 0.5, 0.5), and the offset (0, -0.2, 0).
    matrix = extrinsic_matrix([0.0, -0.2, 0.0, 0.5, -0.5, 0.5, 0.5])
    ahead = transform_points(np.array([[10.0, 1.0, 0.0]], dtype=np.float32), matrix)
    np.testing.assert_allclose(ahead[0], [-1.0, -0.2, 10.0], atol=1e-5)
    with pytest.raises(ValueError, match="unit length"):
        extrinsic_matrix([0, 0, 0, 0, 0, 0, 3])
    with pytest.raises(ValueError, match="7 finite numbers"):
        extrinsic_matrix([0, 0, 0, 0, 0, 1])


def cloud_message(points, frame_id="camera", stamp_s=0.0):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    header = Header(
        frame_id=frame_id, stamp=Time(sec=int(stamp_s), nanosec=int(round(stamp_s % 1 * 1e9)))
    )
    return make_pointcloud2(header, np.asarray(points, dtype=np.float32))


def test_cloud_xyz_reads_clouds_and_refuses_hostile_layouts():
    points = np.random.default_rng(4).normal(size=(50, 3)).astype(np.float32)
    msg = cloud_message(points)
    np.testing.assert_array_equal(cloud_xyz(msg), points)
    msg.row_step = msg.point_step * msg.width * 2  # claims more rows than it carries
    with pytest.raises(CloudError, match="layout needs"):
        cloud_xyz(msg)
    msg = cloud_message(points)
    msg.fields[2].offset = 14  # z straddles the point's end
    with pytest.raises(CloudError, match="does not fit"):
        cloud_xyz(msg)
    msg = cloud_message(points)
    msg.fields = msg.fields[:2]
    with pytest.raises(CloudError, match="no z field"):
        cloud_xyz(msg)
    msg = cloud_message(points)
    msg.width = 10**7
    with pytest.raises(CloudError, match="more than"):
        cloud_xyz(msg)


def test_anchor_input_picks_the_nearest_cloud_and_needs_a_transform_for_other_frames(view):
    points = synthetic_lidar(view.depth_m, view.focal_px)
    anchors = AnchorInput()
    assert anchors.for_frame("camera", 1.0) is None  # no sensor: the source is off
    anchors.add(cloud_message(points, "camera", 0.9), 0.9)
    anchors.add(cloud_message(points[:10], "camera", 1.3), 1.3)
    chosen = anchors.for_frame("camera", 1.0)
    assert chosen.stamp_s == 0.9 and len(chosen.points) == len(points)
    anchors.add(cloud_message(points, "velodyne", 2.0), 2.0)
    refused = anchors.for_frame("camera", 2.0)
    assert "velodyne" in refused.problem and "anchor_extrinsic" in refused.problem
    moved = AnchorInput(extrinsic=extrinsic_matrix([0, 0, 1.0, 0, 0, 0, 1]))
    moved.add(cloud_message(points, "velodyne", 2.0), 2.0)
    np.testing.assert_allclose(
        moved.for_frame("camera", 2.0).points[:, 2], points[:, 2] + 1.0, atol=1e-5
    )
    broken = cloud_message(points)
    broken.row_step = 1
    anchors.add(broken, 3.0)
    assert anchors.counts["clouds unreadable"] == 1 and "unreadable" in anchors.last_problem


def test_engine_with_anchors_publishes_metres_and_anchored_support(view):
    """The whole path at the node's defaults: a far-off learned scale is replaced by the points'."""
    engine = DehazeEngine(EngineConfig(max_side=320, warmup=0))
    hazy = (np.clip(view.hazy, 0, 1) * 255 + 0.5).astype(np.uint8)
    points = synthetic_lidar(view.depth_m, view.focal_px, rng=np.random.default_rng(5))
    result = engine.process(
        hazy, want_dehazed=False, focal_px=view.focal_px, anchors=AnchorCloud.of(points)
    )
    assert result.scale.source == ANCHORS and not result.scale.held
    assert "points" in result.scale.describe()
    truth = view.depth_m
    scored = np.isfinite(truth) & (truth < 30) & np.isfinite(result.depth)
    ratio = np.median(result.depth[scored] / truth[scored])
    assert 0.9 < ratio < 1.1
    assert np.mean(result.depth_support[scored] == SUPPORT_ANCHORED) > 0.5
    # The next frame's cloud is unusable: the factor is held, and the refusal says why.
    held = engine.process(
        hazy, want_dehazed=False, focal_px=view.focal_px, anchors=AnchorCloud.of(-points)
    )
    assert held.scale.source == ANCHORS and held.scale.held
    assert "behind" in held.scale.refusals[ANCHORS]
    assert held.scale.factor == pytest.approx(result.scale.factor)


def test_the_correction_holds_at_the_points_whatever_factor_the_smoothing_applies(view):
    """The stream's smoothed factor differs from this frame's (up to the 1.25x outlier band):
    near the points the depth is still the points', away from them the smoothed factor rules."""
    truth = view.depth_m.astype(np.float32)
    camera = camera_of(view)
    predicted = truth ** np.float32(0.8)
    points = synthetic_lidar(truth, view.focal_px, rng=np.random.default_rng(6))
    estimate = anchor_estimate(predicted, camera, AnchorCloud.of(points), None)
    projected = project(truth, camera, AnchorCloud.of(points), 0.1)
    at_points = (projected.rows, projected.cols)
    for smoothed in (estimate.factor / 1.2, estimate.factor, estimate.factor * 1.2):
        refined, weight = apply_anchors(predicted, camera, smoothed, estimate.details)
        ratio = refined[at_points] / truth[at_points]
        assert abs(np.median(ratio) - 1.0) < 0.02, smoothed
    low, _ = apply_anchors(predicted, camera, estimate.factor / 1.2, estimate.details)
    high, _ = apply_anchors(predicted, camera, estimate.factor * 1.2, estimate.details)
    far = (weight < 0.01) & np.isfinite(low)
    assert far.mean() > 0.1
    np.testing.assert_allclose(high[far] / low[far], 1.44, rtol=0.01)


@pytest.mark.parametrize("refine", [False, True])
def test_scale_shift_with_or_without_refinement_fits_a_depth_off_by_an_inverse_shift(view, refine):
    """Truth whose inverse is affine in the prediction's: scale_shift recovers it at the points,
    and the refinement on top does not correct the shift a second time."""
    truth = view.depth_m.astype(np.float32)
    camera = camera_of(view)
    with np.errstate(divide="ignore"):
        predicted = (1.0 / (0.5 / truth + 0.02)).astype(np.float32)  # 1/z = 2/d - 0.04
    points = synthetic_lidar(truth, view.focal_px, model=LidarModel(noise_m=0.0, dropout=0.0))
    rules = AnchorRules(fit="scale_shift", refine=refine, trend=False)
    estimate = anchor_estimate(predicted, camera, AnchorCloud.of(points), None, rules)
    assert "inverse_shift" in estimate.details
    depth, _ = apply_anchors(predicted, camera, estimate.factor, estimate.details, rules)
    projected = project(truth, camera, AnchorCloud.of(points), 0.1)
    ratio = depth[projected.rows, projected.cols] / truth[projected.rows, projected.cols]
    assert np.percentile(np.abs(ratio - 1.0), 90) < 0.01


def test_without_stamps_a_cloud_goes_stale_by_its_arrival_and_refusals_have_fixed_kinds(view):
    """A LiDAR that stops publishing must not anchor unstamped frames for ever; the counts of
    /diagnostics stay a fixed set of keys whatever the frames are called."""
    now = [100.0]
    anchors = AnchorInput(max_age_s=0.15, clock=lambda: now[0])
    points = synthetic_lidar(view.depth_m, view.focal_px)
    assert anchors.add(cloud_message(points, "camera", 0.0), None) == ""
    assert anchors.for_frame("camera", None).problem == ""
    now[0] += 2.0
    stale = anchors.for_frame("camera", None)
    assert "stale" in stale.problem and stale.problem_kind == anchor_scale.STALE
    camera = Pinhole(view.focal_px, view.focal_px, 79.5, 59.5)
    for frame in ("lidar_a", "lidar_b", "lidar_c"):
        anchors.add(cloud_message(points, frame, 0.0), None)
        refused = anchors.for_frame("camera", None)
        assert "set anchor_extrinsic" in refused.problem
        # The engine's refusal keeps the kind the input gave it, whatever the words.
        refusal = anchor_estimate(view.depth_m, camera, refused, None)
        assert isinstance(refusal, ScaleRefusal) and refusal.reason == refused.problem
        state = ScaleState(
            LEARNED,
            1.0,
            refusals={ANCHORS: refusal.reason},
            refusal_kinds={ANCHORS: refusal.kind},
        )
        anchors.note_result(state)
    assert anchors.counts["frames refused: frame mismatch"] == 3
    assert not [key for key in anchors.counts if "lidar" in key]
    broken = cloud_message(points)
    broken.row_step = 1
    assert "unreadable" in anchors.add(broken, None)
    assert anchors.add(cloud_message(points), None) == ""  # a good cloud after it: no problem


def test_the_engine_refuses_anchors_without_a_focal_length(view):
    engine = DehazeEngine(EngineConfig(max_side=160, warmup=0))
    hazy = (np.clip(view.hazy, 0, 1) * 255 + 0.5).astype(np.uint8)
    points = synthetic_lidar(view.depth_m, view.focal_px)
    result = engine.process(hazy, want_dehazed=False, anchors=AnchorCloud.of(points))
    assert result.scale.source != ANCHORS
    assert "calibrated camera_info" in result.scale.refusals[ANCHORS]
    assert result.scale.refusal_kinds[ANCHORS] == anchor_scale.UNCALIBRATED
