"""Where ROS ends (docs/ARCHITECTURE.md): the core imports no ROS, the package no training.

The core is every module of dehaze_ros outside ros/, sim/ and tools/: engine, backends, models,
haze, dcp, visibility, metric scale and the rest. It is used and tested without ROS, so neither
rclpy nor a ROS message package nor dehaze_ros.ros may be imported there, not even inside a
function. The installed runtime package (all of dehaze_ros) imports nothing from training/.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dehaze_ros"
NOT_CORE = ("ros", "sim", "tools")
ROS_MODULES = {
    "rclpy",
    "launch",
    "launch_ros",
    "ament_index_python",
    "rosidl_runtime_py",
    "sensor_msgs",
    "std_msgs",
    "diagnostic_msgs",
    "rcl_interfaces",
    "lifecycle_msgs",
    "builtin_interfaces",
    "geometry_msgs",
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, including those inside functions;
    ``from dehaze_ros import ros`` counts as dehaze_ros.ros."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "dehaze_ros":
                found += [(node.lineno, f"dehaze_ros.{alias.name}") for alias in node.names]
    return found


def core_files() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in NOT_CORE
    ]


def test_the_core_imports_no_ros():
    assert len(core_files()) > 20  # the walk found the package
    offenders = []
    for path in core_files():
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if (
                top in ROS_MODULES
                or module == "dehaze_ros.ros"
                or module.startswith("dehaze_ros.ros.")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not offenders, (
        "ROS imported in the ROS-free core (move the code to dehaze_ros/ros/):\n"
        + "\n".join(offenders)
    )


def test_the_ros_side_is_a_subpackage_of_its_own():
    ros_side = {path.name for path in (PACKAGE / "ros").glob("*.py")}
    assert {
        "dehaze_node.py",
        "node_config.py",
        "frame_outputs.py",
        "stats.py",
        "image_conversion.py",
        "pointcloud.py",
    } <= ros_side
    assert not (PACKAGE / "dehaze_node.py").exists()


def test_the_package_imports_nothing_from_training():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] == "training"
    ]
    assert not offenders, "dehaze_ros must not need training/:\n" + "\n".join(offenders)
