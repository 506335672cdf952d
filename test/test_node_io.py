"""dehaze_node over real DDS: the node runs in its own process, this process publishes and listens.

One node (tiny random-weight checkpoint, metric depth) serves the raw-input tests and one the
compressed input: starting a node costs seconds on 2 cores, so each is shared by its module.
Images are 160x120: the point here is encodings and headers, not size.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
)
pytest.importorskip(
    "dehaze_ros.models", reason="dehaze_ros.models is needed for the test checkpoint"
)

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from dehaze_ros.image_conversion import (
    image_to_numpy,
    numpy_to_compressed,  # noqa: E402
    numpy_to_image,
    output_encoding,
)
from dehaze_ros.pointcloud import pointcloud2_to_arrays  # noqa: E402
from node_harness import (
    CX,
    CY,
    DECIMATION,
    FX,
    FY,
    HEIGHT,
    OUTPUT_TOPICS,
    WIDTH,  # noqa: E402
    DehazeNodeHarness,
    frame_in,
    hazy_rgb,
    make_camera_info,
)
from ros_helpers import (
    latest_diagnostics,
    png_bomb,
    stamp_of,  # noqa: E402
    write_tiny_checkpoint,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def raw_node(ros_context, checkpoint):
    node = DehazeNodeHarness(ros_context, "/io_raw", ["-p", f"checkpoint:={checkpoint}"])
    node.wait_until_ready()
    yield node
    node.close()


@pytest.fixture(scope="module")
def compressed_node(ros_context, checkpoint):
    node = DehazeNodeHarness(
        ros_context,
        "/io_compressed",
        ["-p", f"checkpoint:={checkpoint}", "-p", "input_transport:=compressed"],
        compressed=True,
    )
    node.wait_until_ready()
    yield node
    node.close()


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_every_encoding_gives_every_output_with_the_input_header(raw_node, encoding):
    header = raw_node.header(frame_id=f"cam_{encoding}")
    image = frame_in(encoding, hazy_rgb())
    outputs = raw_node.send_until_processed(
        numpy_to_image(image, encoding, header), wanted=tuple(OUTPUT_TOPICS)
    )
    for topic, msg in outputs.items():
        assert msg.header.frame_id == f"cam_{encoding}", topic
        assert stamp_of(msg) == (header.stamp.sec, header.stamp.nanosec), topic

    dehazed = outputs["dehazed/image"]
    assert dehazed.encoding == output_encoding(encoding)
    assert (dehazed.height, dehazed.width) == (HEIGHT, WIDTH)
    dehazed_pixels = image_to_numpy(dehazed)
    assert dehazed_pixels.shape[:2] == (HEIGHT, WIDTH)
    if encoding in ("rgba8", "bgra8"):
        np.testing.assert_array_equal(dehazed_pixels[..., 3], image[..., 3])  # alpha passes through

    depth = image_to_numpy(outputs["depth/image"])
    assert outputs["depth/image"].encoding == "32FC1" and depth.shape == (HEIGHT, WIDTH)
    assert np.isfinite(depth).all() and depth.min() >= 0.01 and depth.max() <= 1000.0

    colormap = outputs["depth/colormap"]
    assert colormap.encoding == "bgr8" and (colormap.height, colormap.width) == (HEIGHT, WIDTH)

    for topic in ("dehazed/camera_info", "depth/camera_info"):
        assert list(outputs[topic].k) == [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]

    # The cloud is the depth image back-projected: every DECIMATION-th pixel, all valid here.
    xyz, rgb = pointcloud2_to_arrays(outputs["points"])
    sampled = depth[::DECIMATION, ::DECIMATION]
    assert len(xyz) == sampled.size == (HEIGHT // DECIMATION) * (WIDTH // DECIMATION)
    np.testing.assert_allclose(xyz[:, 2], sampled.reshape(-1), rtol=1e-6)
    v, u = np.mgrid[0:HEIGHT:DECIMATION, 0:WIDTH:DECIMATION]
    np.testing.assert_allclose(
        xyz[:, 0], ((u - CX) * sampled / FX).reshape(-1), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        xyz[:, 1], ((v - CY) * sampled / FY).reshape(-1), rtol=1e-4, atol=1e-5
    )
    if encoding.startswith("mono"):
        assert (rgb[:, 0] == rgb[:, 1]).mean() > 0.9  # coloured with the (grey) dehazed image


def test_step_padding_and_big_endian_input(raw_node):
    gray16 = frame_in("mono16", hazy_rgb(1))
    header = raw_node.header()
    msg = Image(header=header, height=HEIGHT, width=WIDTH, encoding="mono16", is_bigendian=1)
    msg.step = WIDTH * 2 + 6
    rows = [gray16[row].astype(">u2").tobytes() + b"\x00" * 6 for row in range(HEIGHT)]
    msg.data = b"".join(rows)
    outputs = raw_node.send_until_processed(msg)
    dehazed = image_to_numpy(outputs["dehazed/image"])
    assert outputs["dehazed/image"].encoding == "mono8" and dehazed.shape == (HEIGHT, WIDTH)
    # Read with the wrong byte order the input would be noise; read right it is a smooth ramp,
    # and the dehazed output keeps that structure.
    correlation = np.corrcoef(dehazed.reshape(-1).astype(float), (gray16 >> 8).reshape(-1))[0, 1]
    assert correlation > 0.5


def bad_image_messages(header):
    good = numpy_to_image(frame_in("rgb8", hazy_rgb()), "rgb8", header)
    short = numpy_to_image(frame_in("rgb8", hazy_rgb()), "rgb8", header)
    short.data = short.data[:-7]
    unknown = numpy_to_image(frame_in("rgb8", hazy_rgb()), "rgb8", header)
    unknown.encoding = "yuv9000"
    empty = Image(header=header, height=0, width=0, encoding="rgb8", step=0)
    narrow_step = numpy_to_image(frame_in("rgb8", hazy_rgb()), "rgb8", header)
    narrow_step.step = WIDTH
    depth_as_camera = numpy_to_image(np.ones((HEIGHT, WIDTH), np.float32), "32FC1", header)
    return good, [
        (short, "data has"),
        (unknown, "unsupported image encoding 'yuv9000'"),
        (empty, "image is empty"),
        (narrow_step, "smaller than one row"),
        (depth_as_camera, "not a camera image"),
    ]


def test_bad_frames_are_reported_and_the_next_good_frame_is_processed(raw_node):
    before = raw_node.diagnostics_after(lambda values: True)
    invalid_before = int(before["frames invalid (bad data)"])
    _, bad_messages = bad_image_messages(raw_node.header())
    for count, (bad, problem) in enumerate(bad_messages, start=1):
        bad.header = raw_node.header()
        # Best effort may lose a message: resend until the node has counted this one.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            raw_node.image_pub.publish(bad)
            if raw_node.probe.spin_until(
                lambda: (
                    (values := latest_diagnostics(raw_node.diagnostics, "/io_raw/dehaze_node"))
                    is not None
                    and int(values["frames invalid (bad data)"]) >= invalid_before + count
                ),
                1.5,
            ):
                break
        values = raw_node.diagnostics_after(
            lambda values: int(values["frames invalid (bad data)"]) >= invalid_before + count
        )
        assert problem in values["last problem"], values["last problem"]
        assert raw_node.process.alive
        assert not raw_node.outputs_for(stamp_of(bad)), "a bad frame produced outputs"
        good, _ = bad_image_messages(raw_node.header())
        raw_node.send_until_processed(good)  # still working
    assert "dropped a frame from /io_raw/image" in raw_node.process.log()


def test_burst_keeps_the_newest_frame_and_reports_drops(raw_node):
    before = raw_node.diagnostics_after(lambda values: True)
    dropped_before = int(before["frames dropped (newer frame arrived)"])
    base = hazy_rgb(2)
    published_at: dict[tuple[int, int], float] = {}
    start = time.monotonic()
    # About 1.5 s at the publisher's full speed: far faster than the network's ~30+ ms/frame.
    while time.monotonic() - start < 1.5:
        header = raw_node.header(frame_id="burst")
        raw_node.info_pub.publish(make_camera_info(header))
        raw_node.image_pub.publish(numpy_to_image(base, "rgb8", header))
        published_at[(header.stamp.sec, header.stamp.nanosec)] = time.time()
        raw_node.probe.executor.spin_once(timeout_sec=0.0)
    raw_node.probe.spin_for(3.0)
    burst_outputs = [
        (received, msg)
        for received, msg in raw_node.outputs["dehazed/image"]
        if msg.header.frame_id == "burst"
    ]
    received_stamps = [stamp_of(msg) for _, msg in burst_outputs]
    assert burst_outputs, f"no output during the burst; node log:\n{raw_node.process.log()[-2000:]}"
    assert len(set(received_stamps)) < len(published_at) / 2, "the node did not skip frames"
    # The newest frame is processed: the last published frame (or one of the very last, if
    # best-effort delivery lost it) is among the outputs.
    last_stamps = sorted(published_at)[-5:]
    assert set(received_stamps) & set(last_stamps), "the newest frames were not processed"
    # Latency stays bounded: a queue would make it grow through the burst (~ frames x 30+ ms).
    latencies = [received - published_at[stamp_of(msg)] for received, msg in burst_outputs]
    third = max(1, len(latencies) // 3)
    assert np.median(latencies[-third:]) < np.median(latencies[:third]) + 1.0, latencies
    values = raw_node.diagnostics_after(
        lambda values: int(values["frames dropped (newer frame arrived)"]) > dropped_before
    )
    assert int(values["frames received"]) - int(before["frames received"]) > len(
        set(received_stamps)
    )
    assert values["latency receive->publish p95 (ms)"] != "n/a"


@pytest.mark.parametrize("encoding, fmt", [("rgb8", "jpeg"), ("bgr8", "jpeg"), ("mono8", "png")])
def test_compressed_input(compressed_node, encoding, fmt):
    header = compressed_node.header(frame_id=f"compressed_{encoding}")
    image = frame_in(encoding, hazy_rgb(3))
    outputs = compressed_node.send_until_processed(
        numpy_to_compressed(image, encoding, fmt, header),
        wanted=("dehazed/image", "depth/image", "points"),
    )
    dehazed = outputs["dehazed/image"]
    assert dehazed.encoding == encoding  # the format string names the original encoding
    assert (dehazed.height, dehazed.width) == (HEIGHT, WIDTH)
    assert outputs["depth/image"].header.frame_id == f"compressed_{encoding}"
    assert outputs["points"].width == (HEIGHT // DECIMATION) * (WIDTH // DECIMATION)


def test_corrupt_compressed_frame_is_reported_and_node_recovers(compressed_node):
    header = compressed_node.header()
    corrupt = numpy_to_compressed(frame_in("rgb8", hazy_rgb()), "rgb8", "jpeg", header)
    corrupt.data = corrupt.data[: len(corrupt.data) // 3]
    before = compressed_node.diagnostics_after(lambda values: True)
    invalid_before = int(before["frames invalid (bad data)"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        compressed_node.image_pub.publish(corrupt)
        if compressed_node.probe.spin_until(
            lambda: (
                (
                    values := latest_diagnostics(
                        compressed_node.diagnostics, "/io_compressed/dehaze_node"
                    )
                )
                is not None
                and int(values["frames invalid (bad data)"]) > invalid_before
            ),
            1.5,
        ):
            break
    values = compressed_node.diagnostics_after(
        lambda values: int(values["frames invalid (bad data)"]) > invalid_before
    )
    assert "JPEG data is truncated" in values["last problem"]
    good_header = compressed_node.header()
    compressed_node.send_until_processed(
        numpy_to_compressed(frame_in("rgb8", hazy_rgb()), "rgb8", "jpeg", good_header)
    )
    assert compressed_node.process.alive


def test_diagnostics_describe_the_model_and_rates(raw_node):
    raw_node.send_until_processed(
        numpy_to_image(hazy_rgb(4), "rgb8", raw_node.header()), wanted=tuple(OUTPUT_TOPICS)
    )
    # The first status after the frame: one published before it was processed shows 0 frames.
    values = raw_node.diagnostics_after(
        lambda values: values["state"] == "active" and int(values["frames processed"]) > 0
    )
    assert values["model"] == "diacmpn-rt" and values["device"] == "cpu"
    assert values["depth units"] == "meters"
    # Frames went through with every output subscribed, so the depth network ran for each, and
    # the latencies are numbers.
    assert int(values["frames processed"]) > 0
    assert values["frames processed with depth"] == values["frames processed"]
    for key in (
        "latency stamp->publish median (ms)",
        "latency receive->publish p95 (ms)",
        "inference median (ms)",
    ):
        assert float(values[key]) > 0, key
    for key in ("input rate (Hz)", "output rate (Hz)", "frames dropped (newer frame arrived)"):
        assert key in values


def test_work_nobody_subscribes_to_is_skipped(ros_context, checkpoint):
    node = DehazeNodeHarness(
        ros_context, "/io_demand", ["-p", f"checkpoint:={checkpoint}"], subscribe=()
    )
    try:
        node.wait_until_ready()
        # 1. No output has a subscriber: frames are counted as skipped, nothing is computed.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            header = node.header()
            node.info_pub.publish(make_camera_info(header))
            node.image_pub.publish(numpy_to_image(hazy_rgb(), "rgb8", header))
            if node.probe.spin_until(
                lambda: (
                    (v := latest_diagnostics(node.diagnostics, "/io_demand/dehaze_node"))
                    is not None
                    and int(v["frames skipped (no subscribers)"]) >= 3
                ),
                0.5,
            ):
                break
        values = node.diagnostics_after(lambda v: int(v["frames skipped (no subscribers)"]) >= 3)
        assert values["frames processed"] == "0" and values["inference median (ms)"] == "n/a"

        # 2. Only the dehazed image is wanted: the dehazer runs, the depth network does not.
        node.outputs["dehazed/image"] = node.probe.record(Image, "/io_demand/dehazed/image")
        node.probe.spin_until(
            lambda: node.probe.node.count_subscribers("/io_demand/dehazed/image") > 0, 10
        )
        outputs = node.send_until_processed(numpy_to_image(hazy_rgb(1), "rgb8", node.header()))
        assert set(outputs) == {"dehazed/image"}
        values = node.diagnostics_after(lambda v: int(v["frames processed"]) >= 1)
        assert values["frames processed with depth"] == "0", values
    finally:
        node.close()


def peak_memory_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_decompression_bomb_is_refused_and_memory_stays_bounded(compressed_node):
    # Issue 10: 109 KB of PNG declaring 30000 x 30000 pixels grew the node past 8 GB.
    peak_before = peak_memory_mb(compressed_node.process.process.pid)
    bomb = CompressedImage(header=compressed_node.header(), format="png")
    bomb.data = png_bomb(30000, 30000)
    values = compressed_node.send_until_counted(bomb, "frames invalid (bad data)")
    assert (
        "PNG image is 30000x30000 = 900.0 MP, over the limit of 16777216" in values["last problem"]
    )
    assert compressed_node.process.alive and not compressed_node.outputs_for(stamp_of(bomb))
    # One decoded copy alone would be 858 MB; the node stays within what it needed before.
    assert peak_memory_mb(compressed_node.process.process.pid) < peak_before + 100
    compressed_node.send_until_processed(
        numpy_to_compressed(frame_in("rgb8", hazy_rgb()), "rgb8", "jpeg", compressed_node.header())
    )


def test_truncated_jpeg_padded_with_an_end_marker_is_dropped(compressed_node):
    # Issue 10: jpeg[:len//3] + FF D9 was decoded with two thirds grey and published.
    truncated = numpy_to_compressed(
        frame_in("rgb8", hazy_rgb(5)), "rgb8", "jpeg", compressed_node.header()
    )
    truncated.data = bytes(truncated.data[: len(truncated.data) // 3]) + b"\xff\xd9"
    values = compressed_node.send_until_counted(truncated, "frames invalid (bad data)")
    assert "libjpeg: 'Corrupt JPEG data: premature end of data segment'" in values["last problem"]
    compressed_node.probe.spin_for(0.5)
    assert not compressed_node.outputs_for(stamp_of(truncated)), "the padded frame was published"
    compressed_node.send_until_processed(
        numpy_to_compressed(frame_in("rgb8", hazy_rgb()), "rgb8", "jpeg", compressed_node.header())
    )


def test_raw_frames_over_max_input_pixels_are_dropped(raw_node):
    assert raw_node.set_parameter("max_input_pixels", WIDTH * HEIGHT - 1).successful  # live
    try:
        frame = numpy_to_image(hazy_rgb(), "rgb8", raw_node.header())
        values = raw_node.send_until_counted(frame, "frames invalid (bad data)")
        assert f"rgb8 image is {WIDTH}x{HEIGHT}" in values["last problem"]
        assert f"over the limit of {WIDTH * HEIGHT - 1} pixels" in values["last problem"]
        assert not raw_node.outputs_for(stamp_of(frame))
    finally:
        assert raw_node.set_parameter("max_input_pixels", 4096 * 4096).successful
    raw_node.send_until_processed(numpy_to_image(hazy_rgb(), "rgb8", raw_node.header()))


def test_camera_info_outputs_describe_the_published_image(raw_node):
    # Issue 10: a CameraInfo calibrated at twice the image size was republished unscaled, so
    # depth_image_proc read 320x240 geometry beside a 160x120 depth image.
    header = raw_node.header()
    calibrated = make_camera_info(header)
    calibrated.width, calibrated.height = 2 * WIDTH, 2 * HEIGHT
    # Pixel centres: (c + 0.5) * 2 - 0.5 at twice the resolution.
    calibrated.k = [2 * FX, 0.0, 2 * CX + 0.5, 0.0, 2 * FY, 2 * CY + 0.5, 0.0, 0.0, 1.0]
    calibrated.p = [
        2 * FX,
        0.0,
        2 * CX + 0.5,
        0.0,
        0.0,
        2 * FY,
        2 * CY + 0.5,
        0.0,
        0.0,
        0.0,
        1.0,
        0.0,
    ]
    calibrated.d = [0.011, -0.022, 0.0, 0.0, 0.033]  # marks this CameraInfo apart from earlier ones
    outputs = raw_node.send_until_processed(
        numpy_to_image(hazy_rgb(6), "rgb8", header),
        camera_info=calibrated,
        wanted=("dehazed/camera_info", "depth/camera_info", "depth/image", "points"),
    )
    for topic in ("dehazed/camera_info", "depth/camera_info"):
        info = outputs[topic]
        assert list(info.d) == [0.011, -0.022, 0.0, 0.0, 0.033], (
            topic
        )  # from the 320x240 calibration
        assert (info.width, info.height) == (WIDTH, HEIGHT), topic
        np.testing.assert_allclose(info.k, [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0], err_msg=topic)
        np.testing.assert_allclose(info.p, [FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0])
        assert (info.binning_x, info.binning_y, info.roi.width) == (0, 0, 0)
        assert stamp_of(info) == stamp_of(outputs["depth/image"])
    # points used the same geometry: back-projection with the published K.
    depth = image_to_numpy(outputs["depth/image"])
    xyz, _ = pointcloud2_to_arrays(outputs["points"])
    sampled = depth[::DECIMATION, ::DECIMATION]
    u = np.mgrid[0:HEIGHT:DECIMATION, 0:WIDTH:DECIMATION][1]
    np.testing.assert_allclose(
        xyz[:, 0], ((u - CX) * sampled / FX).reshape(-1), rtol=1e-4, atol=1e-5
    )


def test_diagnostics_warn_for_a_bad_frame_then_recover_to_ok(raw_node):
    # Issue 10: one bad frame left /diagnostics at WARN for good.
    bad = numpy_to_image(hazy_rgb(), "rgb8", raw_node.header())
    bad.data = bad.data[:-5]
    values = raw_node.send_until_counted(bad, "frames invalid (bad data)")
    assert values["level"] == "1" and "bad frame(s) in the last" in values["message"], values
    invalid = int(values["frames invalid (bad data)"])

    def recovered():
        header = raw_node.header()
        raw_node.info_pub.publish(make_camera_info(header))
        raw_node.image_pub.publish(numpy_to_image(hazy_rgb(), "rgb8", header))
        values = latest_diagnostics(raw_node.diagnostics, "/io_raw/dehaze_node")
        return values is not None and values["level"] == "0"

    assert raw_node.probe.spin_until(recovered, 20), latest_diagnostics(
        raw_node.diagnostics, "/io_raw"
    )
    values = latest_diagnostics(raw_node.diagnostics, "/io_raw/dehaze_node")
    # The cumulative counters and the last problem are still reported, as values.
    assert int(values["frames invalid (bad data)"]) >= invalid
    assert "data has" in values["last problem"] and float(values["seconds since last problem"]) > 0
    assert "bad frame" not in values["message"]


def test_out_of_range_depth_is_inf_by_default_and_nan_on_request(ros_context, tmp_path):
    # Every prediction of the random network is nearer than this range: REP-117 -inf.
    checkpoint = write_tiny_checkpoint(tmp_path / "far.pt", depth_range_m=(1e6, 2e6))
    node = DehazeNodeHarness(
        ros_context,
        "/io_nan",
        ["-p", f"checkpoint:={checkpoint}"],
        subscribe=("depth/image", "depth/colormap"),
    )
    try:
        node.wait_until_ready()
        outputs = node.send_until_processed(
            numpy_to_image(hazy_rgb(), "rgb8", node.header()), wanted=("depth/image",)
        )
        assert np.isneginf(image_to_numpy(outputs["depth/image"])).all()
        assert node.set_parameter("depth_inf_as_nan", True).successful  # live
        outputs = node.send_until_processed(
            numpy_to_image(hazy_rgb(), "rgb8", node.header()),
            wanted=("depth/image", "depth/colormap"),
        )
        assert np.isnan(image_to_numpy(outputs["depth/image"])).all()
    finally:
        node.close()


def test_metric_depth_follows_the_focal_length_in_camera_info(raw_node):
    """Canonical-camera depth: the same pixels seen with twice the focal length are twice as far
    (d = d_c * f / f_c); /diagnostics says where the metric scale comes from."""
    image = hazy_rgb(7)
    depths = []
    for focal_scale in (1.0, 2.0):
        header = raw_node.header()
        info = make_camera_info(header)
        info.k = [FX * focal_scale, 0.0, CX, 0.0, FY * focal_scale, CY, 0.0, 0.0, 1.0]
        info.p = [
            FX * focal_scale,
            0.0,
            CX,
            0.0,
            0.0,
            FY * focal_scale,
            CY,
            0.0,
            0.0,
            0.0,
            1.0,
            0.0,
        ]
        for _ in range(3):  # the node keeps the newest camera_info: let this one arrive first
            raw_node.info_pub.publish(info)
            raw_node.probe.spin_for(0.2)
        outputs = raw_node.send_until_processed(
            numpy_to_image(image, "rgb8", header), camera_info=info, wanted=("depth/image",)
        )
        depths.append(image_to_numpy(outputs["depth/image"]))
    finite = np.isfinite(depths[0]) & np.isfinite(depths[1])
    assert finite.mean() > 0.5
    np.testing.assert_allclose(depths[1][finite], 2.0 * depths[0][finite], rtol=1e-4)
    values = raw_node.diagnostics_after(lambda values: values["metric scale from"] != "n/a")
    # No camera_height_m: the network's own metres, through camera_info's focal length.
    assert values["metric scale from"] == "learned only (camera_info focal length)"
    assert values["depth scale source"] == "learned"


def test_without_camera_info_metric_depth_rests_on_the_assumed_field_of_view(
    ros_context, checkpoint
):
    node = DehazeNodeHarness(
        ros_context,
        "/io_no_info",
        ["-p", f"checkpoint:={checkpoint}", "-p", "default_hfov_deg:=90"],
        subscribe=("depth/image",),
    )
    try:
        node.wait_until_ready()
        msg = numpy_to_image(hazy_rgb(7), "rgb8", node.header())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not node.outputs_for(stamp_of(msg)):
            node.image_pub.publish(msg)  # no camera_info at all
            node.probe.spin_until(lambda: bool(node.outputs_for(stamp_of(msg))), 1.0)
        assert node.outputs_for(stamp_of(msg)), node.process.log()[-2000:]
        values = node.diagnostics_after(lambda values: values["metric scale from"] != "n/a")
        assert (
            values["metric scale from"] == "assumed field of view (90 deg, no usable camera_info)"
        )
        assert "assumes a 90 degree field of view" in values["message"]
    finally:
        node.close()
