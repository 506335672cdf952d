"""rosbag2 source on bags this test writes with ``rosbags`` (sqlite3 and MCAP)."""

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from training.config import SourceConfig
from training.data import DataError
from training.data import rosbag2
from training.data.rosbag2 import MAX_PENDING, Rosbag2Source, StampPairer

COLOR, DEPTH = "/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw"
HEIGHT, WIDTH = 24, 32
TYPES = get_typestore(Stores.ROS2_HUMBLE)


def header(stamp_ns, frame="camera"):
    Header, Time = TYPES.types["std_msgs/msg/Header"], TYPES.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame)


def image_msg(stamp_ns, array, encoding):
    Image = TYPES.types["sensor_msgs/msg/Image"]
    array = np.ascontiguousarray(array)
    step = array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    return Image(
        header=header(stamp_ns),
        height=array.shape[0],
        width=array.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=np.frombuffer(array.tobytes(), np.uint8),
    )


def compressed_msg(stamp_ns, rgb):
    CompressedImage = TYPES.types["sensor_msgs/msg/CompressedImage"]
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    return CompressedImage(
        header=header(stamp_ns),
        format="rgb8; png compressed bgr8",
        data=np.frombuffer(png.tobytes(), np.uint8),
    )


def color_frame(index):
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = (10 * index) % 250, 100, 200
    return rgb


def write_bag(
    path,
    frames=6,
    storage=StoragePlugin.SQLITE3,
    compressed=False,
    depth_encoding="16UC1",
    skew_ns=3_000_000,
    depth_frames=None,
):
    """Colour at 10 Hz with depth ``skew_ns`` later; depth only for the first ``depth_frames``."""
    color_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9, storage_plugin=storage) as writer:
        color_conn = writer.add_connection(COLOR, color_type, typestore=TYPES)
        depth_conn = writer.add_connection(DEPTH, "sensor_msgs/msg/Image", typestore=TYPES)
        for index in range(frames):
            stamp = 1_700_000_000_000_000_000 + index * 100_000_000  # 10 Hz
            depth_m = np.full((HEIGHT, WIDTH), 1.0 + index, np.float32)
            if depth_encoding == "16UC1":
                depth_msg = image_msg(stamp + skew_ns, (depth_m * 1000).astype(np.uint16), "16UC1")
            else:
                depth_msg = image_msg(stamp + skew_ns, depth_m, "32FC1")
            color_msg = (
                compressed_msg(stamp, color_frame(index))
                if compressed
                else image_msg(stamp, color_frame(index)[..., ::-1], "bgr8")
            )
            writer.write(color_conn, stamp, TYPES.serialize_cdr(color_msg, color_type))
            if depth_frames is None or index < depth_frames:
                writer.write(
                    depth_conn,
                    stamp + skew_ns,
                    TYPES.serialize_cdr(depth_msg, "sensor_msgs/msg/Image"),
                )


def source_config(**extra):
    return SourceConfig(kind="rosbag2", color_topic=COLOR, depth_topic=DEPTH, **extra)


@pytest.mark.parametrize(
    "storage, compressed, depth_encoding",
    [
        (StoragePlugin.SQLITE3, False, "16UC1"),
        (StoragePlugin.MCAP, True, "32FC1"),
    ],
)
def test_pairs_are_matched_by_stamp_and_decoded_to_rgb_and_metres(
    tmp_path, storage, compressed, depth_encoding
):
    write_bag(
        tmp_path / "bag", storage=storage, compressed=compressed, depth_encoding=depth_encoding
    )
    source = Rosbag2Source("bag", source_config(), "train", tmp_path / "bag")
    assert len(source) == 6 and source.scenes() == ["bag"]
    for index in range(6):
        color, depth = source.frames[index].decode()
        np.testing.assert_array_equal(color, color_frame(index))  # RGB order, exact (lossless)
        np.testing.assert_allclose(depth, 1.0 + index, rtol=1e-6)  # mm -> m
    sample = source.train_sample(np.random.default_rng(0), 16)
    assert (
        sample.hazy.shape == (16, 16, 3) and sample.has_depth and np.isfinite(sample.depth_m).all()
    )


def test_stride_max_frames_and_pairing_tolerance(tmp_path):
    write_bag(tmp_path / "bag", frames=9)
    assert len(Rosbag2Source("b", source_config(stride=3), "train", tmp_path / "bag")) == 3
    assert len(Rosbag2Source("b", source_config(max_frames=4), "train", tmp_path / "bag")) == 4
    write_bag(tmp_path / "skewed", skew_ns=50_000_000)  # depth 50 ms after colour
    with pytest.raises(DataError, match="no colour/depth pairs within 0.02 s"):
        Rosbag2Source("b", source_config(), "train", tmp_path / "skewed")
    assert (
        len(Rosbag2Source("b", source_config(max_time_diff_s=0.06), "train", tmp_path / "skewed"))
        == 6
    )


def test_a_depth_topic_that_stops_leaves_bounded_queues_and_only_kept_pairs_are_decoded(
    tmp_path, monkeypatch
):
    write_bag(tmp_path / "bag", frames=60, depth_frames=5)  # depth stops after 0.5 s of 6 s
    longest, decoded = [0], []

    class MeasuredPairer(StampPairer):
        def add(self, role, stamp, item):
            result = super().add(role, stamp, item)
            longest[0] = max(longest[0], *(len(queue) for queue in self.pending.values()))
            return result

    def counted(decode):
        def wrapper(msg, *args):
            decoded.append(int(msg.header.stamp.nanosec))
            return decode(msg, *args)

        return wrapper

    monkeypatch.setattr(rosbag2, "StampPairer", MeasuredPairer)
    monkeypatch.setattr(rosbag2, "decode_color", counted(rosbag2.decode_color))
    monkeypatch.setattr(rosbag2, "decode_depth_m", counted(rosbag2.decode_depth_m))

    source = Rosbag2Source("b", source_config(), "train", tmp_path / "bag")
    assert len(source) == 5
    for index, frame in enumerate(source.frames):
        color, depth = frame.decode()
        np.testing.assert_array_equal(color, color_frame(index))
        np.testing.assert_allclose(depth, 1.0 + index, rtol=1e-6)  # each colour with its own depth
    assert len(decoded) == 2 * 5  # the 55 colour frames without depth were never decoded
    assert longest[0] <= 11  # 1 s of 10 Hz colour waits, not all 55

    decoded.clear()
    assert len(Rosbag2Source("b", source_config(stride=2), "train", tmp_path / "bag")) == 3
    assert len(decoded) == 2 * 3  # pairs skipped by the stride are not decoded either


def test_stamp_pairer_drops_what_can_no_longer_pair_and_caps_its_queues():
    pairer = StampPairer(tolerance_ns=20)
    assert pairer.add("color", 1000, "c0") is None and pairer.add("color", 1100, "c1") is None
    # depth at 1105 pairs with c1; c0 (older than the partner) cannot pair any more
    assert pairer.add("depth", 1105, "d1") == ((1100, "c1"), (1105, "d1"))
    assert not pairer.pending["color"]
    pairer.add("color", 1200, "c2")
    pairer.add("depth", 1300, "d3")  # no colour within 20: c2 can never pair now
    assert not pairer.pending["color"] and len(pairer.pending["depth"]) == 1
    # one topic only, 30 Hz for 100 s: about one second of it waits
    for index in range(3000):
        pairer.add("color", 10**9 + index * 33_333_333, index)
    assert len(pairer.pending["color"]) <= 31
    # stamps that do not advance (a driver that never sets them): the length cap holds
    for index in range(1000):
        pairer.add("depth", 5, index)
    assert len(pairer.pending["depth"]) == MAX_PENDING


def test_each_bag_of_a_folder_is_a_scene_for_the_split(tmp_path):
    for name in ("morning", "evening", "night"):
        write_bag(tmp_path / "bags" / name, frames=2)
    config = source_config(val_scenes=["night"])
    train = Rosbag2Source("b", config, "train", tmp_path / "bags")
    val = Rosbag2Source("b", config, "val", tmp_path / "bags")
    assert train.scenes() == ["evening", "morning"] and len(train) == 4
    assert val.scenes() == ["night"] and val.eval_sample(0, 16).hazy.shape == (12, 16, 3)


def test_wrong_topic_lists_the_image_topics_and_missing_bag_is_named(tmp_path):
    write_bag(tmp_path / "bag", frames=1)
    config = SourceConfig(kind="rosbag2", color_topic="/camera/rgb", depth_topic=DEPTH)
    with pytest.raises(DataError, match=rf"no image topic '/camera/rgb'.*{COLOR}"):
        Rosbag2Source("b", config, "train", tmp_path / "bag")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a rosbag2 folder"):
        Rosbag2Source("b", source_config(), "train", tmp_path / "empty")
