"""What launch/dehaze.launch.py starts and with which parameters, from its arguments' values.

The launch file performs its arguments (an OpaqueFunction) and asks these functions, which take
and return plain Python values: they are tested without `launch` and `launch_ros`, which are not
installable from PyPI. Launch arguments that set a node parameter default to "", meaning "not
given": the params file (or the node's own default) decides, and a user's params file is never
overridden by a launch default nobody typed.
"""

from __future__ import annotations

# Launch arguments that set the dehaze_node parameter of the same name, when given.
NODE_PARAMETER_ARGUMENTS = ("checkpoint", "device", "input_transport")

# What launch's IfCondition accepts as true and false.
TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")


def launch_flag(name: str, value: str) -> bool:
    """A true/false launch argument (case-insensitive, or 1/0)."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"launch argument {name} must be true or false, got {value!r}")


def sim_time_parameter(values: dict[str, str]) -> dict[str, bool]:
    """{'use_sim_time': ...} when the argument was given, for every node the file starts."""
    if not values["use_sim_time"].strip():
        return {}
    return {"use_sim_time": launch_flag("use_sim_time", values["use_sim_time"])}


def dehaze_node_parameters(values: dict[str, str]) -> list:
    """The params file, then a dict of only the overrides the user gave (later entries win)."""
    overrides: dict[str, str | bool] = {
        name: values[name] for name in NODE_PARAMETER_ARGUMENTS if values[name].strip()
    }
    overrides.update(sim_time_parameter(values))
    return [values["params_file"], overrides] if overrides else [values["params_file"]]


def sample_camera_parameters(values: dict[str, str]) -> list[dict]:
    # Always offer the compressed stream: the node may read it because of input_transport:=
    # compressed or because the params file says so, which this file does not read. The camera
    # encodes JPEG only while someone subscribes to it, so a raw node costs nothing.
    return [{"publish_compressed": True, **sim_time_parameter(values)}]


def rviz_decision(values: dict[str, str], rviz_installed: bool) -> tuple[bool, str | None]:
    """(start RViz?, warning to log): a missing rviz2 is no reason to abort the dehazing."""
    if not launch_flag("rviz", values["rviz"]):
        return False, None
    if not rviz_installed:
        return False, (
            "rviz:=true, but the package rviz2 is not installed: starting without "
            "RViz (install ros-$ROS_DISTRO-rviz2 to get it)"
        )
    return True, None
