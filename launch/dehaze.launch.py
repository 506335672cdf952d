"""dehaze_node on a camera stream; optionally the bundled sample camera and RViz.

    ros2 launch dehaze_ros dehaze.launch.py image:=/camera/color/image_raw \\
        camera_info:=/camera/color/camera_info
    ros2 launch dehaze_ros dehaze.launch.py sample_camera:=true rviz:=true

dehaze_node is a lifecycle node that configures and activates itself (parameter `autostart`,
true in config/dehaze.yaml); set it false to hand the transitions to a lifecycle manager.
Launch arguments override the params file. This file only wires things up: no computation.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "dehaze_ros"

# name: (default, description)
ARGUMENTS = {
    "image": ("image", "Input image topic (sensor_msgs/Image; with input_transport:=compressed "
                       "the node reads <image>/compressed)."),
    "camera_info": ("camera_info", "Input CameraInfo topic (needed for `points`)."),
    "namespace": ("", "Namespace of the nodes (and of their output topics)."),
    "params_file": (PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "dehaze.yaml"]),
                    "dehaze_node parameters (YAML)."),
    "checkpoint": ("", "Checkpoint path; empty = the checkpoint shipped with the package "
                       "(DCP fallback when there is none)."),
    "device": ("auto", "auto, cpu, cuda or cuda:N."),
    "input_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)."),
    "sample_camera": ("false", "Also start the sample hazy camera, publishing on `image`/`camera_info`."),
    "rviz": ("false", "Also open RViz with config/dehaze.rviz (fixed frame camera_optical_frame)."),
}


def generate_launch_description() -> LaunchDescription:
    config = {name: LaunchConfiguration(name) for name in ARGUMENTS}
    topic_remappings = [("image", config["image"]), ("camera_info", config["camera_info"])]

    dehaze_node = LifecycleNode(
        package=PACKAGE, executable="dehaze_node", name="dehaze_node",
        namespace=config["namespace"], output="screen",
        parameters=[
            config["params_file"],
            # value_type=str: an empty checkpoint must stay "", not become YAML null.
            {"checkpoint": ParameterValue(config["checkpoint"], value_type=str),
             "device": ParameterValue(config["device"], value_type=str),
             "input_transport": ParameterValue(config["input_transport"], value_type=str)},
        ],
        remappings=topic_remappings,
    )
    sample_camera = Node(
        package=PACKAGE, executable="sample_camera", name="sample_camera",
        namespace=config["namespace"], output="screen", remappings=topic_remappings,
        condition=IfCondition(config["sample_camera"]),
    )
    # RViz runs in the same namespace with the same remappings, so the relative topic names in
    # dehaze.rviz find the node's outputs and the remapped input.
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", namespace=config["namespace"],
        arguments=["-d", PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "dehaze.rviz"])],
        remappings=topic_remappings, condition=IfCondition(config["rviz"]),
    )
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in ARGUMENTS.items()]
    return LaunchDescription([*arguments, dehaze_node, sample_camera, rviz])
