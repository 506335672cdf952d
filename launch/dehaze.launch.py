"""dehaze_node on a camera stream; optionally the bundled sample camera and RViz.

    ros2 launch dehaze_ros dehaze.launch.py image:=/camera/color/image_raw \\
        camera_info:=/camera/color/camera_info
    ros2 launch dehaze_ros dehaze.launch.py sample_camera:=true rviz:=true
    ros2 launch dehaze_ros dehaze.launch.py use_sim_time:=true    # with `ros2 bag play --clock`

dehaze_node is a lifecycle node that configures and activates itself (parameter `autostart`,
true in config/dehaze.yaml); set it false to hand the transitions to a lifecycle manager.
`checkpoint`, `device`, `input_transport` and `use_sim_time` override the params file only when
given on the command line; left empty they come from the params file. The sample camera always
offers `<image>/compressed` too (encoded only while someone subscribes), so it feeds the node
whichever transport the node reads. `rviz:=true` without rviz2 installed logs a warning and
starts the rest. What each node gets is decided in dehaze_ros.ros.launch_parameters (plain Python,
tested without launch). This file only wires things up: no computation.
"""

from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from dehaze_ros.ros.launch_parameters import (
    dehaze_node_parameters,
    launch_flag,
    rviz_decision,
    sample_camera_parameters,
    sim_time_parameter,
)
from launch import LaunchDescription

PACKAGE = "dehaze_ros"

# name: (default, description)
ARGUMENTS = {
    "image": (
        "image",
        "Input image topic (sensor_msgs/Image; with input_transport:=compressed "
        "the node reads <image>/compressed).",
    ),
    "camera_info": (
        "camera_info",
        "Input CameraInfo topic (needed for `points` and `anchor_points`).",
    ),
    "anchor_points": (
        "anchor_points",
        "Metric points (sensor_msgs/PointCloud2 of a LiDAR, radar or depth camera) that fix "
        "the depth's metres; optional.",
    ),
    "namespace": ("", "Namespace of the nodes (and of their output topics)."),
    "params_file": (
        PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "dehaze.yaml"]),
        "dehaze_node parameters (YAML).",
    ),
    "checkpoint": (
        "",
        "Checkpoint path; empty = from params_file (whose empty value means the "
        "checkpoint shipped with the package, DCP fallback when there is none).",
    ),
    "device": ("", "auto, cpu, cuda or cuda:N; empty = from params_file."),
    "input_transport": (
        "",
        "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage); "
        "empty = from params_file.",
    ),
    "use_sim_time": (
        "",
        "true: every node follows /clock (`ros2 bag play --clock`); "
        "empty = from params_file (false unless it says so).",
    ),
    "sample_camera": (
        "false",
        "Also start the sample hazy camera, publishing on `image` "
        "(and `image`/compressed) and `camera_info`.",
    ),
    "rviz": (
        "false",
        "Also open RViz with config/dehaze.rviz (fixed frame camera_optical_frame); "
        "without rviz2 installed: a warning, and the rest starts.",
    ),
}


def package_installed(name: str) -> bool:
    try:
        get_package_prefix(name)
    except PackageNotFoundError:
        return False
    return True


def typed(parameters: list) -> list:
    """A parameters list for launch_ros: files stay paths; strings get value_type=str, so that a
    path or a device name reaches the node as the string it is, never YAML-converted."""
    return [
        entry
        if isinstance(entry, str)
        else {
            name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
            for name, value in entry.items()
        }
        for entry in parameters
    ]


def start_nodes(context):
    """The nodes, from the performed values of the arguments (plain strings)."""
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    topic_remappings = [
        ("image", values["image"]),
        ("camera_info", values["camera_info"]),
        ("anchor_points", values["anchor_points"]),
    ]
    namespace = values["namespace"]
    sim_time = sim_time_parameter(values)

    actions = [
        LifecycleNode(
            package=PACKAGE,
            executable="dehaze_node",
            name="dehaze_node",
            namespace=namespace,
            output="screen",
            parameters=typed(dehaze_node_parameters(values)),
            remappings=topic_remappings,
        )
    ]
    if launch_flag("sample_camera", values["sample_camera"]):
        actions.append(
            Node(
                package=PACKAGE,
                executable="sample_camera",
                name="sample_camera",
                namespace=namespace,
                output="screen",
                remappings=topic_remappings,
                parameters=typed(sample_camera_parameters(values)),
            )
        )
    start_rviz, warning = rviz_decision(values, package_installed("rviz2"))
    if warning:
        get_logger("dehaze.launch").warning(warning)
    if start_rviz:
        # RViz runs in the same namespace with the same remappings, so the relative topic names
        # in dehaze.rviz find the node's outputs and the remapped input.
        rviz_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "dehaze.rviz"])
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=namespace,
                arguments=["-d", rviz_config],
                remappings=topic_remappings,
                parameters=[sim_time] if sim_time else [],
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=start_nodes)])
