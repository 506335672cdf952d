"""process_bag on bags this test writes with rosbags (sqlite3 and MCAP, raw and compressed).

The input bags are written here with rosbags' Humble type store, independently of the code
under test; the output is read back with rosbags and compared with the engine run directly on
the same frames. Runs in this process (one torch thread), except the Ctrl-C tests, which send
SIGINT / SIGTERM to a real process_bag process mid-run.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip(
    "rclpy", reason="process_bag serialises with rclpy (pip install -r requirements-ros-pypi.txt)"
)
pytest.importorskip(
    "dehaze_ros.models", reason="dehaze_ros.models is needed for the test checkpoint"
)

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from dehaze_ros.engine import DehazeEngine, EngineConfig
from dehaze_ros.ros import frame_outputs
from dehaze_ros.ros.image_conversion import (
    compressed_to_numpy,
    image_to_numpy,
    numpy_to_image,
    to_rgb8,
)
from dehaze_ros.ros.node_config import SPECS, NodeConfig
from dehaze_ros.tools import process_bag
from ros_helpers import REPO_ROOT, child_env, write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INPUT_TYPES = get_typestore(Stores.ROS2_HUMBLE)
IMAGE, INFO, NOTES = "/cam/image_raw", "/cam/camera_info", "/cam/notes"
WIDTH, HEIGHT = 64, 48
FX, FY, CX, CY = 100.0, 98.0, 63.5, 47.5  # calibrated at twice the recorded size (binned stream)
FRAMES = 3
START_NS = 1_700_000_000 * 10**9
CAMERA_QOS = [
    Qos(
        QosHistory.KEEP_LAST,
        1,
        QosReliability.BEST_EFFORT,
        QosDurability.VOLATILE,
        QosTime(0, 0),
        QosTime(0, 0),
        QosLiveliness.AUTOMATIC,
        QosTime(0, 0),
        False,
    )
]
ALL_OUTPUTS = (
    "/dehazed/image",
    "/dehazed/camera_info",
    "/depth/image",
    "/depth/camera_info",
    "/depth/colormap",
    "/points",
    "/visibility",
)


def header(index: int):
    Header, Time = (
        INPUT_TYPES.types["std_msgs/msg/Header"],
        INPUT_TYPES.types["builtin_interfaces/msg/Time"],
    )
    stamp = START_NS + index * 100_000_000 + 7
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=f"cam{index}")


def hazy_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.dstack([x * 2.0 + 10 * index, y * 3.0, (x + y) * 1.2 + 40])
    return np.clip(rgb * 0.5 + 100, 0, 255).astype(np.uint8)


def image_msg(index: int, pixels: np.ndarray, encoding: str):
    Image = INPUT_TYPES.types["sensor_msgs/msg/Image"]
    pixels = np.ascontiguousarray(pixels)
    return Image(
        header=header(index),
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=pixels.strides[0],
        data=np.frombuffer(pixels.tobytes(), np.uint8),
    )


def compressed_msg(index: int, rgb: np.ndarray):
    CompressedImage = INPUT_TYPES.types["sensor_msgs/msg/CompressedImage"]
    ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return CompressedImage(
        header=header(index),
        format="rgb8; jpeg compressed bgr8",
        data=np.frombuffer(jpeg.tobytes(), np.uint8),
    )


def camera_info_msg(index: int, calibrated: bool = True):
    CameraInfo = INPUT_TYPES.types["sensor_msgs/msg/CameraInfo"]
    RegionOfInterest = INPUT_TYPES.types["sensor_msgs/msg/RegionOfInterest"]
    fx, fy = (
        (FX, FY) if calibrated else (0.0, 0.0)
    )  # uncalibrated: K and P of zeros, as drivers send
    return CameraInfo(
        header=header(index),
        height=2 * HEIGHT,
        width=2 * WIDTH,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([fx, 0, CX, 0, fy, CY, 0, 0, 1], float),
        r=np.eye(3).reshape(-1),
        p=np.array([fx, 0, CX, 0, 0, fy, CY, 0, 0, 0, 1, 0], float),
        binning_x=0,
        binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def write_input_bag(
    path: Path,
    storage=StoragePlugin.SQLITE3,
    compressed=False,
    frames=FRAMES,
    encoding="bgr8",
    image_topic=IMAGE,
    size=(WIDTH, HEIGHT),
    extra_topics=(),
    corrupt=(),
    calibrated=True,
) -> Path:
    """Image (+ CameraInfo after it, as drivers often record it) and a notes topic per frame;
    the compressed frames of index ``corrupt`` are not JPEG at all."""
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    String = INPUT_TYPES.types["std_msgs/msg/String"]
    with Writer(path, version=9, storage_plugin=storage) as writer:
        image_conn = writer.add_connection(
            image_topic, image_type, typestore=INPUT_TYPES, offered_qos_profiles=CAMERA_QOS
        )
        info_conn = writer.add_connection(
            INFO,
            "sensor_msgs/msg/CameraInfo",
            typestore=INPUT_TYPES,
            offered_qos_profiles=CAMERA_QOS,
        )
        notes_conn = writer.add_connection(NOTES, "std_msgs/msg/String", typestore=INPUT_TYPES)
        extra = [
            writer.add_connection(topic, "std_msgs/msg/String", typestore=INPUT_TYPES)
            for topic in extra_topics
        ]
        for index in range(frames):
            stamp = START_NS + index * 100_000_000
            rgb = hazy_frame(index, *size)
            if compressed:
                msg = compressed_msg(index, rgb)
                if index in corrupt:
                    msg.data = np.frombuffer(b"not a jpeg" * 10, np.uint8)
            elif encoding == "bgr8":
                msg = image_msg(index, rgb[..., ::-1], "bgr8")
            else:  # a depth image given as the camera: not something to dehaze
                msg = image_msg(index, rgb[..., 0].astype(np.float32), encoding)
            writer.write(image_conn, stamp, INPUT_TYPES.serialize_cdr(msg, image_type))
            writer.write(
                info_conn,
                stamp + 1000,
                INPUT_TYPES.serialize_cdr(
                    camera_info_msg(index, calibrated), "sensor_msgs/msg/CameraInfo"
                ),
            )
            writer.write(
                notes_conn,
                stamp + 2000,
                INPUT_TYPES.serialize_cdr(String(data=f"note {index}"), "std_msgs/msg/String"),
            )
            for conn in extra:
                writer.write(
                    conn, stamp, INPUT_TYPES.serialize_cdr(String(data="x"), "std_msgs/msg/String")
                )
    return path


def read_bag(path: Path) -> tuple[dict, dict, list]:
    """(connections by topic, storage identifier, [(topic, bag time, raw)] in bag order)."""
    with Reader(path) as reader:
        connections = {conn.topic: conn for conn in reader.connections}
        messages = [
            (conn.topic, timestamp, bytes(raw)) for conn, timestamp, raw in reader.messages()
        ]
    import yaml

    storage = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"][
        "storage_identifier"
    ]
    return connections, storage, messages


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def run(*argv) -> int:
    return process_bag.main([str(arg) for arg in argv] + ["--no-progress", "--num-threads", "1"])


@pytest.mark.parametrize(
    "storage, compressed",
    [(StoragePlugin.SQLITE3, False), (StoragePlugin.MCAP, True)],
    ids=["sqlite3-raw", "mcap-compressed"],
)
def test_outputs_of_every_frame_with_input_headers_types_and_the_engines_pixels(
    tmp_path, checkpoint, storage, compressed, capsys
):
    image_topic = f"{IMAGE}/compressed" if compressed else IMAGE
    source = write_input_bag(tmp_path / "in", storage, compressed, image_topic=image_topic)
    assert (
        run(
            source,
            tmp_path / "out",
            "--image-topic",
            image_topic,
            "--camera-info-topic",
            INFO,
            "--checkpoint",
            checkpoint,
            "--max-side",
            32,
            "--upsampling",
            "bilinear",
            "--outputs",
            "dehazed,depth,colormap,points,visibility",
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert f"{FRAMES} frames processed, 0 skipped" in summary and "/visibility 3" in summary

    in_conns, in_storage, in_messages = read_bag(source)
    out_conns, out_storage, out_messages = read_bag(tmp_path / "out")
    assert (
        out_storage
        == in_storage
        == {StoragePlugin.SQLITE3: "sqlite3", StoragePlugin.MCAP: "mcap"}[storage]
    )
    assert set(out_conns) == set(in_conns) | set(ALL_OUTPUTS)
    expected_types = {
        "/dehazed/image": "Image",
        "/dehazed/camera_info": "CameraInfo",
        "/depth/image": "Image",
        "/depth/camera_info": "CameraInfo",
        "/depth/colormap": "Image",
        "/points": "PointCloud2",
        "/visibility": "Range",
    }
    for topic, name in expected_types.items():
        conn = out_conns[topic]
        assert conn.msgtype == f"sensor_msgs/msg/{name}" and conn.msgcount == FRAMES, topic
        qos = conn.ext.offered_qos_profiles[0]  # the node's: reliable, keep last 2
        assert (qos.reliability, qos.history, qos.depth) == (
            QosReliability.RELIABLE,
            QosHistory.KEEP_LAST,
            2,
        )
        assert conn.digest.startswith("RIHS01_")
        if storage == StoragePlugin.MCAP:  # the schema Foxglove decodes with
            assert "MSG: std_msgs/Header" in conn.msgdef.data, topic
    # Every original message is there, byte for byte, with its bag time, QoS and type.
    assert [m for m in out_messages if m[0] in in_conns] == in_messages
    for topic, conn in in_conns.items():
        assert out_conns[topic].msgtype == conn.msgtype
        assert out_conns[topic].ext.offered_qos_profiles == conn.ext.offered_qos_profiles

    out_types = process_bag.output_typestore()
    engine = DehazeEngine(
        EngineConfig(checkpoint=str(checkpoint), max_side=32, upsampling="bilinear", warmup=0)
    )
    inputs = {
        t: INPUT_TYPES.deserialize_cdr(raw, in_conns[topic].msgtype)
        for topic, t, raw in in_messages
        if topic == image_topic
    }
    outputs = {}
    for topic, t, raw in out_messages:
        if topic in ALL_OUTPUTS:
            outputs.setdefault(t, {})[topic] = out_types.deserialize_cdr(
                raw, out_conns[topic].msgtype
            )
    assert set(outputs) == set(inputs), "each output is written at its input frame's bag time"
    for t, frame_msg in inputs.items():
        produced = outputs[t]
        assert set(produced) == set(ALL_OUTPUTS)
        for topic, msg in produced.items():
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
                frame_msg.header.stamp.sec,
                frame_msg.header.stamp.nanosec,
                frame_msg.header.frame_id,
            ), topic
        if compressed:
            image, encoding = compressed_to_numpy(frame_msg)
        else:
            image, encoding = image_to_numpy(frame_msg), frame_msg.encoding
        # The engine on the same frame, with the focal length of CameraInfo scaled to the frame.
        result = engine.process(to_rgb8(image, encoding), focal_px=FX / 2)
        dehazed = produced["/dehazed/image"]
        assert dehazed.encoding == ("rgb8" if compressed else "bgr8")
        pixels = image_to_numpy(dehazed)
        np.testing.assert_array_equal(pixels if compressed else pixels[..., ::-1], result.dehazed)
        depth = produced["/depth/image"]
        assert depth.encoding == "32FC1"
        # Depth to the last few float32 ulps: with torch on two threads, two engines in one process
        # can differ by an ulp (measured 4.8e-7 at 2 m in a clean install, 2026-12-01; bit-equal
        # with one thread). A wrong focal length or resize moves it by far more.
        np.testing.assert_allclose(image_to_numpy(depth), result.depth, rtol=1e-6, atol=0)
        for topic in ("/dehazed/camera_info", "/depth/camera_info"):
            info = produced[topic]  # scaled to the image, as the node publishes it
            assert (info.width, info.height) == (WIDTH, HEIGHT) and info.binning_x == 0
            np.testing.assert_allclose(
                info.k, [FX / 2, 0, (CX + 0.5) / 2 - 0.5, 0, FY / 2, (CY + 0.5) / 2 - 0.5, 0, 0, 1]
            )
        assert produced["/points"].width > 0
        assert produced["/visibility"].field_of_view == pytest.approx(
            2 * math.atan(WIDTH / FX), rel=1e-5
        )


def test_errors_say_what_is_wrong_and_leave_nothing_behind(tmp_path, capsys):
    source = write_input_bag(tmp_path / "in")
    out = tmp_path / "out"

    assert (
        run(source, out, "--image-topic", "/camera/color/image_raw", "--model", "dcp")
        == process_bag.EXIT_ERROR
    )
    assert (
        f"has no topic '/camera/color/image_raw'; its image topics: {IMAGE} (Image, {FRAMES})"
        in capsys.readouterr().err
    )

    assert run(source, out, "--image-topic", INFO, "--model", "dcp") == process_bag.EXIT_ERROR
    assert "sensor_msgs/msg/CameraInfo, not an image" in capsys.readouterr().err

    assert (
        run(source, out, "--image-topic", IMAGE, "--camera-info-topic", "/nope", "--model", "dcp")
        == 2
    )
    assert f"its CameraInfo topics: {INFO}" in capsys.readouterr().err

    depth_bag = write_input_bag(tmp_path / "depth_in", encoding="32FC1")
    assert run(depth_bag, out, "--image-topic", IMAGE, "--model", "dcp") == process_bag.EXIT_ERROR
    assert (
        "none of the first 3 frames can be processed (the first: encoding '32FC1' is not a camera "
        "image" in capsys.readouterr().err
    )

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.yaml").write_text(
        "rosbag2_bagfile_information: {version: 9}\n"
    )
    assert (
        run(tmp_path / "broken", out, "--image-topic", IMAGE, "--model", "dcp")
        == process_bag.EXIT_ERROR
    )
    err = capsys.readouterr().err
    assert f"cannot read {tmp_path / 'broken'} as a rosbag2" in err
    (tmp_path / "empty").mkdir()
    assert (
        run(tmp_path / "empty", out, "--image-topic", IMAGE, "--model", "dcp")
        == process_bag.EXIT_ERROR
    )
    assert "is not a rosbag2 folder: no metadata.yaml" in capsys.readouterr().err
    assert (
        run(source, source / "out", "--image-topic", IMAGE, "--model", "dcp")
        == process_bag.EXIT_ERROR
    )
    assert "must not be IN_BAG, inside it or contain it" in capsys.readouterr().err

    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_existing_output_is_kept_unless_overwrite_and_clashing_topics_need_a_prefix(
    tmp_path, capsys
):
    source = write_input_bag(tmp_path / "in", extra_topics=("/dehazed/image",))
    out = tmp_path / "out"
    out.mkdir()
    (out / "metadata.yaml").write_text("old")
    assert (
        run(source, out, "--image-topic", IMAGE, "--model", "dcp", "--prefix", "offline")
        == process_bag.EXIT_ERROR
    )
    assert (
        "exists; pass --overwrite" in capsys.readouterr().err
        and (out / "metadata.yaml").read_text() == "old"
    )

    assert (
        run(source, out, "--image-topic", IMAGE, "--model", "dcp", "--overwrite")
        == process_bag.EXIT_ERROR
    )
    assert "already has /dehazed/image: choose another --prefix" in capsys.readouterr().err
    assert (out / "metadata.yaml").read_text() == "old", "a failed run must not touch the old bag"

    assert (
        run(
            source,
            out,
            "--image-topic",
            IMAGE,
            "--model",
            "dcp",
            "--overwrite",
            "--prefix",
            "/offline/",
        )
        == 0
    )
    connections, _, _ = read_bag(out)
    assert connections["/offline/dehazed/image"].msgcount == FRAMES
    assert connections["/dehazed/image"].msgtype == "std_msgs/msg/String"  # the original, untouched
    # dcp: relative depth, so no depth, points or visibility (said in the log), dehazed only.
    assert not {"/offline/depth/image", "/offline/points", "/offline/visibility"} & set(connections)
    err = capsys.readouterr().err
    assert "visibility: not written, it needs metric depth" in err
    assert (
        "depth/image: not written, the model's depth is relative" in err
        and "points: not written" in err
    )
    assert not list(tmp_path.glob(".out.*"))


def test_option_defaults_are_the_nodes_and_every_parameter_has_a_home(tmp_path, capsys):
    args = process_bag.parse_args(
        [str(tmp_path / "in"), str(tmp_path / "out"), "--image-topic", IMAGE]
    )
    # Options, --outputs and the node-only parameters together give exactly the node's defaults.
    assert args.config == NodeConfig()
    assert args.outputs == tuple(process_bag.output_switches())
    # Every parameter is an option, a switch of --outputs or one that only a live node has.
    homes = [
        *process_bag.option_parameters(),
        *process_bag.output_switches().values(),
        *process_bag.NODE_ONLY,
    ]
    assert sorted(homes) == sorted(SPECS)
    args = process_bag.parse_args(
        [
            "in",
            "out",
            "--image-topic",
            IMAGE,
            "--max-side",
            "64",
            "--relative-depth",
            "--depth-inf-as-nan",
            "--colormap-max-m",
            "20",
            "--outputs",
            "depth",
        ]
    )
    assert args.config == NodeConfig(
        max_side=64,
        publish_relative_depth=True,
        depth_inf_as_nan=True,
        colormap_max_m=20.0,
        publish_dehazed=False,
        publish_colormap=False,
        publish_points=False,
        publish_visibility=False,
        publish_confidence=False,
    )
    # The node's own rules refuse a value before any weights are loaded.
    for bad, problem in (
        (["--max-side", "16"], "max_side must be 0 (native) or at least 32"),
        (["--point-decimation", "0"], "point_decimation must be >= 1"),
        (["--outputs", "depth,haze"], "--outputs: haze is not one of dehazed, depth"),
    ):
        with pytest.raises(SystemExit):
            process_bag.parse_args(["in", "out", "--image-topic", IMAGE, *bad])
        assert problem in capsys.readouterr().err


def _luma(frame):
    """An extra output: the dehazed image's first channel, to see a new row reach the bag."""
    return numpy_to_image(np.ascontiguousarray(frame.result.dehazed[..., 0]), "mono8", frame.header)


@pytest.mark.parametrize("switch", list(process_bag.output_switches()))
def test_the_rows_a_switch_enables_are_written_and_no_other(
    tmp_path, checkpoint, monkeypatch, switch
):
    """What is written is the output table's rows, not a list of topic names in process_bag: a
    row added to frame_outputs.OUTPUTS is written for every frame with its switch."""
    extra = frame_outputs.Output(
        f"extra/{switch}", "sensor_msgs/msg/Image", f"publish_{switch}", _luma, uses_dehazed=True
    )
    monkeypatch.setattr(frame_outputs, "OUTPUTS", frame_outputs.OUTPUTS + (extra,))
    source = write_input_bag(tmp_path / "in")
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
            "--outputs",
            switch,
        )
        == 0
    )
    in_conns, _, _ = read_bag(source)
    out_conns, _, _ = read_bag(tmp_path / "out")
    expected = {
        f"/{output.topic}": output.message_type
        for output in frame_outputs.OUTPUTS
        if output.enabled_by == f"publish_{switch}"
    }
    assert {
        topic: conn.msgtype for topic, conn in out_conns.items() if topic not in in_conns
    } == expected
    assert all(out_conns[topic].msgcount == FRAMES for topic in expected), "no row is left empty"


def test_a_row_the_bag_cannot_record_is_an_error_not_an_empty_connection(
    tmp_path, checkpoint, monkeypatch, capsys
):
    source = write_input_bag(tmp_path / "in")
    argv = (
        source,
        tmp_path / "out",
        "--image-topic",
        IMAGE,
        "--checkpoint",
        checkpoint,
        "--max-side",
        32,
    )
    no_type = frame_outputs.Output(
        "haze/density", "dehaze_msgs/msg/HazeDensity", "publish_depth", _luma
    )
    monkeypatch.setattr(frame_outputs, "OUTPUTS", frame_outputs.OUTPUTS + (no_type,))
    assert run(*argv) == process_bag.EXIT_ERROR
    assert (
        "no message definition to record haze/density (dehaze_msgs/msg/HazeDensity)"
        in capsys.readouterr().err
    )
    no_switch = frame_outputs.Output("haze/density", "sensor_msgs/msg/Image", "publish_haze", _luma)
    monkeypatch.setattr(frame_outputs, "OUTPUTS", frame_outputs.OUTPUTS[:-1] + (no_switch,))
    with pytest.raises(SystemExit):
        run(*argv)
    assert (
        "haze/density: enabled_by 'publish_haze' is not a boolean parameter"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_bad_frames_and_unusable_intrinsics_are_counted_and_skipped(tmp_path, checkpoint, capsys):
    source = write_input_bag(
        tmp_path / "in",
        compressed=True,
        image_topic=f"{IMAGE}/compressed",
        corrupt=(1,),
        calibrated=False,
    )
    assert (
        run(
            source,
            tmp_path / "out",
            "--image-topic",
            f"{IMAGE}/compressed",
            "--camera-info-topic",
            INFO,
            "--checkpoint",
            checkpoint,
            "--max-side",
            32,
        )
        == 0
    )
    captured = capsys.readouterr()
    assert f"{FRAMES - 1} frames processed, 1 skipped" in captured.out
    assert "skipped a frame" in captured.err and "skipped a frame" not in captured.out
    assert f"{FRAMES - 1} x points: camera_info is uncalibrated" in captured.out
    connections, _, _ = read_bag(tmp_path / "out")
    assert (
        connections["/dehazed/image"].msgcount
        == connections["/dehazed/camera_info"].msgcount
        == FRAMES - 1
    )
    assert connections["/points"].msgcount == 0  # planned, then refused frame by frame, and said so


def test_sample_bag_of_the_built_in_camera_goes_through(tmp_path, capsys):
    bag = process_bag.write_sample_bag(
        tmp_path / "sample", frames=3, width=80, height=60, storage="mcap", compressed=True
    )
    assert (
        run(
            bag, tmp_path / "out", "--image-topic", "/camera/image_raw/compressed", "--model", "dcp"
        )
        == 0
    )
    assert (
        "camera info from /camera/camera_info (the image topic's sibling)"
        in capsys.readouterr().err
    )
    connections, storage, messages = read_bag(tmp_path / "out")
    assert storage == "mcap"
    assert connections["/ground_truth/visibility"].msgcount == 3
    assert (
        connections["/dehazed/image"].msgcount == connections["/dehazed/camera_info"].msgcount == 3
    )
    truths = [
        process_bag.output_typestore().deserialize_cdr(raw, "sensor_msgs/msg/Range").range
        for topic, _, raw in messages
        if topic == "/ground_truth/visibility"
    ]
    assert truths[0] == pytest.approx(3.912 / 0.02, rel=1e-5) and all(49 < v <= 196 for v in truths)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_run_leaves_no_bag_and_no_partial_folder(tmp_path, checkpoint, signum):
    source = write_input_bag(
        tmp_path / "in",
        compressed=True,
        frames=600,
        image_topic=f"{IMAGE}/compressed",
        size=(160, 120),
    )
    out = tmp_path / "out"
    env = dict(child_env(), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dehaze_ros.tools.process_bag",
            str(source),
            str(out),
            "--image-topic",
            f"{IMAGE}/compressed",
            "--checkpoint",
            str(checkpoint),
            "--max-side",
            "0",
            "--num-threads",
            "1",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (`make test &`) passes SIGINT
        # on ignored, and Ctrl-C would then never reach the program under test.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            partial = list(tmp_path.glob(".out.partial-*/out/*"))
            if any(
                path.suffix in (".db3", ".mcap") and path.stat().st_size > 0 for path in partial
            ):
                break
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the run: 600 frames take far longer
        assert process.poll() is None, (
            f"process_bag ended before the signal: {process.communicate()}"
        )
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == process_bag.EXIT_INTERRUPTED, stderr
    assert "interrupted; no partial bag left behind" in stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def written_depths(bag: Path) -> list[np.ndarray]:
    """The /depth/image frames process_bag wrote into ``bag``, in order."""
    _, _, messages = read_bag(bag)
    typestore = process_bag.output_typestore()
    return [
        image_to_numpy(typestore.deserialize_cdr(raw, "sensor_msgs/msg/Image"))
        for topic, _, raw in messages
        if topic == "/depth/image"
    ]


def half_vehicle_view():
    """The renderer's first vehicle view (1242 x 375, camera 1.24 m up, fx 721) at half size:
    (the view, rgb, exact depth, K of the half-size image)."""
    from dehaze_ros.sim.scenes import vehicle_validation_view

    _, view = vehicle_validation_view(0)
    rgb = cv2.resize(view.rgb, (621, 188), interpolation=cv2.INTER_AREA)
    truth = cv2.resize(view.depth_m, (621, 188), interpolation=cv2.INTER_NEAREST)
    K = view.K.copy()
    K[:2] *= 0.5
    K[:2, 2] = (view.K[:2, 2] + 0.5) * 0.5 - 0.5
    return view, rgb, truth, K


def pinhole_camera_info(index: int, K: np.ndarray, width: int, height: int):
    """A CameraInfo of intrinsics K (no distortion), with the header of frame ``index``."""
    CameraInfo = INPUT_TYPES.types["sensor_msgs/msg/CameraInfo"]
    RegionOfInterest = INPUT_TYPES.types["sensor_msgs/msg/RegionOfInterest"]
    return CameraInfo(
        header=header(index),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def test_camera_height_gives_the_depth_the_grounds_scale_as_the_engine_does(tmp_path, capsys):
    """--camera-height-m / --camera-pitch-deg are the node's parameters: the bag's depth is the
    engine's with that mounting, frame after frame of one stream (stamps pace the smoothing)."""
    from dehaze_ros.metric_scale import Mounting, Pinhole

    view, rgb, truth, K = half_vehicle_view()  # 621 x 188 of a 1242 x 375 camera 1.24 m up
    source = tmp_path / "in"
    with Writer(source, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        image_conn = writer.add_connection(IMAGE, "sensor_msgs/msg/Image", typestore=INPUT_TYPES)
        info_conn = writer.add_connection(INFO, "sensor_msgs/msg/CameraInfo", typestore=INPUT_TYPES)
        for index in range(3):
            stamp = START_NS + index * 100_000_000
            info = pinhole_camera_info(index, K, 621, 188)
            writer.write(
                info_conn, stamp, INPUT_TYPES.serialize_cdr(info, "sensor_msgs/msg/CameraInfo")
            )
            writer.write(
                image_conn,
                stamp + 1000,
                INPUT_TYPES.serialize_cdr(image_msg(index, rgb, "rgb8"), "sensor_msgs/msg/Image"),
            )
    mounting = Mounting(round(view.camera_height_m, 3), round(view.camera_pitch_deg, 2))
    assert (
        run(
            source,
            tmp_path / "out",
            "--image-topic",
            IMAGE,
            "--camera-info-topic",
            INFO,
            "--outputs",
            "depth",
            "--camera-height-m",
            mounting.height_m,
            "--camera-pitch-deg",
            mounting.pitch_deg,
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert "metric scale: ground 3, factor" in summary, summary

    engine = DehazeEngine(
        EngineConfig(
            camera_height_m=mounting.height_m,
            camera_pitch_deg=mounting.pitch_deg,
            warmup=0,
            num_threads=1,
        )
    )
    camera = Pinhole(K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    depths = written_depths(tmp_path / "out")
    assert len(depths) == 3
    for index, depth in enumerate(depths):
        expected = engine.process(
            rgb, want_dehazed=False, camera=camera, stamp_s=(START_NS + index * 10**8 + 7) / 1e9
        )
        np.testing.assert_allclose(depth, expected.depth, rtol=1e-5)
        scored = np.isfinite(truth) & (truth < 80) & np.isfinite(depth)
        assert 0.9 <= np.median(depth[scored]) / np.median(truth[scored]) <= 1.1
    # Without the camera height: the network's own metres, far from the truth on this view.
    assert (
        run(
            source,
            tmp_path / "learned",
            "--image-topic",
            IMAGE,
            "--camera-info-topic",
            INFO,
            "--outputs",
            "depth",
        )
        == 0
    )
    assert "metric scale" not in capsys.readouterr().out


def cloud_msg(points: np.ndarray, stamp_ns: int, frame_id: str):
    """A PointCloud2 (x, y, z float32) written with rosbags' own types, not the code under test."""
    PointCloud2, PointField = (
        INPUT_TYPES.types["sensor_msgs/msg/PointCloud2"],
        INPUT_TYPES.types["sensor_msgs/msg/PointField"],
    )
    Header, Time = (
        INPUT_TYPES.types["std_msgs/msg/Header"],
        INPUT_TYPES.types["builtin_interfaces/msg/Time"],
    )
    data = np.ascontiguousarray(points, dtype="<f4")
    fields = [
        PointField(name=name, offset=4 * i, datatype=7, count=1) for i, name in enumerate("xyz")
    ]
    return PointCloud2(
        header=Header(
            stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id
        ),
        height=1,
        width=len(data),
        fields=fields,
        is_bigendian=False,
        point_step=12,
        row_step=12 * len(data),
        data=np.frombuffer(data.tobytes(), np.uint8),
        is_dense=True,
    )


def test_an_anchor_cloud_topic_gives_the_depth_the_points_metres_as_the_engine_does(
    tmp_path, capsys
):
    """--anchor-topic: each frame takes the bag's cloud nearest to it; a cloud in another frame
    without anchor_extrinsic is refused, counted and said, and the factor is held."""
    from dehaze_ros.anchor_scale import AnchorCloud
    from dehaze_ros.metric_scale import Pinhole
    from dehaze_ros.sim.lidar import synthetic_lidar

    _, rgb, truth, K = half_vehicle_view()
    points = synthetic_lidar(
        truth, K[0, 0], K[1, 1], K[0, 2], K[1, 2], rng=np.random.default_rng(0)
    )
    source, cloud_topic = tmp_path / "in", "/lidar/points"
    with Writer(source, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        image_conn = writer.add_connection(IMAGE, "sensor_msgs/msg/Image", typestore=INPUT_TYPES)
        info_conn = writer.add_connection(INFO, "sensor_msgs/msg/CameraInfo", typestore=INPUT_TYPES)
        cloud_conn = writer.add_connection(
            cloud_topic, "sensor_msgs/msg/PointCloud2", typestore=INPUT_TYPES
        )
        for index in range(3):
            stamp = START_NS + index * 100_000_000
            info = pinhole_camera_info(index, K, 621, 188)
            frame_id = (
                f"cam{index}" if index < 2 else "lidar"
            )  # the last: another frame, no extrinsic
            writer.write(
                cloud_conn,
                stamp,
                INPUT_TYPES.serialize_cdr(
                    cloud_msg(points, stamp + 7, frame_id), "sensor_msgs/msg/PointCloud2"
                ),
            )
            writer.write(
                info_conn, stamp, INPUT_TYPES.serialize_cdr(info, "sensor_msgs/msg/CameraInfo")
            )
            writer.write(
                image_conn,
                stamp + 1000,
                INPUT_TYPES.serialize_cdr(image_msg(index, rgb, "rgb8"), "sensor_msgs/msg/Image"),
            )
    assert (
        run(
            source,
            tmp_path / "out",
            "--image-topic",
            IMAGE,
            "--camera-info-topic",
            INFO,
            "--outputs",
            "depth",
            "--anchor-topic",
            cloud_topic,
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert "metric scale: anchors 2, anchors held 1" in summary, summary
    assert "clouds received 3" in summary and "frames anchored 2" in summary, summary
    assert "in frame 'lidar', the image in 'cam2'" in summary, summary

    engine = DehazeEngine(EngineConfig(warmup=0, num_threads=1))
    camera = Pinhole(K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    depths = written_depths(tmp_path / "out")
    assert len(depths) == 3
    for index, depth in enumerate(depths):
        stamp_s = (START_NS + index * 10**8 + 7) / 1e9
        anchors = (
            AnchorCloud.of(points, stamp_s) if index < 2 else AnchorCloud.refused("another frame")
        )
        expected = engine.process(
            rgb, want_dehazed=False, camera=camera, stamp_s=stamp_s, anchors=anchors
        )
        np.testing.assert_allclose(depth, expected.depth, rtol=1e-5)
        scored = np.isfinite(truth) & (truth < 80) & np.isfinite(depth)
        assert 0.9 <= np.median(depth[scored]) / np.median(truth[scored]) <= 1.1

    assert (
        run(source, tmp_path / "wrong", "--image-topic", IMAGE, "--anchor-topic", INFO)
        == process_bag.EXIT_ERROR
    )
    assert (
        f"has no PointCloud2 topic '{INFO}'; its PointCloud2 topics: {cloud_topic}"
        in capsys.readouterr().err
    )
