"""The ament_python package as colcon sees it: manifest, marker, entry points, installed files.

colcon is not installable on the no-ROS path, so these checks read the same files it reads.
"""

import ast
import importlib
import shutil
import subprocess
import sys
import zipfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_call() -> ast.Call:
    tree = ast.parse((ROOT / "setup.py").read_text())
    return next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )


def test_package_xml_is_format3_ament_python_with_runtime_deps():
    manifest = ET.parse(ROOT / "package.xml").getroot()
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == "dehaze_ros"
    assert manifest.find("export/build_type").text == "ament_python"
    exec_deps = {dep.text for dep in manifest.findall("exec_depend")}
    for needed in (
        "rclpy",
        "sensor_msgs",
        "std_msgs",
        "diagnostic_msgs",
        "lifecycle_msgs",
        "launch_ros",
        "python3-numpy",
        "python3-opencv",
    ):
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
    assert {"dehaze_node", "sample_camera", "process_bag"} <= names
    for entry in scripts:
        module_name, function = entry.split("=")[1].strip().split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function)), f"{entry}: {function} is not callable"


def test_the_built_package_installs_launch_config_and_checkpoint(tmp_path):
    # Build a real wheel from the files colcon builds from (in a copy: no build/ in the checkout)
    # and read what it installs: data_files globs that match nothing fail here, not on a robot.
    source = tmp_path / "src"
    for name in (
        "setup.py",
        "setup.cfg",
        "package.xml",
        "README.md",
        "resource",
        "launch",
        "config",
        "dehaze_ros",
        "training",
    ):
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("dehaze_ros-*.whl")
    share = "dehaze_ros-{}.data/data/share/".format(wheel.name.split("-")[1])
    names = set(zipfile.ZipFile(wheel).namelist())
    for installed in (
        "ament_index/resource_index/packages/dehaze_ros",
        "dehaze_ros/package.xml",
        "dehaze_ros/launch/dehaze.launch.py",
        "dehaze_ros/config/dehaze.yaml",
        "dehaze_ros/config/dehaze.rviz",
        "dehaze_ros/config/fastdds_localhost.xml",
        "dehaze_ros/config/train/diacmpn_rt.yaml",
    ):
        assert share + installed in names, f"colcon would not install share/{installed}"
    shipped = sorted(p.name for p in (ROOT / "dehaze_ros" / "checkpoints").glob("*.pt"))
    for name in shipped:  # installed once, beside the code, where engine.DEFAULT_CHECKPOINT points
        assert (
            f"dehaze_ros/checkpoints/{name}" in names
            and f"{share}dehaze_ros/checkpoints/{name}" not in names
        )
    assert "dehaze_ros/engine.py" in names and "training/train.py" in names
