"""process_bag on a bag full of fuzzed frames and broken CameraInfo: each bad frame is counted and
skipped, the good ones are processed, no cloud holds NaN, and the run ends with status 0.

The same fuzz as the node's chaos test (fuzz_frames.py), written into a real bag with rosbags.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip(
    "rclpy", reason="process_bag serialises with rclpy (pip install -r requirements-ros-pypi.txt)"
)
pytest.importorskip(
    "dehaze_ros.models", reason="dehaze_ros.models is needed for the test checkpoint"
)

from rosbags.rosbag2 import Writer  # noqa: E402

from dehaze_ros.image_conversion import image_to_numpy  # noqa: E402
from fuzz_frames import fuzzed_image_fields  # noqa: E402
from ros_helpers import write_tiny_checkpoint  # noqa: E402
from test_process_bag import (
    CAMERA_QOS,
    IMAGE,
    INFO,
    INPUT_TYPES,
    camera_info_msg,
    hazy_frame,  # noqa: E402
    header,
    image_msg,
    read_bag,
    run,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FUZZED = 60
GOOD_EVERY = 10  # a good frame after every tenth fuzzed one


def broken_camera_info(index: int, rng: random.Random):
    info = camera_info_msg(index)
    kind = rng.randrange(4)
    if kind == 0:
        info.k = np.full(9, np.nan)
        info.p = np.zeros(12)
    elif kind == 1:
        info.p = np.full(12, np.inf)
    elif kind == 2:
        info.width = info.height = 0
    return info  # kind 3: a good one now and then


def test_a_bag_of_fuzzed_frames_is_processed_with_them_counted_and_skipped(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    rng = random.Random(7)
    Image = INPUT_TYPES.types["sensor_msgs/msg/Image"]
    source, good = tmp_path / "fuzzed", 0
    with Writer(source, version=9) as writer:
        image_conn = writer.add_connection(
            IMAGE, "sensor_msgs/msg/Image", typestore=INPUT_TYPES, offered_qos_profiles=CAMERA_QOS
        )
        info_conn = writer.add_connection(
            INFO,
            "sensor_msgs/msg/CameraInfo",
            typestore=INPUT_TYPES,
            offered_qos_profiles=CAMERA_QOS,
        )
        for index in range(FUZZED + FUZZED // GOOD_EVERY):
            stamp = 1_700_000_000 * 10**9 + index * 50_000_000
            if index % (GOOD_EVERY + 1) == GOOD_EVERY:
                msg, good = image_msg(index, hazy_frame(index)[..., ::-1], "bgr8"), good + 1
            else:
                fields = fuzzed_image_fields(rng)
                msg = Image(
                    header=header(index),
                    height=fields["height"],
                    width=fields["width"],
                    encoding=fields["encoding"],
                    is_bigendian=fields["is_bigendian"],
                    step=fields["step"],
                    data=np.frombuffer(fields["data"], np.uint8),
                )
            writer.write(
                info_conn,
                stamp - 1000,
                INPUT_TYPES.serialize_cdr(
                    broken_camera_info(index, rng), "sensor_msgs/msg/CameraInfo"
                ),
            )
            writer.write(image_conn, stamp, INPUT_TYPES.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    assert (
        run(
            source,
            tmp_path / "out",
            "--image-topic",
            IMAGE,
            "--camera-info-topic",
            INFO,
            "--checkpoint",
            checkpoint,
            "--max-side",
            32,
        )
        == 0
    )
    connections, _, messages = read_bag(tmp_path / "out")
    processed = connections["/dehazed/image"].msgcount
    total = FUZZED + good
    # Every good frame went through; a fuzzed frame only when it happened to be a valid image.
    assert good <= processed < total
    assert connections[IMAGE].msgcount == total  # the input is copied whole
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image as RosImage, PointCloud2

    for topic, _, raw in messages:
        if topic == "/points":
            cloud = deserialize_message(raw, PointCloud2)
            xyz = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 4)[:, :3]
            assert not cloud.is_dense or np.isfinite(xyz).all(), "a dense cloud with NaN or inf"
        elif topic == "/depth/image":
            depth = image_to_numpy(deserialize_message(raw, RosImage))
            assert not np.isnan(depth).any()  # metres from the assumed field of view, not NaN
        elif topic in ("/dehazed/camera_info", "/depth/camera_info"):
            from sensor_msgs.msg import CameraInfo

            assert np.isfinite(np.asarray(deserialize_message(raw, CameraInfo).k)).all()
