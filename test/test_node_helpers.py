"""The node's pure parts without DDS: point cloud geometry, fixed-range colormap, parameter table."""

import dataclasses
import math

import numpy as np
import pytest

sensor_msgs = pytest.importorskip(
    "sensor_msgs.msg", reason="sensor_msgs (ROS message package) missing"
)

from dehaze_ros.colormap import depth_to_colormap  # noqa: E402
from dehaze_ros.engine import MODELS, PRECISIONS, EngineConfig  # noqa: E402
from dehaze_ros.node_config import (
    PARAMETERS,
    SPECS,
    ConfigError,
    ModelChoice,  # noqa: E402
    NodeConfig,
    integers_as_floats,
    resolve_model,
)
from dehaze_ros.pointcloud import (
    UNCALIBRATED,
    IntrinsicsError,  # noqa: E402
    camera_info_for_image,
    depth_to_points,
    intrinsics_from_camera_info,
    intrinsics_problem,
    make_pointcloud2,
    pointcloud2_to_arrays,
)


def camera_info(width, height, fx, fy, cx, cy, use_projection=True):
    info = sensor_msgs.CameraInfo(width=width, height=height)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    if use_projection:
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_known_depth_and_intrinsics_give_known_points():
    depth = np.full((4, 6), 2.0, dtype=np.float32)
    depth[1, 3] = 4.0
    xyz, _ = depth_to_points(depth, fx=100.0, fy=50.0, cx=2.0, cy=1.0)
    assert xyz.shape == (24, 3) and xyz.dtype == np.float32
    # Pixel (u=3, v=1) at 4 m: X = (3-2)*4/100, Y = (1-1)*4/50 = 0.
    np.testing.assert_allclose(xyz[1 * 6 + 3], [0.04, 0.0, 4.0], rtol=1e-6)
    # Pixel (u=0, v=3) at 2 m: X = (0-2)*2/100 = -0.04, Y = (3-1)*2/50 = 0.08 (y points down).
    np.testing.assert_allclose(xyz[3 * 6 + 0], [-0.04, 0.08, 2.0], rtol=1e-6)


def test_invalid_depth_is_skipped_and_decimation_counts():
    depth = np.full((10, 10), 3.0, dtype=np.float32)
    depth[0, 0], depth[0, 2], depth[2, 0], depth[4, 4] = np.nan, np.inf, -np.inf, 0.0
    xyz, rgb = depth_to_points(
        depth, 10, 10, 5, 5, decimation=2, colors_rgb=np.zeros((10, 10, 3), np.uint8)
    )
    # 5 x 5 sampled pixels, 4 of them invalid (NaN, +inf, -inf, zero) -> 21 points.
    assert len(xyz) == 21 and len(rgb) == 21
    assert np.isfinite(xyz).all() and (xyz[:, 2] > 0).all()


def test_pointcloud2_fields_layout_and_colour_round_trip():
    depth = np.array([[1.0, 2.0], [np.nan, 3.0]], dtype=np.float32)
    colours = np.array([[[255, 0, 0], [0, 255, 0]], [[1, 2, 3], [10, 20, 30]]], dtype=np.uint8)
    xyz, rgb = depth_to_points(depth, 1.0, 1.0, 0.0, 0.0, colors_rgb=colours)
    header = sensor_msgs.Image().header
    header.frame_id = "camera_optical_frame"
    msg = make_pointcloud2(header, xyz, rgb)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert all(f.datatype == sensor_msgs.PointField.FLOAT32 and f.count == 1 for f in msg.fields)
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 3, 16, 48)
    assert msg.is_dense and len(msg.data) == 48
    back_xyz, back_rgb = pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(back_xyz, xyz)
    np.testing.assert_array_equal(back_rgb, [[255, 0, 0], [0, 255, 0], [10, 20, 30]])


def test_intrinsics_prefer_projection_and_scale_to_the_image():
    info = camera_info(640, 480, 500.0, 500.0, 320.0, 240.0)
    info.k = [1.0] * 9  # raw K differs; P describes the rectified image the node sees
    assert intrinsics_from_camera_info(info, 640, 480) == (500.0, 500.0, 320.0, 240.0)
    # Half resolution: pixel (0, 0) covers old pixels 0 and 1, so cx = (320 + 0.5) / 2 - 0.5.
    assert intrinsics_from_camera_info(info, 320, 240) == (250.0, 250.0, 159.75, 119.75)
    only_k = camera_info(640, 480, 400.0, 410.0, 300.0, 200.0, use_projection=False)
    assert intrinsics_from_camera_info(only_k, 640, 480) == (400.0, 410.0, 300.0, 200.0)
    with pytest.raises(IntrinsicsError, match="uncalibrated"):
        intrinsics_from_camera_info(sensor_msgs.CameraInfo(width=640, height=480), 640, 480)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "fx, fy, cx, cy, use_projection",
    [
        (NAN, 500.0, 320.0, 240.0, False),  # NaN <= 0 is False: once passed the focal check
        (500.0, NAN, 320.0, 240.0, True),
        (INF, 500.0, 320.0, 240.0, True),
        (-500.0, 500.0, 320.0, 240.0, False),
        (500.0, 500.0, NAN, 240.0, True),
        (500.0, 500.0, 320.0, -INF, False),
    ],
)
def test_non_finite_zero_or_negative_intrinsics_are_uncalibrated_everywhere(
    fx, fy, cx, cy, use_projection
):
    info = camera_info(640, 480, fx, fy, cx, cy, use_projection=use_projection)
    problem = intrinsics_problem(info)
    assert problem is not None and problem.startswith(UNCALIBRATED)
    with pytest.raises(IntrinsicsError, match="uncalibrated"):
        intrinsics_from_camera_info(info, 320, 240)
    # The CameraInfo published beside the outputs says "uncalibrated" (zeros), never NaN.
    published = camera_info_for_image(info, 320, 240)
    assert list(published.k) == [0.0] * 9 and list(published.p) == [0.0] * 12
    assert (published.width, published.height) == (320, 240)
    assert intrinsics_problem(camera_info(640, 480, 500.0, 500.0, 320.0, 240.0)) is None


def test_points_that_overflow_are_dropped_and_is_dense_tells_the_truth():
    depth = np.full((3, 4), 3.0e38, dtype=np.float32)  # finite, but times (u - cx) / fx overflows
    depth[1, 1] = 2.0
    xyz, rgb = depth_to_points(
        depth, 1e-3, 1e-3, 1.0, 1.0, colors_rgb=np.zeros((3, 4, 3), np.uint8)
    )
    assert np.isfinite(xyz).all() and len(xyz) == len(rgb) >= 1
    assert make_pointcloud2(sensor_msgs.Image().header, xyz, rgb).is_dense
    broken = np.array([[0.0, 0.0, 1.0], [np.nan, 0.0, 1.0]], dtype=np.float32)
    assert not make_pointcloud2(sensor_msgs.Image().header, broken).is_dense


def test_camera_info_is_rescaled_to_the_image_it_accompanies():
    # Issue 10: a 1280x960 calibration (fx 1000, cx 639.5) beside 640x480 images.
    info = camera_info(1280, 960, 1000.0, 1002.0, 639.5, 479.5)
    info.p[3] = -1000.0 * 0.12  # Tx of a right stereo camera: -fx * baseline
    info.d = [0.1, -0.2, 0.001, 0.002, 0.0]
    info.distortion_model = "plumb_bob"
    info.header.frame_id = "calibrated"
    header = sensor_msgs.Image().header
    header.frame_id = "frame"
    out = camera_info_for_image(info, 640, 480, header)
    assert (out.width, out.height) == (640, 480)
    np.testing.assert_allclose(out.k, [500.0, 0, 319.5, 0, 501.0, 239.5, 0, 0, 1])
    np.testing.assert_allclose(out.p, [500.0, 0, 319.5, -60.0, 0, 501.0, 239.5, 0, 0, 0, 1, 0])
    assert list(out.d) == list(info.d) and out.distortion_model == "plumb_bob"
    assert (out.binning_x, out.binning_y) == (0, 0) and out.roi.width == out.roi.height == 0
    assert out.header.frame_id == "frame"
    # The cloud and the published CameraInfo agree; the input was not touched.
    assert intrinsics_from_camera_info(info, 640, 480) == (out.k[0], out.k[4], out.k[2], out.k[5])
    assert info.width == 1280 and info.k[0] == 1000.0 and info.header.frame_id == "calibrated"

    # The same image described by binning: the output no longer needs (or has) it.
    binned = camera_info(1280, 960, 1000.0, 1002.0, 639.5, 479.5)
    binned.binning_x = binned.binning_y = 2
    np.testing.assert_allclose(camera_info_for_image(binned, 640, 480).k, out.k)

    # A region of interest: the image is the 400x300 region at (200, 100), full resolution.
    cropped = camera_info(1280, 960, 1000.0, 1002.0, 639.5, 479.5)
    cropped.roi.x_offset, cropped.roi.y_offset, cropped.roi.width, cropped.roi.height = (
        200,
        100,
        400,
        300,
    )
    roi_out = camera_info_for_image(cropped, 400, 300)
    np.testing.assert_allclose(roi_out.k, [1000.0, 0, 439.5, 0, 1002.0, 379.5, 0, 0, 1])
    assert (roi_out.width, roi_out.height, roi_out.roi.width) == (400, 300, 0)
    # Same size as calibrated: unchanged numbers.
    np.testing.assert_allclose(camera_info_for_image(info, 1280, 960).k, info.k)


def test_integers_for_float_parameters_become_doubles():
    from rclpy.parameter import Parameter

    converted = integers_as_floats(
        [
            Parameter("colormap_max_m", Parameter.Type.INTEGER, 20),
            Parameter("point_decimation", Parameter.Type.INTEGER, 3),
            Parameter("colormap_min_m", Parameter.Type.STRING, "near"),
            Parameter("use_sim_time", Parameter.Type.BOOL, True),
        ]
    )
    assert [(p.type_, p.value) for p in converted] == [
        (Parameter.Type.DOUBLE, 20.0),
        (Parameter.Type.INTEGER, 3),
        (Parameter.Type.STRING, "near"),
        (Parameter.Type.BOOL, True),
    ]


def test_colormap_range_is_fixed_not_per_frame():
    near_frame = np.full((2, 2), 5.0, np.float32)
    mixed_frame = np.array([[5.0, 40.0], [1.0, 5.0]], np.float32)
    # 5 m has the same colour whatever else is in view: no per-frame min-max stretch.
    np.testing.assert_array_equal(
        depth_to_colormap(near_frame, 0.5, 50.0)[0, 0],
        depth_to_colormap(mixed_frame, 0.5, 50.0)[0, 0],
    )
    coloured = depth_to_colormap(mixed_frame, 0.5, 50.0)
    assert coloured.dtype == np.uint8 and coloured.shape == (2, 2, 3)
    # Near is red (BGR: R high), far is blue.
    assert coloured[1, 0, 2] > coloured[1, 0, 0]
    assert coloured[0, 1, 0] > coloured[0, 1, 2]


def test_colormap_rep117_values():
    depth = np.array([[np.nan, np.inf, -np.inf, 50.0, 0.5]], np.float32)
    coloured = depth_to_colormap(depth, 0.5, 50.0)
    assert coloured[0, 0].tolist() == [0, 0, 0]  # unknown: black
    assert coloured[0, 1].tolist() == coloured[0, 3].tolist()  # too far = farthest colour
    assert coloured[0, 2].tolist() == coloured[0, 4].tolist()  # too close = nearest colour
    with pytest.raises(ValueError, match="far > near"):
        depth_to_colormap(depth, 5.0, 5.0)


def test_node_config_is_the_parameter_table_and_fills_the_engine_config_by_name():
    config = NodeConfig()
    assert [field.name for field in dataclasses.fields(config)] == [
        spec.name for spec in PARAMETERS
    ]

    # NaN is a default too (camera_pitch_deg: unknown), and NaN != NaN.
    def same(value, default) -> bool:
        return value == default or (
            isinstance(default, float) and math.isnan(default) and math.isnan(value)
        )

    assert all(same(getattr(config, spec.name), spec.default) for spec in PARAMETERS)
    config.validate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_side = 0
    # Every engine setting is reachable as a node parameter of the same name, and an engine made
    # without a config runs as the node deploys it (one default per setting, max_side included).
    missing = [field.name for field in dataclasses.fields(EngineConfig) if field.name not in SPECS]
    assert not missing, f"EngineConfig fields without a row in node_config.PARAMETERS: {missing}"
    assert config.engine_config() == EngineConfig()
    engine = NodeConfig(max_side=64, precision="fp32", warmup=0).engine_config()
    assert (engine.max_side, engine.precision, engine.warmup) == (64, "fp32", 0)
    chosen = NodeConfig(model="checkpoint").engine_config(ModelChoice("dcp", ""))
    assert (chosen.model, chosen.checkpoint, chosen.max_side) == ("dcp", "", 320)
    # The choices offered are the engine's.
    assert SPECS["precision"].choices == PRECISIONS and SPECS["model"].choices == MODELS


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"model": "yolo"}, "model must be one of checkpoint, dcp"),
        ({"colormap_min_m": 10.0, "colormap_max_m": 5.0}, "must be smaller than colormap_max_m"),
        ({"point_decimation": 0}, "point_decimation must be >= 1"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"max_side": 16}, "max_side must be 0 (native) or at least 32"),
        ({"max_rate_hz": "fast"}, "max_rate_hz must be a number"),
        ({"input_transport": "theora"}, "input_transport must be one of raw, compressed"),
    ],
)
def test_node_config_validation_names_the_problem(changes, problem):
    with pytest.raises(ConfigError) as error:
        NodeConfig(**changes).validate()
    assert problem in str(error.value)


def test_invalid_config_lists_every_problem_at_once():
    with pytest.raises(ConfigError) as error:
        NodeConfig(model="x", point_decimation=0).validate()
    assert "model" in str(error.value) and "point_decimation" in str(error.value)


def test_resolve_model_explicit_path_default_and_dcp(tmp_path, monkeypatch):
    import dehaze_ros.node_config as node_config

    assert resolve_model(NodeConfig(model="dcp")).model == "dcp"
    explicit = resolve_model(NodeConfig(checkpoint=str(tmp_path / "mine.pt")))
    assert explicit == node_config.ModelChoice("checkpoint", str(tmp_path / "mine.pt"))
    # No shipped checkpoint anywhere: fall back to dcp and say where it looked.
    monkeypatch.setattr(
        node_config, "default_checkpoint_candidates", lambda: [tmp_path / "none.pt"]
    )
    fallback = resolve_model(NodeConfig())
    assert fallback.model == "dcp" and str(tmp_path / "none.pt") in fallback.warning
    shipped = tmp_path / "default.pt"
    shipped.write_bytes(b"x")
    monkeypatch.setattr(node_config, "default_checkpoint_candidates", lambda: [shipped])
    assert resolve_model(NodeConfig()) == node_config.ModelChoice("checkpoint", str(shipped))
    # An exported graph needs no checkpoint: no fallback to dcp even when none is shipped.
    monkeypatch.setattr(
        node_config, "default_checkpoint_candidates", lambda: [tmp_path / "none.pt"]
    )
    graph = resolve_model(NodeConfig(backend="onnxruntime", onnx_model=str(tmp_path / "g.onnx")))
    assert graph == node_config.ModelChoice("checkpoint", "")


def test_haze_strength_drifts_between_its_bounds():
    from dehaze_ros.sim.sample_camera import haze_strength

    values = [haze_strength(t, 0.02, 0.08, 30.0) for t in np.linspace(0, 60, 121)]
    assert math.isclose(min(values), 0.02) and math.isclose(max(values), 0.08)
    assert math.isclose(haze_strength(15.0, 0.02, 0.08, 30.0), 0.08)


def test_no_logging_call_picks_its_severity_at_run_time():
    """rclpy allows one severity per call site: a logger method chosen at run time (``getattr(
    logger, level)(text)``, ``logger.log(text, level)``) raised ValueError in the node's worker
    the second time the same line logged another severity, and the thread died (issue 30)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted((root / "dehaze_ros").rglob("*.py")) + sorted(
        (root / "training").rglob("*.py")
    ):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            text = ast.unparse(func)
            dynamic_getattr = (
                isinstance(func, ast.Name)
                and func.id == "getattr"
                and node.args
                and "logger" in ast.unparse(node.args[0]).lower()
            )
            log_with_level = (
                isinstance(func, ast.Attribute)
                and func.attr == "log"
                and "logger" in ast.unparse(func.value).lower()
            )
            if dynamic_getattr or log_with_level:
                offenders.append(f"{path.relative_to(root)}:{node.lineno}: {text}")
    assert not offenders, "severity chosen at run time:\n" + "\n".join(offenders)
