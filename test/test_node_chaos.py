"""dehaze_node against a client written to break it, over real DDS.

The node runs in its own process on simulated time (use_sim_time, a /clock this test publishes),
as it would behind `ros2 bag play --loop --clock`. Phase by phase the stream changes under it:
sizes and encodings mid-stream, the clock and the stamps jumping back and forward, broken
CameraInfo, a few hundred fuzzed Image and CompressedImage messages, random live parameter sets,
deactivate/activate while frames keep coming. After every phase a good frame must come out, the
node's log must hold no traceback, and its peak memory must stay bounded.
"""

from __future__ import annotations

import random
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

from builtin_interfaces.msg import Time as TimeMsg  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from dehaze_ros.image_conversion import numpy_to_compressed, numpy_to_image  # noqa: E402
from dehaze_ros.node_config import PARAMETERS  # noqa: E402
from fuzz_frames import fuzzed_image_fields  # noqa: E402
from node_harness import DehazeNodeHarness, frame_in, make_camera_info  # noqa: E402
from ros_helpers import stamp_of, write_tiny_checkpoint  # noqa: E402

# Peak resident memory of the node process. The tiny test network needs ~0.4 GB at rest; a
# frame at max_input_pixels costs ~40 bytes a pixel, and no fuzzed frame may get that far
# (sizes beyond max_input_pixels are refused before anything is allocated).
PEAK_RSS_LIMIT_MB = 1200
FUZZ_IMAGES = 300
FUZZ_COMPRESSED = 200
PARAMETER_SETS = 120


def hazy(width: int, height: int, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = np.dstack([x * 255.0 / width, y * 255.0 / height, (x + y) * 128.0 / (width + height)])
    return np.clip(base * 0.5 + 100 + rng.normal(0, 5, (height, width, 3)), 0, 255).astype(np.uint8)


class SimClock:
    """Publishes /clock at 50 Hz from a thread; ``jump`` moves it back or forward at once."""

    def __init__(self, probe):
        self.publisher = probe.node.create_publisher(Clock, "/clock", 10)
        self.now_ns = 1_000 * 10**9
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.wait(0.02):
            if self.paused.is_set():
                continue  # a paused bag: no /clock at all
            with self.lock:
                self.now_ns += 20_000_000
                stamp = TimeMsg(sec=self.now_ns // 10**9, nanosec=self.now_ns % 10**9)
            self.publisher.publish(Clock(clock=stamp))

    def pause(self) -> None:
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()

    def jump(self, seconds: float) -> None:
        with self.lock:
            self.now_ns = max(0, self.now_ns + int(seconds * 1e9))

    def stamp(self) -> TimeMsg:
        with self.lock:
            return TimeMsg(sec=self.now_ns // 10**9, nanosec=self.now_ns % 10**9)

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=2)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


class Chaos:
    """One node under attack, and the checks made after each phase."""

    def __init__(self, harness: DehazeNodeHarness, clock: SimClock):
        self.node, self.clock = harness, clock
        self.rng = random.Random(20261207)
        self.stamp_sec = 5000

    def header(self, frame_id: str = "chaos"):
        header = Image().header
        self.stamp_sec += 1
        header.stamp.sec, header.stamp.nanosec = self.stamp_sec, 0
        header.frame_id = frame_id
        return header

    def good_frame(self, width: int = 160, height: int = 120, encoding: str = "rgb8"):
        return numpy_to_image(frame_in(encoding, hazy(width, height)), encoding, self.header())

    def good_compressed(self, width: int = 160, height: int = 120):
        return numpy_to_compressed(hazy(width, height), "rgb8", "jpeg", self.header())

    def expect_output(
        self,
        phase: str,
        msg=None,
        camera_info: CameraInfo | None = None,
        wanted=("dehazed/image", "depth/image"),
    ) -> dict:
        """A good frame goes through; the log is clean; memory is bounded."""
        node = self.node
        msg = (
            msg
            if msg is not None
            else (self.good_compressed() if node.compressed else self.good_frame())
        )
        if camera_info is None:
            width, height = (msg.width, msg.height) if isinstance(msg, Image) else (160, 120)
            camera_info = make_camera_info(msg.header)
            camera_info.width, camera_info.height = width, height
        outputs = node.send_until_processed(msg, wanted=wanted, camera_info=camera_info, timeout=40)
        assert node.process.alive, f"{phase}: the node exited:\n{node.process.log()[-3000:]}"
        log = node.process.log()
        assert "Traceback" not in log, f"{phase}: traceback in the node's log:\n{log[-4000:]}"
        peak = peak_rss_mb(node.process.process.pid)
        assert peak < PEAK_RSS_LIMIT_MB, f"{phase}: peak RSS {peak:.0f} MB"
        return outputs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def start(ros_context, checkpoint, namespace: str, compressed: bool):
    args = ["-p", f"checkpoint:={checkpoint}", "-p", "use_sim_time:=true"]
    if compressed:
        args += ["-p", "input_transport:=compressed"]
    harness = DehazeNodeHarness(ros_context, namespace, args, compressed=compressed)
    clock = SimClock(harness.probe)
    harness.wait_until_ready()
    return Chaos(harness, clock)


@pytest.fixture(scope="module")
def raw(ros_context, checkpoint):
    chaos = start(ros_context, checkpoint, "/chaos_raw", compressed=False)
    yield chaos
    chaos.clock.stop()
    chaos.node.close()


@pytest.fixture(scope="module")
def compressed(ros_context, checkpoint):
    chaos = start(ros_context, checkpoint, "/chaos_compressed", compressed=True)
    yield chaos
    chaos.clock.stop()
    chaos.node.close()


def test_sizes_and_encodings_change_mid_stream(raw):
    raw.expect_output("start")
    for width, height in [(640, 480), (1280, 720), (320, 240), (64, 48), (1242, 375), (48, 640)]:
        outputs = raw.expect_output(f"size {width}x{height}", raw.good_frame(width, height))
        assert (outputs["dehazed/image"].width, outputs["dehazed/image"].height) == (width, height)
    for encoding in ["rgb8", "mono8", "mono16", "bgra8", "bgr8", "rgba8"]:
        outputs = raw.expect_output(f"encoding {encoding}", raw.good_frame(encoding=encoding))
        assert outputs["dehazed/image"].header.frame_id == "chaos"


def test_clock_and_stamps_jump_back_and_forward(raw):
    for jump_s, stamp_jump in [(-60.0, -60), (3600.0, 86_400), (-3600.0, -86_400 * 3), (0.0, 0)]:
        raw.clock.jump(jump_s)
        raw.stamp_sec = max(1, raw.stamp_sec + stamp_jump)
        raw.expect_output(f"clock {jump_s:+g} s, stamps {stamp_jump:+d} s")
    # A zero stamp (some drivers) and the largest one a stamp can hold.
    for sec in (0, 2**31 - 1):
        msg = raw.good_frame()
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 999_999_999
        raw.stamp_sec -= 1
        raw.expect_output(f"stamp sec {sec}", msg)
    # /diagnostics still flows after the jumps, and while the clock stands still (a paused bag).
    raw.clock.pause()
    try:
        count = len(raw.node.diagnostics)
        assert raw.node.probe.spin_until(lambda: len(raw.node.diagnostics) > count + 2, 10)
        values = raw.node.diagnostics_after(lambda values: "NO INPUT" in values["message"])
        assert values["state"] == "active"
    finally:
        raw.clock.resume()
    raw.expect_output("clock running again")


def test_broken_camera_info(raw):
    nan = float("nan")
    for name, edit in [
        ("all zero", lambda info: (setattr(info, "k", [0.0] * 9), setattr(info, "p", [0.0] * 12))),
        ("NaN K", lambda info: (setattr(info, "p", [0.0] * 12), setattr(info, "k", [nan] * 9))),
        ("inf P", lambda info: setattr(info, "p", [float("inf")] * 12)),
        ("0x0 size", lambda info: (setattr(info, "width", 0), setattr(info, "height", 0))),
        (
            "size unlike the image",
            lambda info: (setattr(info, "width", 7), setattr(info, "height", 4000)),
        ),
        (
            "huge ROI",
            lambda info: (
                setattr(info.roi, "width", 2**32 - 1),
                setattr(info.roi, "height", 1),
                setattr(info.roi, "x_offset", 2**32 - 1),
            ),
        ),
        (
            "short D and odd model",
            lambda info: (setattr(info, "d", []), setattr(info, "distortion_model", "?")),
        ),
    ]:
        msg = raw.good_frame()
        info = make_camera_info(msg.header)
        edit(info)
        outputs = raw.expect_output(f"camera_info {name}", msg, camera_info=info)
        for topic in ("dehazed/camera_info", "depth/camera_info"):
            if topic in outputs:
                assert np.isfinite(np.asarray(outputs[topic].k)).all(), (name, outputs[topic].k)
    for _, cloud in raw.node.outputs["points"]:
        if cloud.is_dense:
            xyz = np.frombuffer(bytes(cloud.data), dtype=np.float32).reshape(-1, 4)[:, :3]
            assert np.isfinite(xyz).all(), "a cloud marked dense holds NaN or inf"
    raw.expect_output("calibrated again", wanted=("dehazed/image", "points"))


def fuzzed_image(rng: random.Random, header) -> Image:
    msg = Image(**fuzzed_image_fields(rng))
    msg.header = header
    return msg


def test_fuzzed_images(raw):
    before = int(raw.node.diagnostics_after(lambda values: True)["frames invalid (bad data)"])
    for count in range(FUZZ_IMAGES):
        raw.node.image_pub.publish(fuzzed_image(raw.rng, raw.header()))
        raw.node.probe.spin_for(0.01)
        if count % 50 == 49:
            raw.expect_output(f"fuzzed images, {count + 1} sent")
    values = raw.node.diagnostics_after(
        lambda values: int(values["frames invalid (bad data)"]) > before
    )
    assert values["processing thread restarts"] == "0"


def fuzzed_compressed(
    rng: random.Random, header, valid_jpeg: bytes, valid_png: bytes
) -> CompressedImage:
    msg = CompressedImage()
    msg.header = header
    kind = rng.randrange(6)
    if kind == 0:
        data = rng.randbytes(rng.randint(0, 5000))
    elif kind == 1:  # truncated
        data = valid_jpeg[: rng.randint(0, len(valid_jpeg))]
    elif kind == 2:  # bytes flipped inside a real JPEG
        data = bytearray(valid_jpeg)
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
    elif kind == 3:  # a PNG whose header claims other sizes
        data = bytearray(valid_png)
        data[16:24] = rng.randbytes(8)
        data = bytes(data)
    elif kind == 4:
        data = valid_png[: rng.randint(8, len(valid_png))]
    else:
        data = valid_jpeg
    msg.format = rng.choice(
        [
            "jpeg",
            "png",
            "rgb8; jpeg compressed bgr8",
            "bgr8; png compressed",
            "",
            "tiff",
            "mono16; png compressed",
            "compressedDepth png",
            "\x00" * 50,
        ]
    )
    msg.data = data
    return msg


def test_fuzzed_compressed_images(compressed):
    node = compressed.node
    compressed.expect_output("start")
    jpeg = bytes(numpy_to_compressed(hazy(160, 120), "rgb8", "jpeg", compressed.header()).data)
    png = bytes(numpy_to_compressed(hazy(160, 120), "rgb8", "png", compressed.header()).data)
    for count in range(FUZZ_COMPRESSED):
        node.image_pub.publish(fuzzed_compressed(compressed.rng, compressed.header(), jpeg, png))
        node.probe.spin_for(0.01)
        if count % 50 == 49:
            compressed.expect_output(f"fuzzed compressed, {count + 1} sent")
    values = node.diagnostics_after(lambda values: int(values["frames invalid (bad data)"]) > 0)
    assert values["processing thread restarts"] == "0"


def random_value(rng: random.Random, spec):
    default = spec.default
    choice = rng.randrange(5)
    if choice == 0:  # another type altogether
        return rng.choice([True, -7, 3.5, "banana", "", 10**12])
    if isinstance(default, bool):
        return rng.choice([True, False])
    if isinstance(default, int):
        return rng.choice([-1, 0, 1, 2, 64, 65, 2**31, rng.randint(-1000, 100_000)])
    if isinstance(default, float):
        return rng.choice(
            [-1.0, 0.0, 1e-9, 0.5, 50.0, 1e9, float("nan"), float("inf"), rng.uniform(-10, 1000)]
        )
    return rng.choice(
        list(spec.choices) + ["", "nonsense", "../../etc/passwd"]
        if spec.choices
        else ["", "/no/such/file.pt", "x" * 2000]
    )


def test_random_live_parameter_sets(raw):
    live = [spec for spec in PARAMETERS if spec.stage == "live"]
    others = [spec for spec in PARAMETERS if spec.stage != "live"]
    accepted = refused = 0
    for _ in range(PARAMETER_SETS):
        spec = raw.rng.choice(live if raw.rng.random() < 0.8 else others)
        value = random_value(raw.rng, spec)
        try:
            result = raw.node.set_parameter(spec.name, value)
        except KeyError:
            continue  # a Python type the harness cannot send (a value of no ROS type)
        accepted += result.successful
        refused += not result.successful
        assert result.successful or result.reason, f"{spec.name}={value!r} refused without a reason"
    assert accepted and refused
    # Back to the defaults, so the good frame below is not, say, over a tiny max_input_pixels.
    for spec in live:
        assert raw.node.set_parameter(spec.name, spec.default).successful, spec.name
    raw.expect_output("after random parameters", wanted=("dehazed/image", "depth/image", "points"))


def test_deactivate_and_activate_while_streaming(raw):
    node = raw.node
    stop = threading.Event()

    def stream():
        frame = numpy_to_image(hazy(160, 120), "rgb8")
        while not stop.wait(1 / 15):
            frame.header.stamp = raw.clock.stamp()
            node.image_pub.publish(frame)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        for cycle in range(6):
            for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
                request = ChangeState.Request(transition=Transition(id=transition))
                response = node.probe.call(
                    ChangeState, f"{node.namespace}/dehaze_node/change_state", request
                )
                assert response.success, f"cycle {cycle}: transition {transition} failed"
                node.probe.spin_for(raw.rng.uniform(0.0, 0.6))
    finally:
        stop.set()
        streamer.join(timeout=5)
    outputs = raw.expect_output("after deactivate/activate cycles")
    assert stamp_of(outputs["dehazed/image"])[0] == raw.stamp_sec


def test_malformed_serialized_messages(raw):
    """Bytes that are not valid CDR for Image / CameraInfo, as a buggy or hostile participant
    sends them (rclpy publishes a bytes object as an already serialised message): the middleware
    must drop them without the node noticing, and nothing may reach the node's callbacks."""
    from rclpy.serialization import serialize_message

    samples = [
        serialize_message(raw.good_frame(64, 48)),
        serialize_message(make_camera_info(raw.header())),
    ]
    publishers = [raw.node.image_pub, raw.node.info_pub]
    for count in range(150):
        which = count % 2
        data = bytearray(samples[which])
        kind = raw.rng.randrange(3)
        if kind == 0:
            data = data[: raw.rng.randint(0, len(data))]
        elif kind == 1:
            for _ in range(raw.rng.randint(1, 12)):
                data[raw.rng.randrange(len(data))] = raw.rng.randrange(256)
        else:
            data += raw.rng.randbytes(raw.rng.randint(1, 200))
        publishers[which].publish(bytes(data))
        raw.node.probe.spin_for(0.005)
    raw.expect_output("after malformed serialized messages")


def test_cleanup_and_configure_cycles_while_streaming(raw):
    """The model is freed and loaded again each cycle: the node must come back every time, and
    memory must not grow with the cycles (a leaked engine per configure would)."""
    node = raw.node
    service = f"{node.namespace}/dehaze_node/change_state"
    rss_after = []
    for cycle in range(4):
        for transition in (
            Transition.TRANSITION_DEACTIVATE,
            Transition.TRANSITION_CLEANUP,
            Transition.TRANSITION_CONFIGURE,
            Transition.TRANSITION_ACTIVATE,
        ):
            node.image_pub.publish(raw.good_frame())  # frames keep coming meanwhile
            response = node.probe.call(
                ChangeState, service, ChangeState.Request(transition=Transition(id=transition))
            )
            assert response.success, f"cycle {cycle}: transition {transition} failed"
        raw.expect_output(f"cleanup/configure cycle {cycle}")
        with open(f"/proc/{node.process.process.pid}/status") as status:
            rss_after.append(
                next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
            )
    assert rss_after[-1] < rss_after[0] + 100, f"RSS after each cycle (MB): {rss_after}"
