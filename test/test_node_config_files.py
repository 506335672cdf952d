"""config/dehaze.yaml, launch/dehaze.launch.py and config/dehaze.rviz agree with the node.

The file checks read the files (they run everywhere); the params-file check starts the node and
lets rcl parse the YAML; the LaunchDescription is built where launch_ros is installed.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import re
from pathlib import Path

import pytest
import yaml

from dehaze_ros.ros.frame_outputs import OUTPUTS
from dehaze_ros.ros.launch_parameters import (
    NODE_PARAMETER_ARGUMENTS,
    dehaze_node_parameters,
    rviz_decision,
    sample_camera_parameters,
)
from dehaze_ros.ros.node_config import PARAMETERS, SPECS, parameters_yaml

ROOT = Path(__file__).resolve().parents[1]
YAML_PATH = ROOT / "config" / "dehaze.yaml"
LAUNCH_PATH = ROOT / "launch" / "dehaze.launch.py"
RVIZ_PATH = ROOT / "config" / "dehaze.rviz"
NODE_SOURCE = ROOT / "dehaze_ros" / "ros" / "dehaze_node.py"


def same_value(a, b) -> bool:
    """Equal, NaN included: camera_pitch_deg defaults to NaN (unknown), and NaN != NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def yaml_parameters() -> dict:
    document = yaml.safe_load(YAML_PATH.read_text())
    assert list(document) == ["/**"], "parameters must apply to the node under any name: `/**:`"
    return document["/**"]["ros__parameters"]


def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_PATH.read_text())


def launch_arguments() -> dict:
    """The launch file's ARGUMENTS table: name -> default (literal defaults only)."""
    for node in ast.walk(launch_tree()):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            table = {}
            for key, value in zip(node.value.keys, node.value.values):
                default = value.elts[0]
                table[ast.literal_eval(key)] = (
                    ast.literal_eval(default) if isinstance(default, ast.Constant) else None
                )
            return table
    raise AssertionError("launch file has no ARGUMENTS table")


def test_yaml_and_readme_agree_with_the_parameter_and_output_tables():
    # The table in node_config is the one source; these are the two copies people read.
    assert YAML_PATH.read_text() == parameters_yaml(), (
        "config/dehaze.yaml differs from the parameter table; regenerate it (see "
        "node_config.parameters_yaml)"
    )
    values = yaml_parameters()
    assert list(values) == [spec.name for spec in PARAMETERS]
    assert all(type(values[spec.name]) is type(spec.default) for spec in PARAMETERS)

    readme = (ROOT / "README.md").read_text()
    rows = {
        match.group(1): match
        for match in re.finditer(r"^\| `(\w+)` \| `([^`]*)` \| (\w+) \|", readme, re.MULTILINE)
    }
    for spec in PARAMETERS:
        assert spec.name in rows, f"README parameter table has no row for {spec.name}"
        default = yaml.safe_load(rows[spec.name].group(2))
        assert same_value(default, spec.default), (
            f"README says {spec.name} defaults to {default!r}, the node {spec.default!r}"
        )
        assert rows[spec.name].group(3) == spec.stage, f"README gives {spec.name} the wrong stage"
    topics = dict(re.findall(r"^\| `([\w/]+)` \| (\w+/\w+) \| out \|", readme, re.MULTILINE))
    for output in OUTPUTS:
        package, _, name = output.message_type.split("/")
        assert topics.get(output.topic) == f"{package}/{name}", (
            f"README topic table: {output.topic}"
        )


def launch_defaults() -> dict[str, str]:
    """The values the launch file's OpaqueFunction sees when no argument is given."""
    values = launch_arguments()
    assert values["params_file"] is None  # a substitution: the installed config/dehaze.yaml
    return dict(values, params_file=str(YAML_PATH))


def test_launch_node_arguments_are_declared_parameters_left_to_the_params_file_by_default():
    arguments = launch_arguments()
    for name in NODE_PARAMETER_ARGUMENTS:
        assert name in SPECS, f"launch sets {name!r}, which dehaze_node does not declare"
        # Issue 27: launch defaults applied after params_file overrode the user's file.
        assert arguments.get(name) == "", f"launch argument {name!r} must default to '' (not given)"
    assert arguments["use_sim_time"] == ""
    assert set(arguments) - set(NODE_PARAMETER_ARGUMENTS) == {
        "image",
        "camera_info",
        "anchor_points",
        "namespace",
        "params_file",
        "use_sim_time",
        "sample_camera",
        "rviz",
    }
    # Nothing given: the params file alone, for every node.
    assert dehaze_node_parameters(launch_defaults()) == [str(YAML_PATH)]
    assert sample_camera_parameters(launch_defaults()) == [{"publish_compressed": True}]


def test_launch_overrides_only_what_was_given():
    given = dict(launch_defaults(), device="cuda:1", input_transport="compressed")
    assert dehaze_node_parameters(given) == [
        str(YAML_PATH),
        {"device": "cuda:1", "input_transport": "compressed"},
    ]
    sim = dict(launch_defaults(), use_sim_time="True")
    assert dehaze_node_parameters(sim) == [str(YAML_PATH), {"use_sim_time": True}]
    assert sample_camera_parameters(sim) == [{"publish_compressed": True, "use_sim_time": True}]
    assert dehaze_node_parameters(dict(sim, use_sim_time="false"))[1] == {"use_sim_time": False}
    with pytest.raises(ValueError, match="use_sim_time must be true or false, got 'yes'"):
        dehaze_node_parameters(dict(sim, use_sim_time="yes"))


def test_launch_sample_camera_offers_what_the_node_may_read():
    from dehaze_ros.sim.sample_camera import CAMERA_PARAMETERS

    for parameters in sample_camera_parameters(launch_defaults()):
        assert set(parameters) <= set(CAMERA_PARAMETERS) | {"use_sim_time"}
    # The camera publishes raw always and compressed when enabled: a third transport needs both.
    assert set(SPECS["input_transport"].choices) == {"raw", "compressed"}


def test_launch_without_rviz2_starts_the_rest_with_a_warning():
    values = launch_defaults()
    assert rviz_decision(values, rviz_installed=False) == (False, None)
    assert rviz_decision(dict(values, rviz="true"), rviz_installed=True) == (True, None)
    start, warning = rviz_decision(dict(values, rviz="true"), rviz_installed=False)
    assert not start and "rviz2 is not installed" in warning and "starting without" in warning
    with pytest.raises(ValueError, match="launch argument rviz must be true or false"):
        rviz_decision(dict(values, rviz="maybe"), rviz_installed=True)


def test_launch_remaps_exactly_the_topics_the_node_subscribes():
    source = NODE_SOURCE.read_text()
    for topic in ("image", "camera_info", "anchor_points"):
        assert re.search(rf'create_subscription\([^)]*"{topic}"', source), topic
    # The LifecycleNode's remappings: from the node's input names to the launch arguments of
    # the same names (read from the launch file's syntax tree, not its formatting).
    tree = launch_tree()
    node_call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "LifecycleNode"
    )
    remappings = next(kw.value for kw in node_call.keywords if kw.arg == "remappings")
    if isinstance(remappings, ast.Name):  # a variable assigned above
        remappings = next(
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == remappings.id
        )
    pairs = {}
    for item in remappings.elts:
        source, target = item.elts
        assert isinstance(target, ast.Subscript), ast.unparse(item)
        pairs[ast.literal_eval(source)] = ast.literal_eval(target.slice)
    assert pairs == {
        "image": "image",
        "camera_info": "camera_info",
        "anchor_points": "anchor_points",
    }
    assert {"image", "camera_info", "anchor_points"} <= set(launch_arguments())


def test_rviz_shows_the_input_and_the_node_outputs_in_the_camera_frame():
    config = yaml.safe_load(RVIZ_PATH.read_text())
    manager = config["Visualization Manager"]
    topics = {
        display["Topic"]["Value"]: display for display in manager["Displays"] if "Topic" in display
    }
    assert set(topics) == {"image", "dehazed/image", "depth/colormap", "points"}
    assert topics["points"]["Color Transformer"] == "RGB8"
    assert topics["image"]["Topic"]["Reliability Policy"] == "Best Effort"  # matches camera QoS
    from dehaze_ros.sim.sample_camera import CAMERA_PARAMETERS

    assert manager["Global Options"]["Fixed Frame"] == CAMERA_PARAMETERS["frame_id"][0]


def test_launch_description_builds():
    pytest.importorskip(
        "launch_ros",
        reason="launch_ros is not installed here (it is on a ROS 2 "
        "install); the file checks above still ran",
    )
    from launch.actions import DeclareLaunchArgument

    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location("dehaze_launch", LAUNCH_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    declared = {
        entity.name for entity in description.entities if isinstance(entity, DeclareLaunchArgument)
    }
    assert declared == set(launch_arguments())


def test_params_file_loads_into_the_node(ros_context, start_node, probe):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.srv import DescribeParameters, GetParameters
    from rclpy.parameter import parameter_value_to_python

    # model:=dcp after the file: -p wins, and configure needs no weights. The rest comes from YAML.
    node = start_node(
        "dehaze_ros.ros.dehaze_node",
        [
            "-r",
            "__ns:=/params_file",
            "--params-file",
            str(YAML_PATH),
            "-p",
            "model:=dcp",
            "-p",
            "autostart:=false",
            "-p",
            "num_threads:=1",
        ],
        name="params_file",
    )
    names = [spec.name for spec in PARAMETERS]
    response = probe.call(
        GetParameters,
        "/params_file/dehaze_node/get_parameters",
        GetParameters.Request(names=names),
        timeout=90,
    )
    loaded = {name: parameter_value_to_python(value) for name, value in zip(names, response.values)}
    expected = dict(yaml_parameters(), model="dcp", autostart=False, num_threads=1)
    assert list(loaded) == list(expected)
    assert all(same_value(loaded[name], expected[name]) for name in names), (loaded, expected)
    assert math.isnan(loaded["camera_pitch_deg"])  # `.nan` in the YAML: rcl reads YAML's NaN

    described = probe.call(
        DescribeParameters,
        "/params_file/dehaze_node/describe_parameters",
        DescribeParameters.Request(names=names),
    ).descriptors
    for spec, descriptor in zip(PARAMETERS, described):
        assert descriptor.description == spec.description
        assert descriptor.read_only == (spec.stage == "startup"), spec.name
        if (
            isinstance(spec.default, int)
            and not isinstance(spec.default, bool)
            and spec.minimum is not None
        ):
            assert descriptor.integer_range[0].from_value == spec.minimum, spec.name
        if (
            isinstance(spec.default, float)
            and spec.minimum is not None
            and not math.isnan(spec.default)
        ):
            assert descriptor.floating_point_range[0].to_value == spec.maximum, spec.name

    request = ChangeState.Request()
    request.transition = Transition(id=Transition.TRANSITION_CONFIGURE)
    assert probe.call(ChangeState, "/params_file/dehaze_node/change_state", request).success
    state = probe.call(
        GetState, "/params_file/dehaze_node/get_state", GetState.Request()
    ).current_state
    assert state.id == State.PRIMARY_STATE_INACTIVE
    assert node.alive


def ros_args(parameters: list) -> list[str]:
    """A launch `parameters` list as the command line launch_ros makes of it."""
    args = []
    for entry in parameters:
        if isinstance(entry, str):
            args += ["--params-file", entry]
            continue
        for name, value in entry.items():
            args += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    return args


def test_launched_sample_camera_feeds_a_node_whose_params_file_says_compressed(
    start_node, probe, tmp_path
):
    # Issue 27: with sample_camera:=true the node read `<image>/compressed` and the camera never
    # published it. Here the params file, not a launch argument, asks for compressed input: the
    # launch file cannot see that, and neither may it override the file with a default.
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    from sensor_msgs.msg import Image

    params_file = tmp_path / "user.yaml"
    params_file.write_text(
        YAML_PATH.read_text().replace('input_transport: "raw"', 'input_transport: "compressed"')
    )
    values = dict(launch_defaults(), params_file=str(params_file))
    # What the launch file passes to each node, with its remappings, in one namespace.
    remaps = ["-r", "__ns:=/launch_compressed", "-r", "image:=camera/image_raw"]
    node = start_node(
        "dehaze_ros.ros.dehaze_node",
        [
            *remaps,
            *ros_args(dehaze_node_parameters(values)),
            "-p",
            "model:=dcp",
            "-p",
            "num_threads:=1",
        ],
        name="launch_node",
    )
    camera = start_node(
        "dehaze_ros.sim.sample_camera",
        [
            *remaps,
            *ros_args(sample_camera_parameters(values)),
            "-p",
            "width:=96",
            "-p",
            "height:=64",
            "-p",
            "prerender_frames:=2",
        ],
        name="launch_camera",
    )
    dehazed = probe.record(Image, "/launch_compressed/dehazed/image")
    assert probe.spin_until(lambda: len(dehazed) >= 2, 90), f"{node.log()}\n{camera.log()}"

    response = probe.call(
        GetParameters,
        "/launch_compressed/dehaze_node/get_parameters",
        GetParameters.Request(names=["input_transport"]),
    )
    assert parameter_value_to_python(response.values[0]) == "compressed"
    # The node got frames, so the camera publishes them; this process's own graph view of the
    # camera may still lag behind the node's discovery of it.
    assert probe.spin_until(
        lambda: probe.node.count_publishers("/launch_compressed/camera/image_raw/compressed") == 1,
        20,
    )
