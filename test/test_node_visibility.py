"""dehaze_node's visibility output over real DDS: header, diagnostics, the switch, demand.

The node runs the tiny random-weight checkpoint (physics head, metric depth): the value it
estimates is meaningless, what is tested is the plumbing. This process subscribes to the
dehazed image and to `visibility` only, so any depth the node computes is for visibility.
"""

from __future__ import annotations

import math
import time

import pytest

pytest.importorskip(
    "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
)
pytest.importorskip(
    "dehaze_ros.models", reason="dehaze_ros.models is needed for the test checkpoint"
)

from rclpy.qos import QoSProfile, QoSReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Range  # noqa: E402

from dehaze_ros.image_conversion import numpy_to_image  # noqa: E402
from node_harness import FX, WIDTH, DehazeNodeHarness, hazy_rgb  # noqa: E402
from ros_helpers import stamp_of, write_tiny_checkpoint  # noqa: E402

NAMESPACE = "/vis"
STATUSES = ("ok", "clear", "dense", "none")


@pytest.fixture(scope="module")
def node(ros_context, tmp_path_factory):
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    harness = DehazeNodeHarness(
        ros_context, NAMESPACE, ["-p", f"checkpoint:={checkpoint}"], subscribe=("dehazed/image",)
    )
    records: list = []
    harness.visibility_subscription = harness.probe.node.create_subscription(
        Range,
        f"{NAMESPACE}/visibility",
        lambda msg: records.append((time.time(), msg)),
        QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE),
    )
    harness.outputs["visibility"] = records
    harness.wait_until_ready()
    yield harness
    harness.close()


def counters(node) -> dict:
    values = node.diagnostics_after(lambda values: True)
    return {
        key: int(values[key])
        for key in ("frames processed", "frames processed with depth", "frames with visibility")
    }


def test_visibility_is_published_with_the_input_header_and_in_diagnostics(node):
    header = node.header(frame_id="fog_cam")
    outputs = node.send_until_processed(
        numpy_to_image(hazy_rgb(2), "rgb8", header), wanted=("dehazed/image", "visibility")
    )
    msg = outputs["visibility"]
    assert (
        stamp_of(msg) == (header.stamp.sec, header.stamp.nanosec)
        and msg.header.frame_id == "fog_cam"
    )
    assert msg.radiation_type == Range.INFRARED
    # The horizontal field of view of the camera_info sent with the frame.
    assert msg.field_of_view == pytest.approx(2 * math.atan(WIDTH / (2 * FX)), rel=1e-5)
    assert 0.0 <= msg.min_range <= msg.max_range

    values = node.diagnostics_after(lambda values: int(values["frames with visibility"]) >= 1)
    assert values["visibility status"] in STATUSES
    # Every frame of this test is the same image: the diagnostics describe this message.
    status = values["visibility status"]
    if status == "none":
        assert math.isnan(msg.range)  # REP-117 invalid, never +inf (that reads as clear)
    elif status == "clear":
        assert msg.range == math.inf
    elif status == "dense":
        assert msg.range == -math.inf
    else:
        assert 0.0 < msg.range < math.inf
    assert values["visibility valid"] == str(values["visibility status"] == "ok").lower()
    if values["visibility status"] == "ok":
        # /diagnostics writes the metres with one decimal: 29.7 for 29.737 is right.
        assert float(values["visibility (m)"]) == pytest.approx(msg.range, rel=1e-3, abs=0.05)
        assert float(values["visibility beta (1/m)"]) == pytest.approx(3.912 / msg.range, rel=1e-3)
    # No depth topic has a subscriber here: the depth network ran for the visibility.
    assert int(values["frames processed with depth"]) >= 1


def test_publish_visibility_false_stops_the_output_and_its_depth_work(node):
    assert node.set_parameter("publish_visibility", False).successful  # live
    try:
        before = counters(node)
        header = node.header()
        outputs = node.send_until_processed(numpy_to_image(hazy_rgb(3), "rgb8", header))
        node.probe.spin_for(0.5)
        assert "visibility" not in outputs and "visibility" not in node.outputs_for(
            stamp_of(outputs["dehazed/image"])
        )
        values = node.diagnostics_after(
            lambda v: int(v["frames processed"]) > before["frames processed"]
        )
        assert values["visibility"] == "off (publish_visibility is false)"
        assert int(values["frames processed with depth"]) == before["frames processed with depth"]
        assert int(values["frames with visibility"]) == before["frames with visibility"]
    finally:
        assert node.set_parameter("publish_visibility", True).successful
    outputs = node.send_until_processed(
        numpy_to_image(hazy_rgb(4), "rgb8", node.header()), wanted=("dehazed/image", "visibility")
    )
    assert "visibility" in outputs


def test_no_subscriber_means_no_visibility_work(node):
    node.probe.node.destroy_subscription(node.visibility_subscription)
    assert node.probe.spin_until(
        lambda: node.probe.node.count_subscribers(f"{NAMESPACE}/visibility") == 0, 10
    )
    node.probe.spin_for(1.0)  # the node's publisher learns the subscription is gone
    before = counters(node)
    node.send_until_processed(numpy_to_image(hazy_rgb(5), "rgb8", node.header()))
    values = node.diagnostics_after(
        lambda v: int(v["frames processed"]) > before["frames processed"]
    )
    assert int(values["frames with visibility"]) == before["frames with visibility"]
    assert int(values["frames processed with depth"]) == before["frames processed with depth"]
