"""pytest fixtures shared by the test modules; the DDS environment is set before rclpy loads."""

from __future__ import annotations

import pytest

from ros_helpers import NodeProcess, RosProbe, configure_dds_environment

configure_dds_environment()


@pytest.fixture(scope="session")
def ros_context():
    rclpy = pytest.importorskip(
        "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
    )
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def probe(ros_context, request):
    ros_probe = RosProbe(ros_context, f"probe_{abs(hash(request.node.name)) % 10**8}")
    yield ros_probe
    ros_probe.destroy()


@pytest.fixture
def start_node():
    """Factory: start_node(module, ros_args, name) -> NodeProcess; all stopped after the test."""
    started: list[NodeProcess] = []

    def start(module: str, ros_args: list[str], name: str = "node") -> NodeProcess:
        process = NodeProcess(module, ros_args, name)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one CPU thread for a module (`pytestmark = pytest.mark.usefixtures(...)`).

    Tiny networks gain nothing from threads, and on a shared 2-core machine a second OpenMP
    thread that spins while another process holds the core made a training step 100x slower.
    """
    import torch  # here: the ROS-only test modules need not load torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Test tiers. `make test` runs everything; `make test-fast` leaves out the two slow tiers:
#   ros       starts ROS 2 processes and talks to them over DDS (node, camera, demo, bags)
#   training  trains networks for real steps (the loop, torchrun, the GPU campaign's dry run)
# A test joins a tier by the module it lives in (named after what it tests), or by using a fixture
# that starts ROS, so a new test lands in the right tier without anyone remembering a marker.
# test_gpu_check: the GPU check's dry run starts the demo's node and camera (and exports a graph).
ROS_MODULE_PREFIXES = (
    "test_node_demo",
    "test_node_io",
    "test_node_lifecycle",
    "test_node_sample_camera",
    "test_node_visibility",
    "test_process_bag",
    "test_gpu_check",
)
TRAINING_MODULE_PREFIXES = ("test_training", "test_gpu_campaign")
ROS_FIXTURES = {"ros_context", "probe", "start_node"}


def pytest_configure(config):
    config.addinivalue_line("markers", "ros: starts ROS 2 processes over DDS (slow tier)")
    config.addinivalue_line("markers", "training: trains networks for real steps (slow tier)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.stem
        if module.startswith(ROS_MODULE_PREFIXES) or ROS_FIXTURES & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.ros)
        if module.startswith(TRAINING_MODULE_PREFIXES):
            item.add_marker(pytest.mark.training)
