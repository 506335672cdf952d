"""Helpers for tests over real DDS: nodes in child processes, a probe node in the test process.

configure_dds_environment() runs from conftest.py before any test imports rclpy; the settings
are inherited by every child process:
* a random ROS_DOMAIN_ID per test session (1..100), so concurrent runs on one machine (other
  engineers, CI) never see each other's topics;
* discovery and data on this host only (loopback + shared memory, config/fastdds_localhost.xml),
  with room for camera-sized frames; FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA as well.
Child processes run single-threaded torch/OpenCV: the CI machine has 2 cores.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

from dehaze_ros.tools import processes

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL_LINES = 40  # of a hung node's log, shown in the warning about it


def configure_dds_environment() -> None:
    """DDS settings of the demo (dehaze_ros.tools.demo.local_dds_environment), random domain."""
    from dehaze_ros.tools.demo import local_dds_environment

    os.environ.update(local_dds_environment())
    # An explicit DEHAZE_TEST_DOMAIN_ID pins the domain (debugging with ros2 topic echo).
    domain = os.environ.get("DEHAZE_TEST_DOMAIN_ID") or str(random.SystemRandom().randint(1, 100))
    os.environ["ROS_DOMAIN_ID"] = domain


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"  # idle OpenBLAS threads busy-wait on a 2-core machine
    env["OPENCV_NUM_THREADS"] = "1"  # hint only; cv2.setNumThreads is the real switch
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    return env


class NodeProcess:
    """`python -m <module> --ros-args ...` in a child process, its output kept in a file.

    Started and stopped like the demo's nodes (dehaze_ros.tools.processes): in a session of its own,
    taken down by the kernel if the test process dies, stopped with SIGINT (a clean rclpy
    shutdown), killed if that does not end it.
    """

    def __init__(self, module: str, ros_args: list[str], name: str):
        descriptor, path = tempfile.mkstemp(prefix=f"{name}.", suffix=".log")
        os.close(descriptor)
        self.log_path = Path(path)
        self.command = [sys.executable, "-m", module, "--ros-args", *ros_args]
        self.process = processes.start(self.command, self.log_path, child_env(), cwd=REPO_ROOT)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        if not self.log_path.exists():
            return f"(log of {self.command[2]} removed when the process was stopped)"
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL if it does not exit in ``timeout``.

        The log file is removed: a test that needs it reads log() before stopping, and the
        harness puts it into its assertion messages. It is kept, with a pytest warning naming
        it and showing its tail, when the process hung and had to be killed (nothing else
        would show why), or when DEHAZE_TEST_KEEP_LOGS is set.
        """
        hung = bool(processes.stop([self.process], timeout))
        if hung and self.log_path.exists():
            tail = "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:])
            warnings.warn(
                f"{self.command[2]} did not stop within {timeout} s of SIGINT and was "
                f"killed; its log is kept at {self.log_path}. Last lines:\n{tail}",
                stacklevel=2,
            )
        elif not os.environ.get("DEHAZE_TEST_KEEP_LOGS"):
            self.log_path.unlink(missing_ok=True)
        return self.process.returncode


class RosProbe:
    """A node in the test process that publishes inputs, records outputs and calls services."""

    def __init__(self, context, name: str):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.node = Node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}

    def publisher(self, msg_type, topic: str, reliable: bool = False):
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy

        qos = QoSProfile(
            depth=1,
            reliability=QoSReliabilityPolicy.RELIABLE
            if reliable
            else QoSReliabilityPolicy.BEST_EFFORT,
        )
        return self.node.create_publisher(msg_type, topic, qos)

    def record(self, msg_type, topic: str, depth: int = 50, reliable: bool = True) -> list:
        """Subscribe and append (receive_time, msg) to the returned list. Reliable (like RViz)
        by default; a best-effort publisher (a camera) needs ``reliable=False``."""
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy

        messages = self.received.setdefault(topic, [])
        qos = QoSProfile(
            depth=depth,
            reliability=QoSReliabilityPolicy.RELIABLE
            if reliable
            else QoSReliabilityPolicy.BEST_EFFORT,
        )
        self.node.create_subscription(
            msg_type, topic, lambda msg: messages.append((time.time(), msg)), qos
        )
        return messages

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return bool(predicate())

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 20.0) -> bool:
        return self.spin_until(lambda: publisher.get_subscription_count() >= count, timeout)

    def wait_for_publishers(self, topic: str, timeout: float = 20.0) -> bool:
        return self.spin_until(lambda: self.node.count_publishers(topic) > 0, timeout)

    # Services whose request changes nothing: asking again is safe.
    READ_ONLY_SERVICES = ("Get", "Describe", "List")

    def call(self, srv_type, name: str, request, timeout: float = 20.0, resend_s: float = 10.0):
        """Call a service and return its response.

        DDS can drop the first response: the client sees the server's request reader
        (``service_is_ready``) before the server has matched the client's response reader, and
        the server's answer goes nowhere (seen once in CI: GetParameters unanswered for 90 s
        while the node was idle). A read-only request (GetParameters, GetState, Describe...,
        List...) is therefore sent again every ``resend_s`` seconds until one answer arrives. A
        request that changes state (ChangeState, SetParameters) is sent once.
        """
        client = self.node.create_client(srv_type, name)
        try:
            if not self.spin_until(client.service_is_ready, timeout):
                raise TimeoutError(f"service {name} not available after {timeout} s")
            read_only = srv_type.__name__.startswith(self.READ_ONLY_SERVICES)
            deadline = time.monotonic() + timeout
            futures = []
            while True:
                futures.append(client.call_async(request))
                remaining = deadline - time.monotonic()
                wait = min(resend_s, remaining) if read_only else remaining
                if self.spin_until(lambda: any(f.done() for f in futures), max(0.0, wait)):
                    return next(f for f in futures if f.done()).result()
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"service {name} did not answer in {timeout} s "
                        f"({len(futures)} request(s) sent)"
                    )
        finally:
            self.node.destroy_client(client)

    def destroy(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown()


def write_tiny_checkpoint(path: Path, depth_range_m: tuple[float, float] = (0.01, 1000.0)) -> Path:
    """A randomly initialised diacmpn-rt checkpoint: real networks, metric depth, tiny and fast.

    The depth range is wide by default: untrained depth lands anywhere, and the tests check
    that depth is finite metres, not that it is accurate. A range the network cannot reach
    makes every depth REP-117 out of range.
    """
    import torch

    from dehaze_ros.checkpoint import save_checkpoint
    from dehaze_ros.models import build_dehazer, build_depth_net, get_model_config

    torch.manual_seed(0)
    config = get_model_config("diacmpn-rt")
    save_checkpoint(
        path,
        model_config=config.to_dict(),
        dehazer_state=build_dehazer(config).state_dict(),
        depth_net_state=build_depth_net(config).state_dict(),
        depth_units="meters",
        depth_range_m=depth_range_m,
        provenance={"purpose": "tests: random initialisation, not trained"},
    )
    return path


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height zeros: tiny on disk, huge when decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    parts += [compressor.compress(row * (height % 1000)), compressor.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def latest_diagnostics(records: list, name_prefix: str) -> dict[str, str] | None:
    """Key/values (plus 'message', 'level') of the newest status whose name has the prefix."""
    for _, array in reversed(records):
        for status in array.status:
            if status.name.startswith(name_prefix):
                values = {kv.key: kv.value for kv in status.values}
                values["message"] = status.message
                values["level"] = str(
                    status.level[0] if isinstance(status.level, bytes) else status.level
                )
                return values
    return None
