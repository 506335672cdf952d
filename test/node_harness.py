"""dehaze_node under test: a node process, small frames with known intrinsics, every output recorded.

Imports ROS messages at the top, so only the node test modules import it (conftest.py does not).
"""

from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dehaze_ros.image_conversion import rgb8_to_encoding
from ros_helpers import NodeProcess, RosProbe, latest_diagnostics, stamp_of

WIDTH, HEIGHT = 160, 120
FX, FY, CX, CY = 120.0, 118.0, 79.5, 59.5
DECIMATION = 2
OUTPUT_TOPICS = {
    "dehazed/image": Image,
    "dehazed/camera_info": CameraInfo,
    "depth/image": Image,
    "depth/camera_info": CameraInfo,
    "depth/colormap": Image,
    "points": PointCloud2,
}


def hazy_rgb(seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rng = np.random.default_rng(seed)
    base = np.dstack([x * 1.5, y * 2.0, (x + y) * 0.8]) + rng.normal(0, 6, (HEIGHT, WIDTH, 3))
    return np.clip(base * 0.6 + 90, 0, 255).astype(np.uint8)  # low contrast, bright: hazy-looking


def frame_in(encoding: str, rgb: np.ndarray) -> np.ndarray:
    """The test image in any supported camera encoding."""
    if encoding == "mono16":
        return rgb8_to_encoding(rgb, "mono8").astype(np.uint16) * 257
    return rgb8_to_encoding(rgb, encoding)


def make_camera_info(header) -> CameraInfo:
    info = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model="plumb_bob")
    info.header = header
    info.d = [0.0] * 5
    info.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class DehazeNodeHarness:
    """A dehaze_node process plus this process's publishers and recorders in its namespace."""

    def __init__(
        self,
        context,
        namespace: str,
        extra_args: list[str],
        compressed: bool = False,
        subscribe=tuple(OUTPUT_TOPICS),
    ):
        """``subscribe``: the outputs this process listens to (the node skips work for the rest)."""
        self.namespace = namespace
        self.diagnostics_name = f"{namespace}/dehaze_node"  # its /diagnostics status names start so
        self.process = NodeProcess(
            "dehaze_ros.dehaze_node",
            [
                "-r",
                f"__ns:={namespace}",
                "-p",
                "num_threads:=1",
                "-p",
                "warmup:=0",
                "-p",
                f"point_decimation:={DECIMATION}",
                "-p",
                "diagnostics_period:=0.5",
                *extra_args,
            ],
            name=namespace.strip("/"),
        )
        self.probe = RosProbe(context, f"probe_{namespace.strip('/')}")
        self.compressed = compressed
        image_type, image_topic = (
            (CompressedImage, f"{namespace}/image/compressed")
            if compressed
            else (Image, f"{namespace}/image")
        )
        self.image_pub = self.probe.publisher(image_type, image_topic)
        self.info_pub = self.probe.publisher(CameraInfo, f"{namespace}/camera_info")
        self.outputs = {
            topic: self.probe.record(msg_type, f"{namespace}/{topic}")
            for topic, msg_type in OUTPUT_TOPICS.items()
            if topic in subscribe
        }
        self.diagnostics = self.probe.record(DiagnosticArray, "/diagnostics", depth=20)
        self.next_stamp = 1000

    def wait_until_ready(self, timeout: float = 90.0) -> None:
        ready = self.probe.spin_until(
            lambda: (
                (
                    self.image_pub.get_subscription_count() > 0
                    and self.info_pub.get_subscription_count() > 0
                    and self.probe.node.count_publishers(f"{self.namespace}/points") > 0
                )
                or not self.process.alive
            ),
            timeout,
        )
        assert self.process.alive, f"dehaze_node exited:\n{self.process.log()}"
        assert ready, f"dehaze_node not active after {timeout} s:\n{self.process.log()}"

    def header(self, frame_id: str = "camera_optical_frame"):
        header = Image().header
        self.next_stamp += 1
        header.stamp.sec, header.stamp.nanosec = self.next_stamp, 123_000
        header.frame_id = frame_id
        return header

    def outputs_for(self, stamp) -> dict:
        found = {}
        for topic, records in self.outputs.items():
            for _, msg in reversed(records):
                if stamp_of(msg) == stamp:
                    found[topic] = msg
                    break
        return found

    def send_until_processed(
        self,
        msg,
        wanted=("dehazed/image",),
        timeout: float = 30.0,
        camera_info: CameraInfo | None = None,
    ) -> dict:
        """Publish (again every second: best effort may drop one) until the outputs arrive.
        ``camera_info`` goes with the frame (restamped); default: make_camera_info."""
        stamp = stamp_of(msg)
        deadline = time.monotonic() + timeout
        if camera_info is None:
            camera_info = make_camera_info(msg.header)
        camera_info.header = msg.header
        self.hold_camera_info(camera_info)  # also after a cleanup, which forgets it
        while time.monotonic() < deadline:
            # The node pairs a frame with the newest camera_info it holds, and two topics do not
            # keep their order across DDS: give the info a head start over the frame.
            self.info_pub.publish(camera_info)
            self.probe.spin_for(0.05)
            self.image_pub.publish(msg)
            if self.probe.spin_until(lambda: set(wanted) <= set(self.outputs_for(stamp)), 1.0):
                self.probe.spin_for(0.3)  # the other outputs of the same frame
                return self.outputs_for(stamp)
        raise AssertionError(
            f"no {wanted} for stamp {stamp} within {timeout} s; node log:\n"
            f"{self.process.log()[-3000:]}"
        )

    def hold_camera_info(self, camera_info: CameraInfo, timeout: float = 15.0) -> None:
        """Publish ``camera_info`` until the active node's /diagnostics stop saying it has none
        (some camera_info, not necessarily this one: the head start in send_until_processed is
        for that).

        A best-effort reader drops what a writer sends before the reader has discovered it, even
        when the writer already counts the reader as matched; the node pairs each frame with the
        newest camera_info it holds, so a frame sent right after a lost first camera_info would be
        processed with the assumed field of view."""
        prefix = self.diagnostics_name
        start = len(self.diagnostics)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.info_pub.publish(camera_info)
            if self.probe.spin_until(
                lambda: (
                    (values := latest_diagnostics(self.diagnostics[start:], prefix)) is not None
                    and values["state"] == "active"  # the line below is only written when active
                    and "no camera_info received" not in values["message"]
                ),
                0.2,
            ):
                return
        raise AssertionError(
            f"the node never reported holding a camera_info within {timeout} s; node log:\n"
            f"{self.process.log()[-3000:]}"
        )

    def send_until_counted(self, msg, counter: str, timeout: float = 20.0) -> dict:
        """Publish ``msg`` (again while best effort loses it) until the /diagnostics counter
        ``counter`` has grown; the diagnostics that show it."""
        prefix = self.diagnostics_name
        before = int(self.diagnostics_after(lambda values: True)[counter])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.image_pub.publish(msg)
            if self.probe.spin_until(
                lambda: (
                    (values := latest_diagnostics(self.diagnostics, prefix)) is not None
                    and int(values[counter]) > before
                ),
                1.5,
            ):
                break
        return self.diagnostics_after(lambda values: int(values[counter]) > before)

    def set_parameter(self, name: str, value):
        """SetParameters over the node's service, with the ROS type of the Python value."""
        kinds = {
            bool: (ParameterType.PARAMETER_BOOL, "bool_value"),
            int: (ParameterType.PARAMETER_INTEGER, "integer_value"),
            float: (ParameterType.PARAMETER_DOUBLE, "double_value"),
            str: (ParameterType.PARAMETER_STRING, "string_value"),
        }
        kind, field = kinds[type(value)]
        parameter_value = ParameterValue(type=kind)
        setattr(parameter_value, field, value)
        request = SetParameters.Request(parameters=[Parameter(name=name, value=parameter_value)])
        return self.probe.call(
            SetParameters, f"{self.namespace}/dehaze_node/set_parameters", request
        ).results[0]

    def diagnostics_after(self, predicate, timeout: float = 15.0) -> dict:
        prefix = self.diagnostics_name
        ok = self.probe.spin_until(
            lambda: (
                (values := latest_diagnostics(self.diagnostics, prefix)) is not None
                and predicate(values)
            ),
            timeout,
        )
        values = latest_diagnostics(self.diagnostics, prefix)
        assert ok, f"diagnostics never matched; last: {values}"
        return values

    def close(self) -> None:
        self.process.stop()
        self.probe.destroy()
