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

The table is the one source: NodeConfig is made from it (a field per row), the EngineConfig
fields are filled from the parameters of the same names, and config/dehaze.yaml is written from
it (parameters_yaml); one test checks the YAML and the README's parameter table against it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

from dehaze_ros import dense_fog
from dehaze_ros.anchor_scale import FITS as ANCHOR_FITS
from dehaze_ros.anchor_scale import AnchorRules, extrinsic_matrix
from dehaze_ros.canonical_camera import DEFAULT_HFOV_DEG

# The engine's own lists of choices: the table offers exactly what the engine accepts. This
# loads torch (about a second) with the table; the node loads it for configure anyway, and the
# programs that read the table (process_bag, the demo) run the engine too.
from dehaze_ros.engine import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_CHECKPOINT,
    DEFAULT_DEPTH_MAX_SIDE,
    DEFAULT_MAX_SIDE,
    DEFAULT_SIZE_RULE,
    DEPTH_FROM_HAZE,
    MODELS,
    PRECISIONS,
    SIZE_RULES,
    UPSAMPLING,
    EngineConfig,
)
from dehaze_ros.ros.image_conversion import DEFAULT_MAX_PIXELS

STAGES = ("startup", "configure", "live")
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


class ConfigError(ValueError):
    """The node's parameters are invalid: the text lists every problem."""


def parse_extrinsic(text: str):
    """anchor_extrinsic's 'x y z qx qy qz qw' -> 4 x 4 matrix (ValueError saying what is wrong)."""
    try:
        values = [float(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"seven numbers 'x y z qx qy qz qw' expected, got {text!r}") from None
    return extrinsic_matrix(values)


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
        if expected is float and math.isnan(value) and not math.isnan(self.default):
            return [
                f"{self.name} must be a number, got NaN (only a parameter whose default is NaN "
                "takes NaN, for 'unknown')"
            ]
        if self.choices and value not in self.choices:
            problems.append(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            problems.append(f"{self.name} must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            problems.append(f"{self.name} must be <= {self.maximum}, got {value}")
        return problems


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "autostart",
        True,
        "Configure and activate on start-up; false waits for a lifecycle manager (~/change_state).",
        "startup",
    ),
    ParameterSpec(
        "input_transport",
        "raw",
        "raw: subscribe to `image` (sensor_msgs/Image); "
        "compressed: subscribe to `<image>/compressed` (sensor_msgs/CompressedImage, "
        "jpeg or png).",
        "startup",
        choices=("raw", "compressed"),
    ),
    ParameterSpec(
        "input_reliability",
        "best_effort",
        "QoS reliability of the image, camera_info and anchor_points "
        "subscriptions: best_effort (sensor-data QoS) matches every publisher; reliable "
        "only matches reliable ones.",
        "startup",
        choices=("best_effort", "reliable"),
    ),
    ParameterSpec(
        "diagnostics_period",
        1.0,
        "Seconds between /diagnostics messages (rates are averaged over this period).",
        "startup",
        minimum=0.1,
        maximum=60.0,
    ),
    ParameterSpec(
        "model",
        "checkpoint",
        "checkpoint: DIACMPN networks from `checkpoint` (metric depth); dcp: Dark "
        "Channel Prior, no weights, relative depth only.",
        "configure",
        choices=MODELS,
    ),
    ParameterSpec(
        "checkpoint",
        "",
        "Path of a dehaze_ros checkpoint (.pt). Empty: the checkpoint shipped with the "
        "package (dehaze_ros/checkpoints/default.pt beside the code); without one the node falls "
        "back to dcp with a warning.",
        "configure",
    ),
    ParameterSpec(
        "backend",
        DEFAULT_BACKEND,
        "What runs the checkpoint's networks. auto: openvino on a CPU when it is installed "
        "and the checkpoint's exported graph is ready (shipped for the default checkpoint; "
        "python -m training.export CKPT --onnx CKPT.onnx for your own), else torch (the log "
        "says which and why). torch; onnxruntime (the optional onnx extra, pip install "
        "'.[onnx]'; TensorRT and CUDA providers on a GPU device, CPU otherwise); openvino "
        "(CPU only, pip install '.[openvino]', about twice torch's speed on a CPU, "
        "docs/performance.md). dcp ignores it.",
        "configure",
        choices=BACKENDS,
    ),
    ParameterSpec(
        "onnx_model",
        "",
        "backend onnxruntime or openvino: an exported graph (python -m training.export CHECKPOINT "
        "--onnx OUT.onnx). Empty: the checkpoint's own graph beside it (CHECKPOINT.onnx, "
        "exported from that very file; shipped for the default checkpoint), else the "
        "checkpoint is exported once into ~/.cache/dehaze_ros/onnx and reused.",
        "configure",
    ),
    ParameterSpec(
        "trt_cache_dir",
        "",
        "backend onnxruntime with TensorRT: folder of the built TensorRT engines, so a "
        "restart skips the build. Empty: ~/.cache/dehaze_ros/tensorrt.",
        "configure",
    ),
    ParameterSpec(
        "device", "auto", "auto (CUDA when available), cpu, cuda or cuda:N.", "configure"
    ),
    ParameterSpec(
        "precision",
        "auto",
        "auto (bf16 on CUDA GPUs that support it, else fp16; on a CPU bf16 where it is native, "
        "AVX512-BF16 or AMX, else fp32; openvino likewise), fp32, fp16 or bf16 (fp16 needs "
        "CUDA; bf16 on a CPU needs native bf16). backend onnxruntime: fp32 (auto included), "
        "fp16 only through TensorRT.",
        "configure",
        choices=PRECISIONS,
    ),
    ParameterSpec(
        "max_side",
        DEFAULT_MAX_SIDE,
        "The size the networks run at (outputs keep the input size), as size_rule says: "
        "the longer side at most max_side (the default), or for frames wider than 4:3 the "
        "pixels of a 4:3 frame whose longer side is max_side (320: 320x240 = 76800 pixels, "
        "aspect kept); 0 = native resolution. 320: the shipped checkpoint's training and "
        "validation resolution and CPU real time; "
        "416-480 raise PSNR on three of four development sets at 1.5-2.0x the CPU time "
        "(docs/performance.md, 'Choosing max_side'); 0 gives more dehazing detail where "
        "a GPU has the time (metric depth stays at depth_max_side).",
        "configure",
        minimum=0,
        maximum=8192,
    ),
    ParameterSpec(
        "size_rule",
        DEFAULT_SIZE_RULE,
        "How max_side and depth_max_side size the networks' input. side: the longer side "
        "at most max_side (1242x375 runs at 320x97). pixels: the larger of that and "
        "max_side x (3/4 max_side) pixels, aspect kept (1242x375 runs at 496x150, 1.6-1.8x "
        "the CPU time): on rendered 1242x375 road frames +0.1-1.1 dB in fog, -1.1 to -3.0 dB "
        "in clear air; -0.2 dB on Middlebury, worse ground-plane depth (docs/dense_fog.md). Frames "
        "up to about 10% wider than 4:3, and squarer ones, get the same size either way.",
        "configure",
        choices=SIZE_RULES,
    ),
    ParameterSpec(
        "depth_max_side",
        DEFAULT_DEPTH_MAX_SIDE,
        "Estimate metric depth at this size (sized by size_rule, as max_side is), "
        "whatever max_side is (a second, depth-only network pass when the sizes differ): a "
        "monocular network's metres hold at the resolution it was trained at, 320 for the "
        "shipped checkpoint. 0 = at max_side's size, one pass. Relative depth (dcp) "
        "always follows max_side.",
        "configure",
        minimum=0,
        maximum=8192,
    ),
    ParameterSpec(
        "upsampling",
        "auto",
        "How outputs return to the input size when max_side shrinks the image: guided "
        "(transmission upsampled by a guided filter on the full-resolution image, then the "
        "scattering model inverted there), affine (local a*I+b fit), bilinear (plain "
        "upsampling); auto: guided for the networks, affine for dcp (each measured best). "
        "Depth is always nearest-neighbour.",
        "configure",
        choices=UPSAMPLING,
    ),
    ParameterSpec(
        "dense_fog",
        dense_fog.DEFAULT,
        "blend: where the network's transmission says the frame is in dense fog (median "
        "optical depth -ln t above 1, t 0.37), move its t and airlight towards the Dark "
        "Channel Prior's, halfway at -ln t 1.5 and beyond; the DCP runs only then. off: "
        "the network alone, the default: on the rendered road scenes the blend loses "
        "more at 30-50 m visibility than it gains on hazed Middlebury scenes "
        "(docs/dense_fog.md). dcp ignores it.",
        "configure",
        choices=dense_fog.MODES,
    ),
    ParameterSpec(
        "num_threads",
        0,
        "CPU threads of the backend (torch, or OpenVINO's inference threads); 0 = the "
        "runtime's default (all cores).",
        "configure",
        minimum=0,
        maximum=256,
    ),
    ParameterSpec(
        "default_hfov_deg",
        DEFAULT_HFOV_DEG,
        "Horizontal field of view (degrees) assumed for metric depth while no camera_info "
        "has arrived: the networks' depth is in a canonical camera and becomes metres "
        "through the focal length, taken from camera_info when there is one. "
        "/diagnostics says which.",
        "configure",
        minimum=1.0,
        maximum=179.0,
    ),
    ParameterSpec(
        "depth_from_haze",
        EngineConfig.depth_from_haze,
        "Read the depth's shape from the haze too (-ln t = beta d): fuse blends the "
        "transmission's -ln t, tied to the network's metres by a fitted beta, into the "
        "metric depth where the haze is informative (0.11 < t < 0.97, not sky) and "
        "agrees with the network locally; clear air, sky and saturated haze keep the "
        "network's depth. off: the depth network alone. dcp and checkpoints whose head "
        "predicts no transmission ignore it (docs/depth.md, 'Depth from the haze').",
        "configure",
        choices=DEPTH_FROM_HAZE,
    ),
    ParameterSpec(
        "camera_height_m",
        0.0,
        "Height of the camera above the ground in metres (KITTI's: 1.65). Set, it fixes the "
        "metric scale of depth from the ground plane found in each frame (camera height / "
        "fitted height, smoothed over frames; held up to 10 s when a frame shows no ground, "
        "then the network's own scale); with camera_pitch_deg also set, the ground's depth "
        "replaces the network's on the road and bounds it below the horizon. 0: off, the "
        "network's own metres. /diagnostics says which scale is in use.",
        "configure",
        minimum=0.0,
        maximum=100.0,
    ),
    ParameterSpec(
        "camera_pitch_deg",
        math.nan,
        "Tilt of the camera's optical axis below the horizontal in degrees (positive looks "
        "down, as the pitch of a camera body in REP-103), within +-45; the camera is "
        "assumed not to roll. .nan: unknown, the ground plane's orientation is estimated "
        "per frame and only the scale is applied.",
        "configure",
        minimum=-45.0,
        maximum=45.0,
    ),
    ParameterSpec(
        "anchor_max_age_s",
        AnchorRules.max_age_s,
        "Metric points on `anchor_points` (sensor_msgs/PointCloud2: a LiDAR, radar, stereo "
        "or ToF sensor) fix the depth's scale, and its shape near them, before the ground "
        "plane; the cloud nearest in time to the frame is used when its stamp is within "
        "this many seconds of the image's, else the frame is refused as stale "
        "(/diagnostics says so) and the last factor is held.",
        "configure",
        minimum=0.0,
        maximum=10.0,
    ),
    ParameterSpec(
        "anchor_min_points",
        AnchorRules.min_points,
        "Anchor points that must land on the image with a prediction there (and agree) "
        "for a scale; fewer: the frame is refused and counted.",
        "configure",
        minimum=3,
        maximum=100000,
    ),
    ParameterSpec(
        "anchor_fit",
        AnchorRules.fit,
        "scale: one robust factor per frame (smoothed over frames like the ground's); "
        "scale_shift: plus a shift in inverse depth per frame (measured: better only on "
        "close-range scenes, docs/depth.md).",
        "configure",
        choices=ANCHOR_FITS,
    ),
    ParameterSpec(
        "anchor_refine",
        AnchorRules.refine,
        "Correct the depth's shape near the anchor points (their residual ratio spread over "
        "the image, fading to the global factor away from them); false: the factor only.",
        "configure",
    ),
    ParameterSpec(
        "anchor_extrinsic",
        "",
        "How `anchor_points` reach the camera optical frame when the cloud's frame_id is "
        "not the image's: '' = tf2 (when installed) looks the transform up at the cloud's "
        "stamp; 'x y z qx qy qz qw' = a static pose of the cloud's frame in the camera "
        "optical frame (metres, unit quaternion), used for every cloud. A cloud whose "
        "frame_id equals the image's (or is empty) is used as it is.",
        "configure",
    ),
    ParameterSpec(
        "warmup",
        1,
        "Warm-up passes at configure, so the first real frame is not slow.",
        "configure",
        minimum=0,
        maximum=20,
    ),
    ParameterSpec(
        "publish_dehazed", True, "Publish dehazed/image and dehazed/camera_info.", "live"
    ),
    ParameterSpec(
        "publish_depth",
        True,
        "Publish depth/image (32FC1 metres, REP-118) and depth/camera_info.",
        "live",
    ),
    ParameterSpec(
        "publish_colormap",
        True,
        "Publish depth/colormap (bgr8 false colour over the fixed range below).",
        "live",
    ),
    ParameterSpec(
        "publish_points",
        True,
        "Publish points (PointCloud2 x,y,z,rgb in the camera frame; needs camera_info).",
        "live",
    ),
    ParameterSpec(
        "publish_visibility",
        True,
        "Publish visibility (sensor_msgs/Range, the input's header): the visual range "
        "V = 3.912 / beta in metres estimated from the frame's transmission and metric "
        "depth (-ln t = beta d); NaN when the frame gives no estimate, +inf when clear "
        "beyond max_range, -inf when denser than min_range. Also in /diagnostics. Needs "
        "metric depth (a checkpoint, not dcp); while `visibility` has a subscriber the "
        "depth network runs even if no depth topic has one.",
        "live",
    ),
    ParameterSpec(
        "publish_confidence",
        True,
        "Publish depth/confidence (32FC1 in [0, 1], the input's header and size): how often "
        "a depth pixel of its kind was within 25 % of the truth on rendered vehicle views: "
        "corrected by nearby anchor points 0.94, the ground plane's depth 0.88, network "
        "depth bounded by the ground 0.91, scaled by a source 0.47, at the network's own "
        "scale 0.28; 0 where depth/image has no "
        "finite number. For a costmap to drop guesses. Made only while someone subscribes; "
        "needs metric depth.",
        "live",
    ),
    ParameterSpec(
        "publish_relative_depth",
        False,
        "When the model's depth is relative (dcp), still publish it on depth/image and "
        "points (values are then unitless, not metres). Off by default so consumers of "
        "depth/image only ever see metres.",
        "live",
    ),
    ParameterSpec(
        "colormap_min_m",
        0.5,
        "Near end of the depth colormap in metres (log scale, red).",
        "live",
        minimum=0.001,
        maximum=1000.0,
    ),
    ParameterSpec(
        "colormap_max_m",
        50.0,
        "Far end of the depth colormap in metres (blue); farther and sky are blue too.",
        "live",
        minimum=0.01,
        maximum=100000.0,
    ),
    ParameterSpec(
        "colormap_relative_max",
        2.3,
        "Far end of the colormap for relative depth (linear from 0). The DCP's relative "
        "depth is the optical depth -ln(t), at most -ln(0.1) = 2.3.",
        "live",
        minimum=0.001,
        maximum=1000.0,
    ),
    ParameterSpec(
        "point_decimation",
        4,
        "Use every N-th pixel in rows and columns for `points` (1 = every pixel).",
        "live",
        minimum=1,
        maximum=64,
    ),
    ParameterSpec(
        "max_rate_hz",
        0.0,
        "Process at most this many frames per second (newest frame wins); 0 = as fast "
        "as frames arrive and the model allows.",
        "live",
        minimum=0.0,
        maximum=1000.0,
    ),
    ParameterSpec(
        "max_input_pixels",
        DEFAULT_MAX_PIXELS,
        "Drop frames with more pixels (width x height) than this as invalid, raw or "
        "compressed; a compressed frame's size is read from its PNG/JPEG header before "
        "anything is decoded, so a small file that declares a huge image costs nothing. "
        "Bounds the node's memory: a frame costs about 40 bytes a pixel while it is "
        "processed (about 0.7 GB at the default, 16777216 = 4096 x 4096).",
        "live",
        minimum=1,
        maximum=16384 * 16384,
    ),
    ParameterSpec(
        "depth_inf_as_nan",
        False,
        "Publish depth outside the model's range as NaN on depth/image instead of "
        "REP-117's +inf (too far) and -inf (too close), for consumers that mishandle "
        "infinities (some depthimage_to_laserscan versions and costmap layers). "
        "Off: REP-117.",
        "live",
    ),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


# Parameters that are EngineConfig fields, matched by name: the node hands them to the engine,
# whose own rules (device names, the smallest max_side, ...) validate them. A new engine setting
# needs only a row above; test_node_helpers fails while an EngineConfig field has none.
ENGINE_PARAMETERS = tuple(
    field.name for field in dataclasses.fields(EngineConfig) if field.name in SPECS
)


class _NodeConfigRules:
    """The methods of NodeConfig; its fields are the rows of PARAMETERS (see below)."""

    def validate(self) -> None:
        """Raise ConfigError listing every problem (types, choices, ranges, cross-field rules)."""
        problems, bad_fields = [], set()
        for spec in PARAMETERS:
            found = spec.problems(getattr(self, spec.name))
            if found:
                bad_fields.add(spec.name)
                problems += found
        if "anchor_extrinsic" not in bad_fields and self.anchor_extrinsic.strip():
            try:
                parse_extrinsic(self.anchor_extrinsic)
            except ValueError as exc:
                problems.append(f"anchor_extrinsic: {exc}")
        if (
            not {"colormap_min_m", "colormap_max_m"} & bad_fields
            and not self.colormap_min_m < self.colormap_max_m
        ):
            problems.append(
                f"colormap_min_m ({self.colormap_min_m}) must be smaller than "
                f"colormap_max_m ({self.colormap_max_m})"
            )
        # The engine's own rules live in EngineConfig.validate; asked only when the table found
        # its fields well-typed, so a problem is reported once. It names one problem at a time.
        if not bad_fields & set(ENGINE_PARAMETERS):
            try:
                self.engine_config().validate()
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("invalid parameters: " + "; ".join(problems))

    def engine_config(self, choice: ModelChoice | None = None) -> EngineConfig:
        """The EngineConfig these parameters describe: every EngineConfig field from the parameter
        of its name; model and checkpoint from ``choice`` (resolve_model) when given."""
        values = {name: getattr(self, name) for name in ENGINE_PARAMETERS}
        if choice is not None:
            values.update(model=choice.model, checkpoint=choice.checkpoint)
        return EngineConfig(**values)

    def replace(self, **changes) -> "NodeConfig":
        return dataclasses.replace(self, **changes)


# The node's parameters as one frozen dataclass, made from the table: a field per row, of the
# row's type, at the row's default. Adding a parameter is adding a row.
NodeConfig = dataclasses.make_dataclass(
    "NodeConfig",
    [
        (spec.name, type(spec.default), dataclasses.field(default=spec.default))
        for spec in PARAMETERS
    ],
    bases=(_NodeConfigRules,),
    frozen=True,
)
NodeConfig.__module__ = __name__  # make_dataclass's `module` argument is Python 3.12's


def default_checkpoint_candidates() -> list[Path]:
    """The shipped checkpoint: installed once, inside the Python package, for colcon and pip alike
    (engine.DEFAULT_CHECKPOINT is the one place that knows where)."""
    return [DEFAULT_CHECKPOINT]


@dataclass(frozen=True)
class ModelChoice:
    model: str  # "checkpoint" | "dcp"
    checkpoint: str  # resolved path, "" for dcp
    warning: str = ""  # set when the node fell back from the requested model


def resolve_model(config: NodeConfig) -> ModelChoice:
    """Which model and file configure will load. An explicit checkpoint path is used as given
    (a missing file then fails configure with its name); an empty one means the shipped
    checkpoint, and DCP with a warning when none is installed."""
    if config.model == "dcp":
        return ModelChoice("dcp", "")
    if config.checkpoint:
        return ModelChoice("checkpoint", os.path.expanduser(config.checkpoint))
    if config.backend != "torch" and config.onnx_model:
        return ModelChoice("checkpoint", "")  # the graph is the model: no checkpoint is read
    candidates = default_checkpoint_candidates()
    for path in candidates:
        if path.is_file():
            return ModelChoice("checkpoint", str(path))
    looked = ", ".join(str(path) for path in candidates)
    return ModelChoice(
        "dcp",
        "",
        warning=(
            f"no shipped checkpoint found (looked in: {looked}); falling back to model dcp (Dark "
            "Channel Prior, relative depth). Set the `checkpoint` parameter to a trained model for "
            "metric depth."
        ),
    )


@dataclass(frozen=True)
class RefusedValue:
    """A start-up value that failed the table; the parameter was declared with its default."""

    spec: ParameterSpec
    given: object

    def __str__(self) -> str:
        return f"{self.spec.name}:={self.given!r} is not {self.spec.allowed}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def yaml_value(value) -> str:
    """``value`` as YAML (and rcl's parameter parser) reads it: JSON spells bools, numbers and
    quoted strings that way; NaN is YAML's `.nan` (JSON's `NaN` would be read as a string)."""
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    return json.dumps(value)


def parameters_yaml() -> str:
    """config/dehaze.yaml, written from the table: every parameter at its default, with its stage,
    description, choices and range as a comment. test_node_config_files checks that the file is
    exactly this; after changing the table, regenerate it with

        python -c "from dehaze_ros.ros.node_config import parameters_yaml as y; \\
            print(y(), end='')" > config/dehaze.yaml
    """
    lines = [
        "# dehaze_node parameters. Every parameter the node declares is listed, at its default.",
        "# Written from the parameter table in dehaze_ros/ros/node_config.py (parameters_yaml): "
        "change",
        "# the table, not this file (a test checks that they agree).",
        "# Load with: ros2 run dehaze_ros dehaze_node --ros-args --params-file config/dehaze.yaml",
        "# (the launch file does this). `/**` matches the node under any name or namespace.",
        "# When a change takes effect: [startup] read-only, fixed at start-up; [configure] applied "
        "by",
        "# the configure transition (change while unconfigured); [live] applied to the next frame.",
        "# QoS of any topic can be overridden too, e.g.",
        "#   qos_overrides./camera/image_raw.subscription.reliability: reliable",
        "/**:",
        "  ros__parameters:",
    ]
    for spec in PARAMETERS:
        comment = f"[{spec.stage}] {spec.description}"
        if spec.choices:
            comment += " One of: " + ", ".join(spec.choices) + "."
        elif spec.minimum is not None:
            comment += f" Range {_number(spec.minimum)} to {_number(spec.maximum)}."
        lines += textwrap.wrap(
            comment,
            width=100,
            initial_indent="    # ",
            subsequent_indent="    # ",
            break_on_hyphens=False,
        )
        lines.append(f"    {spec.name}: {yaml_value(spec.default)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# rclpy side: declaration with descriptors and reading back. rclpy is imported inside the
# functions so that the table above can be inspected (tests, docs) without a ROS install.


def _descriptor(spec: ParameterSpec):
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    kinds = {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
    }
    notes = {
        "startup": "Read once at start-up (read-only).",
        "configure": "Applied at configure; change it while unconfigured.",
        "live": "Applied to the next frame.",
    }
    constraints = [notes[spec.stage]]
    if spec.choices:
        constraints.insert(0, "One of: " + ", ".join(spec.choices) + ".")
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=kinds[type(spec.default)],
        description=spec.description,
        additional_constraints=" ".join(constraints),
        read_only=spec.stage == "startup",
    )
    # rclpy checks a range on every value, and NaN lies in none: a parameter whose default means
    # "unknown" by NaN (camera_pitch_deg) keeps its range in the table's check and the engine's.
    if (
        isinstance(spec.default, float)
        and spec.minimum is not None
        and not math.isnan(spec.default)
    ):
        descriptor.floating_point_range = [
            FloatingPointRange(
                from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0
            )
        ]
    elif (
        isinstance(spec.default, int)
        and not isinstance(spec.default, bool)
        and spec.minimum is not None
    ):
        descriptor.integer_range = [
            IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)
        ]
    return descriptor


def _value_given_at_startup(node, spec: ParameterSpec):
    """The value of ``spec`` as the node was started (-p, --params-file), else its default.

    rclpy applies start-up values when a parameter is declared, and refuses one that fails the
    descriptor without telling which value it was. So the parameter is first declared with a
    descriptor that takes any value of any type, read back, and undeclared again; the real
    declaration follows. (rclpy has no public getter for the start-up values.)
    """
    from rcl_interfaces.msg import ParameterDescriptor

    given = node.declare_parameter(
        spec.name, spec.default, ParameterDescriptor(dynamic_typing=True)
    ).value
    node.undeclare_parameter(spec.name)
    return given


def declare_node_parameters(node) -> list[RefusedValue]:
    """Declare every parameter on ``node``; return the start-up values that had to be refused
    (each is declared with its default instead, so the node comes up)."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    refused = []
    for spec in PARAMETERS:
        descriptor = _descriptor(spec)
        # Checked against the table here, which catches what a descriptor cannot express
        # (choices) and keeps the refused value, to name it in the error.
        given = _value_given_at_startup(node, spec)
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
        if (
            spec is not None
            and isinstance(spec.default, float)
            and parameter.type_ == Parameter.Type.INTEGER
        ):
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
