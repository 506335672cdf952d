"""dehaze_node with camera_height_m over real DDS: the ground plane gives the true metres.

Unlike the other node tests this one runs the shipped checkpoint: the ground is found in the
network's depth, and a random network's depth has no ground to find, so the test would prove
nothing about the scale. The frame is the renderer's wide vehicle view (1242 x 375, fx 721,
camera 1.24 m above the road) at half size: the shipped network alone puts its median at about
0.65x the truth there.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

pytest.importorskip(
    "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
)

from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from dehaze_ros.metric_scale import CONFIDENCE, SUPPORT_PLANE
from dehaze_ros.ros.image_conversion import image_to_numpy, numpy_to_image
from dehaze_ros.sim.scenes import vehicle_validation_view
from node_harness import DehazeNodeHarness
from ros_helpers import stamp_of

NAMESPACE = "/ground"


def half_size_view():
    """The renderer's first vehicle view at half size: (rgb, exact depth, K, the frame)."""
    _, frame = vehicle_validation_view(0)
    width, height = frame.rgb.shape[1] // 2, frame.rgb.shape[0] // 2
    K = frame.K.copy()
    K[:2] *= 0.5
    K[:2, 2] = (frame.K[:2, 2] + 0.5) * 0.5 - 0.5
    return (
        cv2.resize(frame.rgb, (width, height), interpolation=cv2.INTER_AREA),
        cv2.resize(frame.depth_m, (width, height), interpolation=cv2.INTER_NEAREST),
        K,
        frame,
    )


@pytest.fixture(scope="module")
def view():
    return half_size_view()


@pytest.fixture(scope="module")
def node(ros_context, view):
    _, _, _, frame = view
    harness = DehazeNodeHarness(
        ros_context,
        NAMESPACE,
        [
            "-p",
            f"camera_height_m:={frame.camera_height_m:.3f}",
            "-p",
            f"camera_pitch_deg:={frame.camera_pitch_deg:.2f}",
        ],
        subscribe=("depth/image",),
    )
    records: list = []
    harness.confidence_subscription = harness.probe.node.create_subscription(
        Image,
        f"{NAMESPACE}/depth/confidence",
        lambda msg: records.append((time.time(), msg)),
        QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE),
    )
    harness.outputs["depth/confidence"] = records
    harness.wait_until_ready()
    yield harness
    harness.close()


def camera_info(K: np.ndarray, width: int, height: int) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [float(v) for v in K.reshape(-1)]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [float(v) for v in np.hstack([K, np.zeros((3, 1))]).reshape(-1)]
    return info


def test_depth_over_dds_has_the_grounds_metres_and_says_so(node, view):
    rgb, truth, K, _ = view
    header = node.header(frame_id="front_camera_optical")
    outputs = node.send_until_processed(
        numpy_to_image(rgb, "rgb8", header),
        wanted=("depth/image", "depth/confidence"),
        camera_info=camera_info(K, rgb.shape[1], rgb.shape[0]),
        timeout=90,
    )
    depth = image_to_numpy(outputs["depth/image"])
    assert stamp_of(outputs["depth/image"]) == (header.stamp.sec, header.stamp.nanosec)
    scored = np.isfinite(truth) & (truth < 80.0) & np.isfinite(depth)
    ratio = np.median(depth[scored]) / np.median(truth[scored])
    assert 0.9 <= ratio <= 1.1, f"median depth {ratio:.2f}x the truth"

    confidence = image_to_numpy(outputs["depth/confidence"])
    assert outputs["depth/confidence"].encoding == "32FC1" and confidence.shape == depth.shape
    assert ((confidence >= 0) & (confidence <= 1)).all()
    assert (confidence[~np.isfinite(depth)] == 0).all()  # nothing to trust in +inf / NaN
    assert np.mean(confidence == CONFIDENCE[SUPPORT_PLANE]) > 0.2  # the road: the plane's depth

    values = node.diagnostics_after(lambda values: values["depth scale source"] != "n/a")
    assert values["depth scale source"] == "ground"
    assert values["metric scale from"].startswith("ground plane (factor "), values[
        "metric scale from"
    ]
    assert 1.2 < float(values["depth scale factor"]) < 2.0  # the network alone: about 0.65x
