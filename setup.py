"""ament_python build of dehaze_ros (colcon build); also an ordinary pip-installable package."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dehaze_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "training", "training.*"]),
    # The shipped checkpoint is installed once, inside the Python package, so that `pip install`
    # and `colcon build` both find it next to the code (dehaze_ros.engine.DEFAULT_CHECKPOINT).
    package_data={PACKAGE: ["checkpoints/*.pt", "checkpoints/*.onnx", "checkpoints/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (
            f"share/{PACKAGE}/config",
            glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"),
        ),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
    ],
    install_requires=["setuptools"],
    # backend onnxruntime and `training.export --onnx` (dehaze_ros.onnx_export): the torch.export
    # based exporter needs onnxscript. onnx-gpu for NVIDIA GPUs: onnxruntime-gpu brings the CUDA
    # and TensorRT providers. Install one of the two, never both: they are one Python module, and
    # the CPU package installed over the GPU one silently removes its providers.
    extras_require={
        "onnx": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
        "onnx-gpu": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime-gpu>=1.20"],
        # backend openvino (CPU): the same exported graph, run by OpenVINO's CPU plugin.
        "openvino": ["onnx>=1.17", "onnxscript>=0.5", "openvino>=2024.0"],
    },
    zip_safe=False,
    maintainer="dehaze_ros developers",
    maintainer_email="dev@dehaze-ros.invalid",
    description="Learned dehazing + metric depth for ROS 2 (DIACMPN) with offline training.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        # The node programs start through dehaze_ros.ros.entry_points, which installs the stop guard
        # before their heavy imports: a generated script never runs a module's __main__ block.
        "console_scripts": [
            "dehaze_node = dehaze_ros.ros.entry_points:dehaze_node",
            "sample_camera = dehaze_ros.ros.entry_points:sample_camera",
            "dehaze_benchmark = dehaze_ros.tools.benchmark:main",
            "dehaze_build_engines = dehaze_ros.tools.build_engines:main",
            "process_bag = dehaze_ros.tools.process_bag:main",
            "dehaze_train = training.train:main",
            "dehaze_evaluate = training.evaluate:main",
            "dehaze_export = training.export:main",
        ],
    },
)
