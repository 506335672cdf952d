"""The dehaze_node's parameters: one table, declared with descriptors, read into a frozen config.

Every parameter has a *stage*, which says when a change takes effect:

* ``startup``   read-only: it shapes things created once per process (the input subscription and
                its QoS-override parameters, the diagnostics timer, autostart).
* ``configure`` read by the configure transition (model, device, ...). Changing one is accepted
                only while the node is unconfigured: deactivate + cleanup, set, configure. This
                is the lifecycle way to swap a model without restarting the process; a read-only
                flag would force a restart instead.
* ``live``      applied to the next frame (publish switches, colormap range, decimation, rate).

Values given at startup (``-p``, ``--params-file``) that fail the table (type, range, choices)
do not crash the process: the parameter is declared with its default and the refusal is
returned to the node. What the node does with it depends on the stage. A ``startup`` value can
never be corrected at runtime (read-only), so the node logs an ERROR, runs with the default and
keeps saying so in /diagnostics; refusing to configure would leave it stuck until a restart. A
``configure`` or ``live`` value can be set, so configure fails naming it until it is.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from dehaze_ros.camera import DEFAULT_HFOV_DEG

STAGES = ("startup", "configure", "live")
PACKAGE = "dehaze_ros"
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
# NodeConfig fields that are EngineConfig fields: the engine validates them (one set of rules).
ENGINE_FIELDS = ("model", "checkpoint", "device", "precision", "max_side", "warmup", "num_threads",
                 "default_hfov_deg", "backend", "onnx_model", "trt_cache_dir")


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

    @property
    def allowed(self) -> str:
        """The values the table accepts, in words: for error messages."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        kind = _TYPE_NAMES[type(self.default)]
        if self.minimum is not None:
            return f"{kind} in [{self.minimum}, {self.maximum}]"
        return kind

    def problems(self, value) -> list[str]:
        """What is wrong with ``value`` for this parameter (type, choices, range); [] if nothing."""
        expected = type(self.default)
        if expected is float and type(value) is int:
            value = float(value)  # `-p colormap_max_m:=50` arrives as an integer
        if type(value) is not expected:
            return [f"{self.name} must be {_TYPE_NAMES[expected]}, got {value!r}"]
        problems = []
        if self.choices and value not in self.choices:
            problems.append(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            problems.append(f"{self.name} must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            problems.append(f"{self.name} must be <= {self.maximum}, got {value}")
        return problems


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("autostart", True,
                  "Configure and activate on start-up; false waits for a lifecycle manager "
                  "(~/change_state).", "startup"),
    ParameterSpec("input_transport", "raw",
                  "One of: raw, compressed. raw: subscribe to `image` (sensor_msgs/Image); "
                  "compressed: subscribe to `<image>/compressed` (sensor_msgs/CompressedImage, "
                  "jpeg or png).",
                  "startup", choices=("raw", "compressed")),
    ParameterSpec("input_reliability", "best_effort",
                  "One of: best_effort, reliable. QoS reliability of the image and camera_info "
                  "subscriptions: best_effort (sensor-data QoS) matches every publisher; reliable "
                  "only matches reliable ones.",
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
                  "auto (bf16 on CUDA GPUs that support it, else fp16; fp32 on CPU), fp32, fp16 or bf16 "
                  "(fp16 needs CUDA; bf16 on a CPU needs native bf16, AVX512-BF16 or AMX).",
                  "configure", choices=("auto", "fp32", "fp16", "bf16")),
    ParameterSpec("max_side", 320,
                  "Run the networks with the longer image side at most this many pixels (outputs "
                  "keep the input size); 0 = native resolution. 320: the shipped checkpoint's "
                  "training and validation resolution (its metric depth is best there) and CPU "
                  "real time; 0 gives more dehazing detail where a GPU has the time.",
                  "configure", minimum=0, maximum=8192),
    ParameterSpec("num_threads", 0,
                  "torch CPU threads; 0 = torch's default (all cores).", "configure",
                  minimum=0, maximum=256),
    ParameterSpec("default_hfov_deg", DEFAULT_HFOV_DEG,
                  "Horizontal field of view (degrees) assumed for metric depth while no camera_info "
                  "has arrived: the networks' depth is in a canonical camera and becomes metres "
                  "through the focal length, taken from camera_info when there is one. "
                  "/diagnostics says which.",
                  "configure", minimum=1.0, maximum=179.0),
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
    ParameterSpec("publish_visibility", True,
                  "Publish visibility (sensor_msgs/Range, the input's header): the visual range "
                  "V = 3.912 / beta in metres estimated from the frame's transmission and metric "
                  "depth (-ln t = beta d); NaN when the frame gives no estimate, +inf when clear "
                  "beyond max_range, -inf when denser than min_range. Also in /diagnostics. Needs "
                  "metric depth (a checkpoint, not dcp); while `visibility` has a subscriber the "
                  "depth network runs even if no depth topic has one.", "live"),
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
    ParameterSpec("max_input_pixels", 4096 * 4096,
                  "Drop frames with more pixels (width x height) than this as invalid, raw or "
                  "compressed; a compressed frame's size is read from its PNG/JPEG header before "
                  "anything is decoded, so a small file that declares a huge image costs nothing. "
                  "Bounds the node's memory: a frame costs about 40 bytes a pixel while it is "
                  "processed (about 0.7 GB at the default, 16777216 = 4096 x 4096).", "live",
                  minimum=1, maximum=16384 * 16384),
    ParameterSpec("depth_inf_as_nan", False,
                  "Publish depth outside the model's range as NaN on depth/image instead of "
                  "REP-117's +inf (too far) and -inf (too close), for consumers that mishandle "
                  "infinities (some depthimage_to_laserscan versions and costmap layers). "
                  "Off: REP-117.", "live"),
    ParameterSpec("backend", "torch",
                  "What runs the checkpoint's networks: torch, or onnxruntime (the optional onnx "
                  "extra; TensorRT and CUDA providers on a GPU device, CPU otherwise). dcp ignores it.",
                  "configure", choices=("torch", "onnxruntime")),
    ParameterSpec("onnx_model", "",
                  "backend onnxruntime: an exported graph (python -m training.export CHECKPOINT "
                  "--onnx OUT.onnx). Empty: the checkpoint is exported once into "
                  "~/.cache/dehaze_ros/onnx and reused.", "configure"),
    ParameterSpec("trt_cache_dir", "",
                  "backend onnxruntime with TensorRT: folder of the built TensorRT engines, so a "
                  "restart skips the build. Empty: ~/.cache/dehaze_ros/tensorrt.", "configure"),
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
    max_side: int = 320
    num_threads: int = 0
    default_hfov_deg: float = DEFAULT_HFOV_DEG
    warmup: int = 1
    publish_dehazed: bool = True
    publish_depth: bool = True
    publish_colormap: bool = True
    publish_points: bool = True
    publish_visibility: bool = True
    publish_relative_depth: bool = False
    colormap_min_m: float = 0.5
    colormap_max_m: float = 50.0
    colormap_relative_max: float = 2.3
    point_decimation: int = 4
    max_rate_hz: float = 0.0
    max_input_pixels: int = 4096 * 4096
    depth_inf_as_nan: bool = False
    backend: str = "torch"
    onnx_model: str = ""
    trt_cache_dir: str = ""

    def validate(self) -> None:
        """Raise ConfigError listing every problem (types, choices, ranges, cross-field rules)."""
        problems, bad_fields = [], set()
        for spec in PARAMETERS:
            found = spec.problems(getattr(self, spec.name))
            if found:
                bad_fields.add(spec.name)
                problems += found
        if not {"colormap_min_m", "colormap_max_m"} & bad_fields \
                and not self.colormap_min_m < self.colormap_max_m:
            problems.append(f"colormap_min_m ({self.colormap_min_m}) must be smaller than "
                            f"colormap_max_m ({self.colormap_max_m})")
        # The engine's own rules (device names, the smallest max_side, ...) live in
        # EngineConfig.validate; asked only when the table found its fields well-typed, so a
        # problem is reported once. It names one problem at a time.
        if not bad_fields & set(ENGINE_FIELDS):
            try:
                self.engine_config().validate()
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("invalid parameters: " + "; ".join(problems))

    def engine_config(self, choice: ModelChoice | None = None):
        """The dehaze_ros.engine.EngineConfig these parameters describe; model and checkpoint
        from ``choice`` (resolve_model) when given, else as the parameters say."""
        # Imported here: the engine imports torch (~1 s), which declaring parameters or reading
        # this table (tests, docs, launch tooling) should not pay for.
        from dehaze_ros.engine import EngineConfig

        model, checkpoint = (choice.model, choice.checkpoint) if choice else (self.model, self.checkpoint)
        return EngineConfig(model=model, checkpoint=checkpoint, device=self.device,
                            precision=self.precision, max_side=self.max_side, warmup=self.warmup,
                            num_threads=self.num_threads, default_hfov_deg=self.default_hfov_deg,
                            backend=self.backend, onnx_model=os.path.expanduser(self.onnx_model),
                            trt_cache_dir=os.path.expanduser(self.trt_cache_dir))

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
    """The shipped checkpoint: installed share dir, then the engine's default next to the code."""
    from dehaze_ros.engine import DEFAULT_CHECKPOINT  # imports torch: only when a path is needed

    # The source-tree candidate is dropped: checkpoints/ lives inside the package, not beside it.
    return package_file_candidates("checkpoints", "default.pt")[:-1] + [DEFAULT_CHECKPOINT]


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


@dataclass(frozen=True)
class RefusedValue:
    """A value given at start-up that failed the table; the parameter was declared with its default."""
    spec: ParameterSpec
    given: object

    def __str__(self) -> str:
        return f"{self.spec.name}:={self.given!r} is not {self.spec.allowed}"


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


def declare_node_parameters(node) -> list[RefusedValue]:
    """Declare every parameter on ``node``; return the start-up values that had to be refused
    (each is declared with its default instead, so the node comes up)."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    refused = []
    for spec in PARAMETERS:
        descriptor = _descriptor(spec)
        # rclpy keeps the start-up values (-p, --params-file) in node._parameter_overrides, with
        # no public getter. Checking them against the table here catches what a descriptor cannot
        # express (choices) and keeps the refused value, to name it in the error.
        override = node._parameter_overrides.get(spec.name)
        if override is None:
            node.declare_parameter(spec.name, spec.default, descriptor)
            continue
        given = override.value
        if not spec.problems(given):
            # `-p colormap_max_m:=50` arrives as an integer: declare the float it means.
            value = float(given) if isinstance(spec.default, float) else given
            try:
                node.declare_parameter(spec.name, value, descriptor, ignore_override=True)
                continue
            except (InvalidParameterTypeException, InvalidParameterValueException):
                pass  # rclpy's own descriptor check disagreed: refuse it like the table would
        node.declare_parameter(spec.name, spec.default, descriptor, ignore_override=True)
        refused.append(RefusedValue(spec, given))
    return refused


def integers_as_floats(parameters: list) -> list:
    """``parameters`` (rclpy Parameter objects) with INTEGER values of float parameters turned
    into DOUBLE: `ros2 param set /dehaze_node colormap_max_m 20` sends an INTEGER, and rclpy
    refuses a type other than the declared one before any callback of ours could accept it."""
    from rclpy.parameter import Parameter

    converted = []
    for parameter in parameters:
        spec = SPECS.get(parameter.name)
        if (spec is not None and isinstance(spec.default, float)
                and parameter.type_ == Parameter.Type.INTEGER):
            parameter = Parameter(parameter.name, Parameter.Type.DOUBLE, float(parameter.value))
        converted.append(parameter)
    return converted


def read_node_config(node) -> NodeConfig:
    """Current parameter values -> NodeConfig (not yet validated)."""
    values = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
    for spec in PARAMETERS:
        if isinstance(spec.default, float) and isinstance(values[spec.name], int):
            values[spec.name] = float(values[spec.name])
    return NodeConfig(**values)
