"""dehaze_node with a LiDAR on `anchor_points` over real DDS: the points give its depth the truth's
metres; a stale, unreadable or foreign-frame cloud is counted and said, and frames keep coming.

The shipped checkpoint runs (a random network's depth has no shape for the points to fix). The
frame is the renderer's wide vehicle view at half size, where the network alone puts its median
at about 0.65x the truth; the LiDAR is the synthetic one of the evaluation, returns up to 30 m.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
)

from sensor_msgs.msg import PointCloud2

from dehaze_ros.ros.image_conversion import image_to_numpy, numpy_to_image
from dehaze_ros.ros.pointcloud import make_pointcloud2
from dehaze_ros.sim.lidar import synthetic_lidar
from node_harness import DehazeNodeHarness
from test_node_depth_scale import camera_info, half_size_view

NAMESPACE = "/anchored"
CAMERA_FRAME = "front_camera_optical"
# The LiDAR 0.3 m above the camera (its frame's pose in the optical frame: y is down), axes as
# the camera's, so the test can move the points into that frame by hand.
EXTRINSIC = "0 -0.3 0 0 0 0 1"


@pytest.fixture(scope="module")
def view():
    rgb, truth, K, _ = half_size_view()
    points = synthetic_lidar(
        truth, K[0, 0], K[1, 1], K[0, 2], K[1, 2], rng=np.random.default_rng(0)
    )
    return rgb, truth, K, points


@pytest.fixture(scope="module")
def node(ros_context):
    harness = DehazeNodeHarness(
        ros_context, NAMESPACE, ["-p", f"anchor_extrinsic:={EXTRINSIC}"], subscribe=("depth/image",)
    )
    harness.cloud_pub = harness.probe.publisher(PointCloud2, f"{NAMESPACE}/anchor_points")
    harness.wait_until_ready()
    yield harness
    harness.close()


def send_cloud(node, cloud) -> None:
    """Best effort: publish a few times, so the node holds it before the frame comes."""
    for _ in range(3):
        node.cloud_pub.publish(cloud)
        node.probe.spin_for(0.1)


def test_a_lidar_on_anchor_points_gives_the_depth_its_metres(node, view):
    rgb, truth, K, points = view
    header = node.header(frame_id=CAMERA_FRAME)
    # The cloud in the LiDAR's own frame: 0.3 m above the camera, so its points sit 0.3 m lower.
    lidar_header = node.header(frame_id="lidar")
    lidar_header.stamp = header.stamp
    lidar_points = points + np.float32([0.0, 0.3, 0.0])
    send_cloud(node, make_pointcloud2(lidar_header, lidar_points))
    outputs = node.send_until_processed(
        numpy_to_image(rgb, "rgb8", header),
        wanted=("depth/image",),
        camera_info=camera_info(K, rgb.shape[1], rgb.shape[0]),
        timeout=90,
    )
    depth = image_to_numpy(outputs["depth/image"])
    scored = np.isfinite(truth) & (truth < 80.0) & np.isfinite(depth)
    ratio = np.median(depth[scored]) / np.median(truth[scored])
    assert 0.9 <= ratio <= 1.1, f"median depth {ratio:.2f}x the truth"
    values = node.diagnostics_after(lambda values: values["depth scale source"] != "n/a")
    assert values["depth scale source"] == "anchors", values
    assert values["metric scale from"].startswith("anchors (factor "), values["metric scale from"]
    assert int(values["anchor frames anchored"]) >= 1


def test_a_stale_or_unreadable_cloud_is_counted_and_frames_keep_coming(node, view):
    rgb, _, K, points = view
    # No new cloud: the one of the last frame is a second older than this one.
    header = node.header(frame_id=CAMERA_FRAME)
    node.send_until_processed(
        numpy_to_image(rgb, "rgb8", header),
        wanted=("depth/image",),
        camera_info=camera_info(K, rgb.shape[1], rgb.shape[0]),
        timeout=60,
    )
    values = node.diagnostics_after(
        lambda values: int(values.get("anchor frames refused: stale", "0")) >= 1
    )
    assert "stale" in values["anchor last problem"], values["anchor last problem"]
    assert values["depth scale source"] == "anchors (held)"  # the last good factor, for a while

    broken = make_pointcloud2(node.header(frame_id=CAMERA_FRAME), points)
    broken.row_step = 7  # smaller than one point: hostile
    send_cloud(node, broken)
    values = node.diagnostics_after(lambda values: int(values["anchor clouds unreadable"]) >= 1)
    assert "row_step" in values["anchor last problem"]
    header = node.header(frame_id=CAMERA_FRAME)
    outputs = node.send_until_processed(
        numpy_to_image(rgb, "rgb8", header),
        wanted=("depth/image",),
        camera_info=camera_info(K, rgb.shape[1], rgb.shape[0]),
        timeout=60,
    )
    assert "depth/image" in outputs
    assert node.process.alive
