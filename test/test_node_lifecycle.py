"""dehaze_node's lifecycle and parameters, driven from this process through the real services
(~/change_state, ~/get_state, ~/set_parameters), with the node in its own process."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip(
    "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
)
pytest.importorskip(
    "dehaze_ros.models", reason="dehaze_ros.models is needed for the test checkpoint"
)

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters

from dehaze_ros.ros.image_conversion import numpy_to_image
from node_harness import DehazeNodeHarness, frame_in, hazy_rgb
from ros_helpers import REPO_ROOT, child_env, write_tiny_checkpoint


def change_state(node: DehazeNodeHarness, transition_id: int) -> bool:
    request = ChangeState.Request()
    request.transition = Transition(id=transition_id)
    return node.probe.call(
        ChangeState, f"{node.namespace}/dehaze_node/change_state", request
    ).success


def get_state(node: DehazeNodeHarness) -> int:
    return node.probe.call(
        GetState, f"{node.namespace}/dehaze_node/get_state", GetState.Request()
    ).current_state.id


def set_parameter(node: DehazeNodeHarness, name: str, value):
    return node.set_parameter(name, value)


def frame_message(node: DehazeNodeHarness):
    return numpy_to_image(frame_in("rgb8", hazy_rgb()), "rgb8", node.header())


def wait_for_services(node: DehazeNodeHarness) -> None:
    assert node.probe.spin_until(
        lambda: node.probe.node.count_publishers("/diagnostics") > 0 or not node.process.alive, 90
    ), node.process.log()
    assert node.process.alive, node.process.log()


@pytest.fixture
def checkpoint(tmp_path):
    return write_tiny_checkpoint(tmp_path / "tiny.pt")


@pytest.fixture
def harness_factory(ros_context):
    made = []

    def make(namespace, args):
        harness = DehazeNodeHarness(ros_context, namespace, args)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def test_bad_values_and_checkpoints_fail_configure_with_the_reason_then_recover(
    harness_factory, checkpoint, tmp_path
):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    missing = tmp_path / "missing" / "model.pt"
    node = harness_factory(
        "/lc_fail",
        ["-p", "autostart:=false", "-p", f"checkpoint:={missing}", "-p", "point_decimation:=500"],
    )
    wait_for_services(node)
    assert get_state(node) == State.PRIMARY_STATE_UNCONFIGURED

    # 1. A value out of range given at start-up: the node came up anyway with the default, and
    #    configure says why it fails (a live parameter: it can be set, unlike a read-only one).
    assert not change_state(node, Transition.TRANSITION_CONFIGURE)
    assert get_state(node) == State.PRIMARY_STATE_UNCONFIGURED
    values = node.diagnostics_after(lambda v: "point_decimation" in v["message"])
    assert (
        "point_decimation:=500 is not an integer in [1, 64]" in values["message"]
        and values["level"] == "2"
    )

    # 2. Fixed: now the missing checkpoint is the problem, named with its path.
    assert set_parameter(node, "point_decimation", 3).successful
    assert not change_state(node, Transition.TRANSITION_CONFIGURE)
    values = node.diagnostics_after(lambda v: "checkpoint not found" in v["message"])
    assert str(missing) in values["message"]
    assert f"checkpoint not found: {missing}" in node.process.log()

    # 3. A corrupt file: named, with what is wrong with it.
    assert set_parameter(node, "checkpoint", str(corrupt)).successful
    assert not change_state(node, Transition.TRANSITION_CONFIGURE)
    values = node.diagnostics_after(lambda v: str(corrupt) in v["message"])
    assert "could not be read" in values["message"]

    # 4. A good checkpoint: configure and activate succeed in the same process.
    assert set_parameter(node, "checkpoint", str(checkpoint)).successful
    assert change_state(node, Transition.TRANSITION_CONFIGURE)
    assert get_state(node) == State.PRIMARY_STATE_INACTIVE
    assert change_state(node, Transition.TRANSITION_ACTIVATE)
    assert get_state(node) == State.PRIMARY_STATE_ACTIVE
    node.send_until_processed(frame_message(node))
    assert node.process.alive


def test_bad_read_only_values_fall_back_to_defaults_and_the_node_still_runs(harness_factory):
    # Read-only parameters can never be set afterwards: refusing to configure over one would
    # leave the node stuck. It must run with the defaults and say, loudly, what it refused.
    node = harness_factory(
        "/lc_startup",
        [
            "-p",
            "model:=dcp",
            "-p",
            "autostart:=maybe",
            "-p",
            "input_transport:=foo",
            "-p",
            "input_reliability:=sometimes",
            "-p",
            "diagnostics_period:=0",
        ],
    )
    node.wait_until_ready()  # autostart (default true) configured and activated it
    assert get_state(node) == State.PRIMARY_STATE_ACTIVE
    refusals = (
        "autostart:='maybe' is not a boolean; using the default True",
        "input_transport:='foo' is not one of raw, compressed; using the default 'raw'",
        "input_reliability:='sometimes' is not one of best_effort, reliable; "
        "using the default 'best_effort'",
        "diagnostics_period:=0 is not a number in [0.1, 60.0]; using the default 1.0",
    )
    log_lines = node.process.log().splitlines()
    for refusal in refusals:
        lines = [line for line in log_lines if refusal in line]
        assert lines and "ERROR" in lines[0], (
            f"no ERROR line with {refusal!r}:\n{node.process.log()}"
        )

    values = node.diagnostics_after(lambda v: v["state"] == "active")
    assert values["level"] == "2" and "start-up parameters refused" in values["message"]
    for refusal in refusals:
        assert refusal in values["refused start-up parameters"]
    # The defaults are in force: raw images on `image`, best effort, processed.
    node.send_until_processed(frame_message(node))


def test_deactivate_stops_outputs_and_parameters_follow_their_stage(harness_factory, checkpoint):
    node = harness_factory("/lc_cycle", ["-p", f"checkpoint:={checkpoint}"])
    node.wait_until_ready()
    node.send_until_processed(frame_message(node), wanted=("dehazed/image", "depth/image"))

    # Configure-time parameters are refused while configured; live ones apply to the next frame.
    refused = set_parameter(node, "model", "dcp")
    assert not refused.successful and "unconfigured" in refused.reason
    assert not set_parameter(node, "point_decimation", 0).successful  # outside the declared range
    assert not set_parameter(node, "input_transport", "compressed").successful  # read-only
    assert set_parameter(node, "publish_depth", False).successful
    outputs = node.send_until_processed(frame_message(node), wanted=("dehazed/image", "points"))
    assert "depth/image" not in outputs and "depth/camera_info" not in outputs
    assert set_parameter(node, "publish_depth", True).successful

    assert change_state(node, Transition.TRANSITION_DEACTIVATE)
    assert get_state(node) == State.PRIMARY_STATE_INACTIVE
    counts = {topic: len(records) for topic, records in node.outputs.items()}
    for _ in range(10):
        node.image_pub.publish(frame_message(node))
        node.probe.spin_for(0.2)
    assert {topic: len(records) for topic, records in node.outputs.items()} == counts, (
        "an inactive node published"
    )
    assert node.diagnostics_after(lambda v: v["state"] == "inactive")["message"].startswith(
        "inactive"
    )

    assert change_state(node, Transition.TRANSITION_ACTIVATE)
    node.send_until_processed(frame_message(node))

    # cleanup frees the model; configure builds it again (publishers, QoS parameters and all).
    assert change_state(node, Transition.TRANSITION_DEACTIVATE)
    assert change_state(node, Transition.TRANSITION_CLEANUP)
    assert get_state(node) == State.PRIMARY_STATE_UNCONFIGURED
    assert set_parameter(node, "max_side", 64).successful  # allowed now: applied at configure
    assert change_state(node, Transition.TRANSITION_CONFIGURE)
    assert change_state(node, Transition.TRANSITION_ACTIVATE)
    outputs = node.send_until_processed(
        frame_message(node), wanted=("dehazed/image", "depth/image")
    )
    assert outputs["depth/image"].width == 160  # max_side shrinks the network input, not the output
    node.diagnostics_after(lambda v: v.get("max side") == "64")


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="the openvino extra is not installed"
)
def test_the_default_backend_runs_the_shipped_checkpoint_on_openvino(harness_factory):
    # No checkpoint, no backend given: the shipped checkpoint and its shipped graph on OpenVINO.
    node = harness_factory("/lc_default_backend", ["-p", "device:=cpu"])  # a GPU runner: torch
    node.wait_until_ready()
    outputs = node.send_until_processed(
        frame_message(node), wanted=("dehazed/image", "depth/image")
    )
    assert outputs["depth/image"].encoding == "32FC1"
    values = node.diagnostics_after(lambda v: v.get("backend") == "openvino")
    assert "default.onnx" in values["backend choice"] and values["depth units"] == "meters"


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="the openvino extra is not installed"
)
def test_ctrl_c_after_openvino_engines_were_rebuilt_ends_the_node_cleanly(harness_factory):
    # Each configure builds an engine, and OpenVINO's CPU plugin changes the thread's alternate
    # signal stack, on which Python's Ctrl-C handler runs. The node never holds two engines at
    # once; the overlapping case that crashed is test_openvino's child-process test.
    node = harness_factory("/lc_ov_signal", ["-p", "device:=cpu"])
    node.wait_until_ready()
    for _ in range(2):
        for transition in (
            Transition.TRANSITION_DEACTIVATE,
            Transition.TRANSITION_CLEANUP,
            Transition.TRANSITION_CONFIGURE,
            Transition.TRANSITION_ACTIVATE,
        ):
            assert change_state(node, transition)
    node.send_until_processed(frame_message(node), wanted=("dehazed/image",))
    node.process.process.send_signal(signal.SIGINT)
    assert node.process.process.wait(timeout=30) == 0, node.process.log()
    log = node.process.log()
    assert "backend openvino" in log, log
    for problem in ("ERROR", "Traceback", "Segmentation", "KeyboardInterrupt"):
        assert problem not in log, log


def test_dcp_relative_depth_policy_and_no_input_warning(harness_factory):
    node = harness_factory("/lc_dcp", ["-p", "model:=dcp"])
    node.wait_until_ready()
    # Nothing published yet: diagnostics say so plainly.
    values = node.diagnostics_after(lambda v: "NO INPUT" in v["message"], timeout=120)
    assert "/lc_dcp/image" in values["message"] and values["level"] == "1"

    # Relative depth: colormap yes, metric topics no (by default).
    outputs = node.send_until_processed(
        frame_message(node), wanted=("dehazed/image", "depth/colormap")
    )
    node.probe.spin_for(1.0)
    assert "depth/image" not in outputs and "points" not in outputs
    assert not node.outputs["depth/image"] and not node.outputs["points"]
    values = node.diagnostics_after(lambda v: "RELATIVE" in v["message"])
    assert values["depth units"] == "relative" and values["model"] == "dcp"

    # Opt in: the relative values are published, and say so.
    assert set_parameter(node, "publish_relative_depth", True).successful
    outputs = node.send_until_processed(frame_message(node), wanted=("depth/image", "points"))
    assert outputs["depth/image"].encoding == "32FC1"
    node.diagnostics_after(lambda v: "unitless" in v["message"])


def test_shutdown_transition_from_active_ends_the_process_with_status_0(
    harness_factory, checkpoint
):
    # Issue 10: after shutdown the node sat in "finalized", reporting OK, and never exited.
    node = harness_factory("/lc_shutdown", ["-p", f"checkpoint:={checkpoint}"])
    node.wait_until_ready()
    node.send_until_processed(frame_message(node))
    assert change_state(node, Transition.TRANSITION_ACTIVE_SHUTDOWN)  # the reply arrives first
    assert node.process.process.wait(timeout=120) == 0
    log = node.process.log()
    assert "shutdown: finalized" in log
    for problem in ("ERROR", "Traceback", "Failed", "Exception ignored"):
        assert problem not in log, log


def test_integers_are_accepted_for_float_parameters(harness_factory):
    # Issue 10: `ros2 param set /dehaze_node colormap_max_m 20` sends an INTEGER, which rclpy
    # refused ("Wrong parameter type, expected '3' got '2'") before the node saw it.
    node = harness_factory(
        "/lc_types", ["-p", "model:=dcp", "-p", "autostart:=false", "-p", "colormap_min_m:=1"]
    )  # an integer at start-up
    wait_for_services(node)
    result = set_parameter(node, "colormap_max_m", 20)
    assert result.successful, result.reason
    response = node.probe.call(
        GetParameters,
        "/lc_types/dehaze_node/get_parameters",
        GetParameters.Request(names=["colormap_min_m", "colormap_max_m"]),
    )
    assert [(value.type, value.double_value) for value in response.values] == [
        (ParameterType.PARAMETER_DOUBLE, 1.0),
        (ParameterType.PARAMETER_DOUBLE, 20.0),
    ]
    # Integers are numbers, still held to the range; other types are still refused.
    refused = set_parameter(node, "colormap_max_m", 0)
    assert not refused.successful and "out of range" in refused.reason, refused.reason
    assert not set_parameter(node, "colormap_max_m", "far").successful
    assert change_state(node, Transition.TRANSITION_CONFIGURE)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("when", [0.5, 1.5, "active"])
def test_a_signal_at_any_phase_ends_the_node_cleanly(start_node, checkpoint, signum, when):
    # Issue 10: SIGTERM 0.5 s and 1.5 s after launch (imports, configure loading the model)
    # logged a failed transition, a rosout error and an Executor.__del__ traceback; SIGINT did
    # not. Both must end the process with status 0 and nothing alarming in its output.
    process = start_node(
        "dehaze_ros.ros.dehaze_node",
        ["-r", "__ns:=/lc_signal", "-p", f"checkpoint:={checkpoint}", "-p", "num_threads:=1"],
        name="signal",
    )
    if when == "active":
        deadline = time.monotonic() + 60
        while "active: listening" not in process.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "active: listening" in process.log(), process.log()
    else:
        time.sleep(when)
    process.process.send_signal(signum)
    returncode = process.process.wait(timeout=30)
    log = process.log()
    assert returncode == 0, log
    for problem in ("ERROR", "Traceback", "Failed", "Exception ignored", "KeyboardInterrupt"):
        assert problem not in log, log


# Run in a child process: the failure this guards against is a hang.
HANDLER_INSIDE_ITSELF = r"""
import signal, sys
from dehaze_ros.ros import stop_signal

def run_with_handler_at(position):
    # The stop handler, with a second one landing between two bytecodes of its set(), at the
    # position-th bytecode: how Python runs the handler of a signal that arrives meanwhile.
    stop_signal.STOP_REQUESTED = type(stop_signal.STOP_REQUESTED)()
    target = type(stop_signal.STOP_REQUESTED).set.__code__
    seen = [0]

    def tracer(frame, event, arg):
        if frame.f_code is not target or seen[0] < 0:
            return None
        frame.f_trace_opcodes = True

        def local(frame, event, arg):
            if event == "opcode" and seen[0] >= 0:
                seen[0] += 1
                if seen[0] == position:
                    seen[0] = -1  # once, and not inside the nested call
                    stop_signal.request_stop(signal.SIGTERM, None)
            return local
        return local

    sys.settrace(tracer)
    try:
        stop_signal.request_stop(signal.SIGTERM, None)
    except KeyboardInterrupt:
        pass  # the nested handler found the stop requested already: the second-signal rule
    finally:
        sys.settrace(None)
    assert stop_signal.STOP_REQUESTED.is_set()
    return seen[0] == -1

position = 1
while run_with_handler_at(position):
    position += 1
print("positions", position - 1)
"""


def test_a_stop_signal_landing_inside_the_stop_handler_does_not_hang_it():
    # A parent killed with SIGKILL sends its children's parent-death SIGTERM once for each of its
    # exiting threads: several in a row, and Python runs each handler between two bytecodes of
    # whatever runs, the handler before it included. With threading.Event.set() (a non-reentrant
    # lock) a handler landing inside it waited for itself for ever and the node outlived its
    # parent (3 of 42 SIGKILLed demo runs, 2026-12-01). Every bytecode position of the stop
    # flag's set() is tried.
    try:
        result = subprocess.run(
            [sys.executable, "-c", HANDLER_INSIDE_ITSELF],
            env=child_env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a stop handler landing inside the stop handler hung (a lock it holds itself?)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[-1]) >= 1, result.stdout
