"""dehaze_node keeps producing output: a bad frame after an uncalibrated camera, broken intrinsics,
and a processing thread that dies are each reported, and the next good frame still comes out.

The first two talk to a node process over DDS. The third runs the node in this process, so that a
failure can be injected into its processing thread (a SystemExit, which no per-frame handler
catches): the only way to make a thread die that the node itself no longer lets die.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip(
    "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
)
pytest.importorskip(
    "dehaze_ros.models", reason="dehaze_ros.models is needed for the test checkpoint"
)

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from dehaze_ros.image_conversion import image_to_numpy, numpy_to_image  # noqa: E402
from dehaze_ros.pointcloud import UNCALIBRATED  # noqa: E402
from node_harness import (
    DehazeNodeHarness,
    frame_in,
    hazy_rgb,  # noqa: E402
    make_camera_info,
)
from ros_helpers import RosProbe, latest_diagnostics, stamp_of, write_tiny_checkpoint  # noqa: E402

GOOD_FRAMES_AFTER = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def node(ros_context, checkpoint):
    harness = DehazeNodeHarness(ros_context, "/robust", ["-p", f"checkpoint:={checkpoint}"])
    harness.wait_until_ready()
    yield harness
    harness.close()


def good_frame(node: DehazeNodeHarness) -> Image:
    return numpy_to_image(frame_in("rgb8", hazy_rgb()), "rgb8", node.header())


def broken_camera_info(header, kind: str) -> CameraInfo:
    info = make_camera_info(header)
    if kind == "uncalibrated":  # what many USB cameras publish
        info.k, info.p = [0.0] * 9, [0.0] * 12
    elif kind == "nan_k":  # P zero, so K is used, and K holds NaN
        info.p = [0.0] * 12
        info.k = [float("nan"), 0.0, 79.5, 0.0, float("nan"), 59.5, 0.0, 0.0, 1.0]
    elif kind == "inf_p":
        info.p = [float("inf"), 0.0, 79.5, 0.0, 0.0, 118.0, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    elif kind == "negative_fx":
        info.k[0] = -120.0
        info.p[0] = -120.0
    elif kind == "nan_principal_point":
        info.p[2] = float("nan")
    else:
        raise ValueError(kind)
    return info


def test_a_bad_frame_after_an_uncalibrated_camera_does_not_stop_the_node(node):
    """The repro: a points subscriber and an uncalibrated camera make the node warn; a malformed
    frame then made it log an error from the same logging line, rclpy refused the changed
    severity, and the processing thread died: nothing was published again."""
    header = node.header()
    uncalibrated = broken_camera_info(header, "uncalibrated")
    node.send_until_processed(good_frame(node), camera_info=uncalibrated)  # the warning
    malformed = Image(height=480, width=640, encoding="bgr8", step=640 * 3, data=bytes(100))
    malformed.header = node.header()
    values = node.send_until_counted(malformed, "frames invalid (bad data)")
    assert "bad frame" in values["last problem"], values
    for _ in range(GOOD_FRAMES_AFTER):
        outputs = node.send_until_processed(good_frame(node), camera_info=uncalibrated, timeout=20)
        assert "dehazed/image" in outputs and "depth/image" in outputs
        assert "points" not in outputs  # no focal length, no cloud
    log = node.process.log()
    assert "Traceback" not in log, log[-3000:]
    assert "severity cannot be changed" not in log, log[-3000:]
    assert UNCALIBRATED in log and "dropped a frame from /robust/image" in log
    values = node.diagnostics_after(lambda values: values["processing thread restarts"] == "0")
    assert UNCALIBRATED in values["message"], values["message"]


@pytest.mark.parametrize("kind", ["nan_k", "inf_p", "negative_fx", "nan_principal_point"])
def test_broken_intrinsics_count_as_uncalibrated_everywhere(node, kind):
    header = node.header()
    info = broken_camera_info(header, kind)
    frame = good_frame(node)
    outputs = node.send_until_processed(
        frame, wanted=("dehazed/image", "depth/image", "depth/camera_info"), camera_info=info
    )
    node.probe.spin_for(0.5)
    outputs = node.outputs_for(stamp_of(frame))
    assert "points" not in outputs, "a cloud was built from broken intrinsics"
    for topic in ("dehazed/camera_info", "depth/camera_info"):
        published = outputs[topic]
        assert list(published.k) == [0.0] * 9 and list(published.p) == [0.0] * 12, (
            topic,
            published.k,
        )
    depth = image_to_numpy(outputs["depth/image"])
    assert np.isfinite(depth).all()  # metres from the assumed field of view, not from NaN
    values = node.diagnostics_after(lambda values: UNCALIBRATED in values["message"])
    assert values["metric scale from"].startswith("assumed field of view"), values
    # Every cloud this node ever published is finite wherever it claims to be dense.
    for _, cloud in node.outputs["points"]:
        if cloud.is_dense:
            points = np.frombuffer(bytes(cloud.data), dtype=np.float32).reshape(-1, 4)[:, :3]
            assert np.isfinite(points).all()
    # And a calibrated camera brings the cloud back.
    calibrated = node.send_until_processed(good_frame(node), wanted=("points",))
    assert calibrated["points"].width > 0 and calibrated["points"].is_dense


def test_a_processing_thread_that_dies_is_reported_as_error_and_restarted(ros_context, checkpoint):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from dehaze_ros.dehaze_node import WORKER_NAME, DehazeNode
    from diagnostic_msgs.msg import DiagnosticArray

    namespace = "/worker_death"
    dehaze = DehazeNode(
        context=ros_context,
        namespace=namespace,
        parameter_overrides=[
            Parameter("checkpoint", value=str(checkpoint)),
            Parameter("num_threads", value=1),
            Parameter("warmup", value=0),
            Parameter("diagnostics_period", value=0.3),
        ],
    )
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(dehaze)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    probe = RosProbe(ros_context, "probe_worker_death")
    try:
        dehaze.start_up()
        spinner.start()
        image_pub = probe.publisher(Image, f"{namespace}/image")
        dehazed = probe.record(Image, f"{namespace}/dehazed/image")
        diagnostics = probe.record(DiagnosticArray, "/diagnostics", depth=50)
        assert probe.spin_until(
            lambda: (
                image_pub.get_subscription_count() > 0
                and dehaze._outputs["dehazed/image"].get_subscription_count() > 0
            ),
            30,
        )

        def send_until_output(stamp_sec: int) -> bool:
            frame = numpy_to_image(hazy_rgb(), "rgb8")
            frame.header.stamp.sec = stamp_sec
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                image_pub.publish(frame)
                if probe.spin_until(
                    lambda: any(stamp_of(msg) == (stamp_sec, 0) for _, msg in dehazed), 1.0
                ):
                    return True
            return False

        assert send_until_output(1), "no output before the failure"
        original = dehaze._process_frame
        injected = threading.Event()

        def dies_once(frame, config):
            dehaze._process_frame = original  # the restarted thread processes normally
            injected.set()
            raise SystemExit("injected failure")

        dehaze._process_frame = dies_once
        first_worker = dehaze._worker
        frame = numpy_to_image(hazy_rgb(), "rgb8")
        frame.header.stamp.sec = 2
        while not injected.is_set():
            image_pub.publish(frame)
            probe.spin_for(0.2)
        first_worker.join(timeout=10)
        assert not first_worker.is_alive(), "the injected failure did not end the thread"

        name = f"{namespace}/dehaze_node"
        assert probe.spin_until(
            lambda: (
                (values := latest_diagnostics(diagnostics, name)) is not None
                and values["level"] == "2"
            ),
            10,
        ), latest_diagnostics(diagnostics, name)
        values = latest_diagnostics(diagnostics, name)
        assert (
            WORKER_NAME in values["message"] and "SystemExit: injected failure" in values["message"]
        )
        assert values["processing thread restarts"] == "1"
        assert dehaze._worker is not first_worker and dehaze._worker.is_alive()
        assert send_until_output(3), "no output after the processing thread was restarted"
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join(timeout=5)
        probe.destroy()
        dehaze.stop()
        executor.remove_node(dehaze)
        dehaze.destroy_node()
        executor.shutdown()
