"""The ament_python package as colcon sees it: manifest, marker, entry points, installed files.

colcon is not installable on the no-ROS path, so these checks read the same files it reads.
"""
import ast
import importlib
import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_call() -> ast.Call:
    tree = ast.parse((ROOT / "setup.py").read_text())
    return next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")


def test_package_xml_is_format3_ament_python_with_runtime_deps():
    manifest = ET.parse(ROOT / "package.xml").getroot()
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == "dehaze_ros"
    assert manifest.find("export/build_type").text == "ament_python"
    exec_deps = {dep.text for dep in manifest.findall("exec_depend")}
    for needed in ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs",
                   "launch_ros", "python3-numpy", "python3-opencv"):
        assert needed in exec_deps, f"package.xml lacks <exec_depend>{needed}</exec_depend>"


def test_resource_marker_and_versions_agree():
    assert (ROOT / "resource" / "dehaze_ros").is_file()
    manifest_version = ET.parse(ROOT / "package.xml").getroot().findtext("version")
    keywords = {kw.arg: kw.value for kw in setup_call().keywords}
    assert ast.literal_eval(keywords["version"]) == manifest_version
    import dehaze_ros
    assert dehaze_ros.__version__ == manifest_version


def test_console_scripts_point_at_callable_mains():
    keywords = {kw.arg: kw.value for kw in setup_call().keywords}
    scripts = ast.literal_eval(keywords["entry_points"])["console_scripts"]
    names = {entry.split("=")[0].strip() for entry in scripts}
    assert {"dehaze_node", "sample_camera"} <= names
    for entry in scripts:
        module_name, function = entry.split("=")[1].strip().split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function)), f"{entry}: {function} is not callable"


def test_launch_and_config_files_are_installed():
    # The globs setup.py hands to data_files must find the files users launch.
    assert (ROOT / "launch" / "dehaze.launch.py") in map(Path, glob(str(ROOT / "launch/*.launch.py")))
    config = {Path(p).name for p in glob(str(ROOT / "config/*.yaml")) + glob(str(ROOT / "config/*.rviz"))}
    assert {"dehaze.yaml", "dehaze.rviz"} <= config
    assert glob(str(ROOT / "config/train/*.yaml")), "training configs are installed too"
