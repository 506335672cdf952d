"""The dehaze_node's parameters: one table, declared with descriptors, read into a frozen config.

Every parameter has a *stage*, which says when a change takes effect:

* ``startup``   read-only: it shapes things created once per process (the input subscription and
                its QoS-override parameters, the diagnostics timer, autostart).
* ``configure`` read by the configure transition (model, device, ...). Changing one is accepted
                only while the node is unconfigured: deactivate + cleanup, set, configure. This
                is the lifecycle way to swap a model without restarting the process; a read-only
                flag would force a restart instead.
* ``live``      applied to the next frame (publish switches, colormap range, decimation, rate).

Values given at startup (``-p``, ``--params-file``) that fail the declared type or range do not
crash the process: the parameter keeps its default, the problem is remembered, and configure
fails with a message naming it, so a lifecycle manager sees FAILURE and the node stays up.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

STAGES = ("startup", "configure", "live")
PACKAGE = "dehaze_ros"
PACKAGE_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default.pt"
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


class ConfigError(ValueError):
    """The node's parameters are invalid: the text lists every problem."""


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: bool | int | float | str
    description: str
    stage: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("autostart", True,
                  "Configure and activate on start-up; false waits for a lifecycle manager "
                  "(~/change_state).", "startup"),
    ParameterSpec("input_transport", "raw",
                  "raw: subscribe to `image` (sensor_msgs/Image); compressed: subscribe to "
                  "`<image>/compressed` (sensor_msgs/CompressedImage, jpeg or png).",
                  "startup", choices=("raw", "compressed")),
    ParameterSpec("input_reliability", "best_effort",
                  "QoS reliability of the image and camera_info subscriptions. best_effort "
                  "(sensor-data QoS) matches every publisher; reliable only matches reliable ones.",
                  "startup", choices=("best_effort", "reliable")),
    ParameterSpec("diagnostics_period", 1.0,
                  "Seconds between /diagnostics messages (rates are averaged over this period).",
                  "startup", minimum=0.1, maximum=60.0),
    ParameterSpec("model", "checkpoint",
                  "checkpoint: DIACMPN networks from `checkpoint` (metric depth); dcp: Dark "
                  "Channel Prior, no weights, relative depth only.",
                  "configure", choices=("checkpoint", "dcp")),
    ParameterSpec("checkpoint", "",
                  "Path of a dehaze_ros checkpoint (.pt). Empty: the checkpoint shipped with the "
                  "package (share/dehaze_ros/checkpoints/default.pt); without one the node falls "
                  "back to dcp with a warning.", "configure"),
    ParameterSpec("device", "auto",
                  "auto (CUDA when available), cpu, cuda or cuda:N.", "configure"),
    ParameterSpec("precision", "auto",
                  "auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16 (half precision needs CUDA).",
                  "configure", choices=("auto", "fp32", "fp16", "bf16")),
    ParameterSpec("max_side", 0,
                  "Run the networks with the longer image side at most this many pixels (outputs "
                  "keep the input size); 0 = native resolution. Trades detail for speed.",
                  "configure", minimum=0, maximum=8192),
    ParameterSpec("num_threads", 0,
                  "torch CPU threads; 0 = torch's default (all cores).", "configure",
                  minimum=0, maximum=256),
    ParameterSpec("warmup", 1,
                  "Warm-up passes at configure, so the first real frame is not slow.",
                  "configure", minimum=0, maximum=20),
    ParameterSpec("publish_dehazed", True, "Publish dehazed/image and dehazed/camera_info.", "live"),
    ParameterSpec("publish_depth", True,
                  "Publish depth/image (32FC1 metres, REP-118) and depth/camera_info.", "live"),
    ParameterSpec("publish_colormap", True,
                  "Publish depth/colormap (bgr8 false colour over the fixed range below).", "live"),
    ParameterSpec("publish_points", True,
                  "Publish points (PointCloud2 x,y,z,rgb in the camera frame; needs camera_info).",
                  "live"),
    ParameterSpec("publish_relative_depth", False,
                  "When the model's depth is relative (dcp), still publish it on depth/image and "
                  "points (values are then unitless, not metres). Off by default so consumers of "
                  "depth/image only ever see metres.", "live"),
    ParameterSpec("colormap_min_m", 0.5,
                  "Near end of the depth colormap in metres (log scale, red).", "live",
                  minimum=0.001, maximum=1000.0),
    ParameterSpec("colormap_max_m", 50.0,
                  "Far end of the depth colormap in metres (blue); farther and sky are blue too.",
                  "live", minimum=0.01, maximum=100000.0),
    ParameterSpec("colormap_relative_max", 2.3,
                  "Far end of the colormap for relative depth (linear from 0). The DCP's relative "
                  "depth is the optical depth -ln(t), at most -ln(0.1) = 2.3.", "live",
                  minimum=0.001, maximum=1000.0),
    ParameterSpec("point_decimation", 4,
                  "Use every N-th pixel in rows and columns for `points` (1 = every pixel).",
                  "live", minimum=1, maximum=64),
    ParameterSpec("max_rate_hz", 0.0,
                  "Process at most this many frames per second (newest frame wins); 0 = as fast "
                  "as frames arrive and the model allows.", "live", minimum=0.0, maximum=1000.0),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class NodeConfig:
    autostart: bool = True
    input_transport: str = "raw"
    input_reliability: str = "best_effort"
    diagnostics_period: float = 1.0
    model: str = "checkpoint"
    checkpoint: str = ""
    device: str = "auto"
    precision: str = "auto"
    max_side: int = 0
    num_threads: int = 0
    warmup: int = 1
    publish_dehazed: bool = True
    publish_depth: bool = True
    publish_colormap: bool = True
    publish_points: bool = True
    publish_relative_depth: bool = False
    colormap_min_m: float = 0.5
    colormap_max_m: float = 50.0
    colormap_relative_max: float = 2.3
    point_decimation: int = 4
    max_rate_hz: float = 0.0

    def validate(self) -> None:
        """Raise ConfigError listing every problem (types, choices, ranges, cross-field rules)."""
        problems = []
        for spec in PARAMETERS:
            value = getattr(self, spec.name)
            expected = type(spec.default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not expected:
                problems.append(f"{spec.name} must be {_TYPE_NAMES[expected]}, got {value!r}")
                continue
            if spec.choices and value not in spec.choices:
                problems.append(f"{spec.name} must be one of {', '.join(spec.choices)}, got {value!r}")
            if spec.minimum is not None and value < spec.minimum:
                problems.append(f"{spec.name} must be >= {spec.minimum}, got {value}")
            if spec.maximum is not None and value > spec.maximum:
                problems.append(f"{spec.name} must be <= {spec.maximum}, got {value}")
        if isinstance(self.colormap_min_m, (int, float)) and isinstance(self.colormap_max_m, (int, float)) \
                and not self.colormap_min_m < self.colormap_max_m:
            problems.append(f"colormap_min_m ({self.colormap_min_m}) must be smaller than "
                            f"colormap_max_m ({self.colormap_max_m})")
        if isinstance(self.device, str):
            device = self.device
            if not (device in ("auto", "cpu", "cuda") or
                    (device.startswith("cuda:") and device[5:].isdigit())):
                problems.append(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        if isinstance(self.max_side, int) and 0 < self.max_side < 32:
            problems.append(f"max_side must be 0 (native) or at least 32, got {self.max_side}")
        if problems:
            raise ConfigError("invalid parameters: " + "; ".join(problems))

    @property
    def depth_outputs_wanted(self) -> bool:
        return self.publish_depth or self.publish_colormap or self.publish_points

    def replace(self, **changes) -> "NodeConfig":
        return dataclasses.replace(self, **changes)


def package_file_candidates(*parts: str) -> list[Path]:
    """Where a package file may be: the installed share dir (colcon), then the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(PACKAGE)).joinpath(*parts))
    except (ImportError, LookupError, OSError):
        # Not installed with colcon, no ament_index, or AMENT_PREFIX_PATH unset (venv path).
        pass
    source_tree = Path(__file__).resolve().parents[1]
    candidates.append(source_tree.joinpath(*parts))
    return candidates


def default_checkpoint_candidates() -> list[Path]:
    """The shipped checkpoint: installed share dir, then next to the code."""
    return package_file_candidates("checkpoints", "default.pt")[:-1] + [PACKAGE_CHECKPOINT]


@dataclass(frozen=True)
class ModelChoice:
    model: str              # "checkpoint" | "dcp"
    checkpoint: str         # resolved path, "" for dcp
    warning: str = ""       # set when the node fell back from the requested model


def resolve_model(config: NodeConfig) -> ModelChoice:
    """Which model and file configure will load. An explicit checkpoint path is used as given
    (a missing file then fails configure with its name); an empty one means the shipped
    checkpoint, and DCP with a warning when none is installed."""
    if config.model == "dcp":
        return ModelChoice("dcp", "")
    if config.checkpoint:
        return ModelChoice("checkpoint", os.path.expanduser(config.checkpoint))
    candidates = default_checkpoint_candidates()
    for path in candidates:
        if path.is_file():
            return ModelChoice("checkpoint", str(path))
    looked = ", ".join(str(path) for path in candidates)
    return ModelChoice("dcp", "", warning=(
        f"no shipped checkpoint found (looked in: {looked}); falling back to model dcp (Dark Channel "
        "Prior, relative depth). Set the `checkpoint` parameter to a trained model for metric depth."))


# ---------------------------------------------------------------------------------------------
# rclpy side: declaration with descriptors and reading back. rclpy is imported inside the
# functions so that the table above can be inspected (tests, docs) without a ROS install.

def _descriptor(spec: ParameterSpec):
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    ParameterType)

    kinds = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
    notes = {"startup": "Read once at start-up (read-only).",
             "configure": "Applied at configure; change it while unconfigured.",
             "live": "Applied to the next frame."}
    constraints = [notes[spec.stage]]
    if spec.choices:
        constraints.insert(0, "One of: " + ", ".join(spec.choices) + ".")
    descriptor = ParameterDescriptor(
        name=spec.name, type=kinds[type(spec.default)], description=spec.description,
        additional_constraints=" ".join(constraints), read_only=spec.stage == "startup")
    if isinstance(spec.default, float) and spec.minimum is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool) and spec.minimum is not None:
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    return descriptor


def declare_node_parameters(node) -> list[str]:
    """Declare every parameter on ``node``; return the start-up values that had to be refused."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    refused = []
    # rclpy keeps the start-up values (-p, --params-file) in node._parameter_overrides; it has
    # no public getter in Humble, and the refused value is worth naming in the error.
    for spec in PARAMETERS:
        descriptor = _descriptor(spec)
        try:
            node.declare_parameter(spec.name, spec.default, descriptor)
            continue
        except InvalidParameterTypeException:
            given = node._parameter_overrides.get(spec.name)
            given_value = getattr(given, "value", given)
            # `-p colormap_max_m:=50` arrives as an integer: take it as the float it means.
            if isinstance(spec.default, float) and isinstance(given_value, int) \
                    and not isinstance(given_value, bool):
                try:
                    node.declare_parameter(spec.name, float(given_value), descriptor,
                                           ignore_override=True)
                    continue
                except InvalidParameterValueException:
                    problem = f"{spec.name}: {given_value} is outside [{spec.minimum}, {spec.maximum}]"
            else:
                problem = f"{spec.name}: {given_value!r} is not {_TYPE_NAMES[type(spec.default)]}"
        except InvalidParameterValueException:
            given = node._parameter_overrides.get(spec.name)
            given_value = getattr(given, "value", given)
            problem = f"{spec.name}: {given_value!r} is outside [{spec.minimum}, {spec.maximum}]"
        # Keep the node up with the default; configure reports the refused value.
        node.declare_parameter(spec.name, spec.default, descriptor, ignore_override=True)
        refused.append(problem)
    return refused


def read_node_config(node) -> NodeConfig:
    """Current parameter values -> NodeConfig (not yet validated)."""
    values = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
    for spec in PARAMETERS:
        if isinstance(spec.default, float) and isinstance(values[spec.name], int):
            values[spec.name] = float(values[spec.name])
    return NodeConfig(**values)
