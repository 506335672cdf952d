"""Training configuration: dataclasses loaded from YAML, with type-checked ``key=value`` overrides.

    config = load_config("config/train/diacmpn_rt.yaml", ["train.steps=2000", "data.root=/data"])

A YAML file may start from another one with ``inherit: other.yaml`` (a path relative to the
file); its keys are merged over the inherited ones, mappings key by key. Every key is checked
against the dataclasses below: an unknown key or a value of the wrong type raises ``ConfigError``
naming the key, what was expected and, for typos, the nearest valid key. ``validate`` then checks
value ranges and choices. The resolved configuration (``to_dict``) is saved in the run folder.

Here: the dataclasses, their construction from plain mappings with type checks, and load_config.
Files and overrides are in training/config_files.py, the value checks (and ConfigError) in
training/config_checks.py; every name of both stays importable from here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config_checks import (
    FREEZABLE,
    SCHEDULES,
    SELECT_METRICS,
    ConfigError,
    require,
    require_range,
    validate,
)
from training.config_files import (
    RESUMABLE_OVERRIDES,
    apply_overrides,
    check_resume_overrides,
    parse_override,
    read_yaml_config,
    resolve_path,
    save_config,
)

__all__ = [
    "FREEZABLE",
    "RESUMABLE_OVERRIDES",
    "SCHEDULES",
    "SELECT_METRICS",
    "ConfigError",
    "DataConfig",
    "DepthConfig",
    "HazeConfig",
    "LossConfig",
    "ModelSection",
    "OptimConfig",
    "SourceConfig",
    "TrainConfig",
    "TrainingConfig",
    "apply_overrides",
    "check_resume_overrides",
    "load_config",
    "parse_override",
    "read_yaml_config",
    "require",
    "require_range",
    "resolve_path",
    "save_config",
    "source_config",
    "source_config_class",
    "validate",
]


@dataclass
class HazeConfig:
    """How haze is synthesised on clear RGB-D data with the ASM (dehaze_ros.haze).

    Haze density is drawn as the transmission at the crop's median depth, not as a beta in 1/m:
    the same beta that veils a 3 m room lightly turns a 100 m street into a wall of airlight,
    so a transmission range gives every depth range a useful spread of haze.
    """

    transmission_range: list[float] = field(default_factory=lambda: [0.15, 0.85])
    # Metric scenes at vehicle scale: fog as it is reported, a visibility V (metres, log-uniform in
    # this range), beta = 3.912 / V (Koschmieder, 2% contrast). Empty: from transmission_range.
    visibility_range_m: list[float] = field(default_factory=list)
    airlight_range: list[float] = field(default_factory=lambda: [0.7, 1.0])
    airlight_tint: float = 0.05  # per-channel spread of A around its grey level
    nonhomogeneous_prob: float = 0.3  # share of samples whose beta varies smoothly in space
    nonhomogeneous_strength: float = 0.5  # beta is scaled by 1 +- this
    noise_prob: float = 0.5
    noise_std_max: float = 0.02  # Gaussian sensor noise on the hazy image, [0,1] units
    jpeg_prob: float = 0.3
    jpeg_quality_range: list[int] = field(default_factory=lambda: [40, 95])

    def check(self, prefix: str) -> None:
        require_range(f"{prefix}.transmission_range", self.transmission_range, 0.01, 1.0)
        require_range(f"{prefix}.airlight_range", self.airlight_range, 0.0, 1.0)
        require_range(
            f"{prefix}.jpeg_quality_range", [float(q) for q in self.jpeg_quality_range], 1, 100
        )
        for key in ("nonhomogeneous_prob", "noise_prob", "jpeg_prob"):
            value = getattr(self, key)
            require(0.0 <= value <= 1.0, f"{prefix}.{key} must lie in [0, 1], got {value}")
        require(
            0.0 <= self.nonhomogeneous_strength < 1.0,
            f"{prefix}.nonhomogeneous_strength must lie in [0, 1), got "
            f"{self.nonhomogeneous_strength}",
        )
        require(
            self.noise_std_max >= 0 and self.airlight_tint >= 0,
            f"{prefix}.noise_std_max and airlight_tint must be >= 0",
        )
        if self.visibility_range_m:
            require_range(f"{prefix}.visibility_range_m", self.visibility_range_m, 1.0, 1e6)


@dataclass
class SourceConfig:
    """The keys every data source has. Each kind extends it with its own keys in its module
    (training/data/<kind>.py: ResideConfig, RgbdConfig, ProceduralConfig, Rosbag2Config), and
    ``training.data.SOURCES`` maps a kind to its config and source classes.

    ``SourceConfig(kind="rgbd", depth_scale=0.001)`` builds the kind's own class (RgbdConfig).
    """

    kind: str = ""  # reside | rgbd | procedural | rosbag2
    weight: float = 1.0  # share in the mixture (normalised); 0 disables the source

    def __new__(cls, *args, **kwargs):
        if cls is SourceConfig:
            kind = kwargs.get("kind", args[0] if args else "")
            cls = source_config_class(kind, "source")
        return super().__new__(cls)

    def check(self, prefix: str) -> None:
        """Value ranges and choices; raises ConfigError naming ``prefix.key``."""
        require(self.weight >= 0, f"{prefix}.weight must be >= 0, got {self.weight}")


def source_config(raw: dict, key: str) -> SourceConfig:
    """A source's config from a plain mapping (with its ``kind``), type-checked and validated;
    ``key`` names it in errors (``data.sources.<name>``, ``--data SPEC``)."""
    config = _coerce(SourceConfig, raw, key)
    config.check(key)
    return config


def source_config_class(kind: str, key: str) -> type:
    """The config dataclass of a source kind; ``key`` names the source in the error."""
    # The data modules import this module (ConfigError, HazeConfig, SourceConfig): the mapping
    # is looked up when a source config is built, not when this module is imported.
    from training.data import SOURCES

    if kind not in SOURCES:
        raise ConfigError(f"{key}.kind must be one of {tuple(SOURCES)}, got {kind!r}")
    return SOURCES[kind][0]


@dataclass
class DataConfig:
    root: str = "."  # base folder of relative source paths
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    crop: int = 256
    batch_size: int = 8
    workers: int = -1  # DataLoader workers; -1 = auto (0 on CPU, cores-2 on CUDA)
    flips: bool = True  # horizontal flips
    rot90: bool = False  # vertical flips + 90-degree turns (paper); upside-down depth
    cache_items: int = 64  # decoded images kept per source and worker
    val_max_side: int = 320  # validation images are resized to this longer side
    val_max_images: int = 12  # per source
    # Folders (relative to root) that hold test sets: reading them for training or validation is
    # refused, so the best checkpoint can never be picked on test data.
    test_roots: list[str] = field(
        default_factory=lambda: ["sots_indoor", "reside_outdoor", "ohaze"]
    )


@dataclass
class DepthConfig:
    min_m: float = 0.1  # depth targets outside [min_m, max_m] are invalid
    max_m: float = 80.0
    teacher_checkpoint: str = ""  # depth targets for data without depth (metric checkpoint)


@dataclass
class LossConfig:
    """Weights of every loss term; a weight of 0 switches its term off (the paper's ablations)."""

    l1: float = 1.0  # dehazing reconstruction
    ssim: float = 0.2  # dehazing reconstruction, 1 - SSIM
    depth_perception: float = 0.1  # depth -> dehazing: depth difference of E(D(I)), on D
    branch_depth: float = 0.1  # supervision of D's internal depth branch
    depth_weighted: float = 1.0  # dehazing -> depth: E's loss weighted by the difference map
    depth_unweighted: float = 1.0  # E's plain depth loss
    depth_l1: float = 0.1  # inside every depth loss: metric L1 (metres)
    depth_silog: float = 1.0  # inside every depth loss: scale-invariant log term
    silog_lambda: float = 0.85  # < 1 keeps part of the scale error: a scale-aware term
    sky_depth: float = 0.0  # E's hinge pushing sky (+inf targets) beyond depth.max_m
    # Physics heads only: L1 of D's t, of its optical depth -ln t (t's relative error: an error in
    # dense haze weighs more, as it does in J) and of A against the synthetic haze's (samples
    # whose haze is not known, e.g. ITS photographs, and sky pixels are left out). 0 = J is the
    # only dehazing signal.
    transmission: float = 0.0
    optical_depth: float = 0.0
    airlight: float = 0.0
    # Softmax temperature of the difference maps. 1.0 is the literal paper formulation; errors in
    # [0, 1] then give nearly uniform weights, so a smaller value makes the weighting bite.
    difference_temperature: float = 0.2


@dataclass
class OptimConfig:
    lr_dehazer: float = 4e-4
    lr_depth: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 200
    min_lr_ratio: float = 0.01  # cosine ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max gradient norm per network; 0 = off


@dataclass
class ModelSection:
    preset: str = "diacmpn-rt"
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields over the preset


@dataclass
class TrainConfig:
    schedule: str = "alternating"  # alternating (the paper) | joint (one summed backward)
    steps: int = 10000  # iterations; the cosine schedule spans them
    max_minutes: float = 0.0  # wall-clock budget; 0 = none. Stops cleanly with last.pt
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16/fp16 AMP on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    ema_decay: float = 0.999
    checkpoint_every: int = 500  # last.pt
    val_every: int = 500  # validation, best.pt
    log_every: int = 20
    image_every: int = 500  # TensorBoard image grids
    select_metric: str = "psnr"  # what makes best.pt best: psnr | ssim | abs_rel
    out_dir: str = "runs"
    run_name: str = ""  # "" = <config name>_<date-time>
    init_from: str = ""  # start from a deployable checkpoint's weights
    # Networks that keep their (init_from) weights: e.g. [dehazer] fine-tunes only the depth
    # network on a dehazer that is already shipped, so its dehazing stays exactly as it was.
    freeze: list[str] = field(default_factory=list)
    deterministic: bool = True  # deterministic algorithms on CPU (bit-exact resume)
    # Recorded, not a setting: the number of processes (torchrun's WORLD_SIZE) the run started
    # with; data.batch_size is per process, so the global batch is batch_size * world_size.
    # A resume may use another number: resumes.jsonl and last.pt record each session's.
    world_size: int = 1


@dataclass
class TrainingConfig:
    name: str = "run"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainingConfig":
        return _build(cls, raw, "")

    def validate(self) -> "TrainingConfig":
        validate(self)
        return self


# --------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts, with type checks


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(expected)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(expected)[1])}"
    if dataclasses.is_dataclass(expected):
        return "a mapping"
    if expected is Any:
        return "any value"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[expected]


def _coerce(expected: Any, value: Any, key: str) -> Any:
    def fail() -> ConfigError:
        return ConfigError(
            f"config key '{key}' must be {_type_name(expected)}, "
            f"got {value!r} ({type(value).__name__})"
        )

    if expected is Any:
        return copy.deepcopy(value)
    if expected is SourceConfig:
        # A source's keys are those of its kind: the class follows from the value's `kind`.
        if not isinstance(value, dict):
            raise fail()
        expected = source_config_class(value.get("kind", ""), key)
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise fail()
        return _build(expected, value, key)
    origin = typing.get_origin(expected)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise fail()
        item_type = typing.get_args(expected)[0]
        return [_coerce(item_type, item, f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise fail()
        value_type = typing.get_args(expected)[1]
        built = {}
        for sub_key, sub_value in value.items():
            if sub_value is None and dataclasses.is_dataclass(value_type):
                continue  # `data.sources.its=null` removes an inherited source
            built[str(sub_key)] = _coerce(value_type, sub_value, f"{key}.{sub_key}")
        return built
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail()
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML reads "1e-4" (no dot) as a string: accept anything float() reads.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail() from None
        raise fail()
    if expected is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # run_name=2024 from the command line
        raise fail()
    raise TypeError(f"unsupported config field type {expected!r} for {key}")


def _build(cls: type, raw: dict, prefix: str) -> Any:
    if not isinstance(raw, dict):
        where = f"'{prefix}'" if prefix else "the top level"
        raise ConfigError(f"config {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in raw if key not in names]
    if unknown:
        key = unknown[0]
        full = f"{prefix}.{key}" if prefix else str(key)
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f"; did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?" if close else ""
        if issubclass(cls, SourceConfig):
            kind = raw.get("kind", "")
            raise ConfigError(
                f"config key '{full}' is not a key of a source of kind {kind!r}{hint} "
                f"(keys of kind {kind}: {', '.join(names)})"
            )
        raise ConfigError(
            f"unknown config key '{full}'{hint} "
            f"(valid keys{' in ' + repr(prefix) if prefix else ''}: {', '.join(names)})"
        )
    values = {}
    for name in names:
        if name in raw:
            key = f"{prefix}.{name}" if prefix else name
            values[name] = _coerce(hints[name], raw[name], key)
    return cls(**values)


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), saved: bool = False
) -> TrainingConfig:
    """Read, merge overrides, type-check and validate. ``path`` None = the built-in defaults.

    ``saved``: ``path`` is a run folder's config.yaml. Until each kind had its own keys, the
    trainer wrote every key of every kind for each source (each kind ignored the others'); those
    are dropped, so that runs from then resume as before.
    """
    raw = read_yaml_config(path) if path else {}
    if saved:
        for key, source in ((raw.get("data") or {}).get("sources") or {}).items():
            if isinstance(source, dict):
                fields = {
                    item.name
                    for item in dataclasses.fields(
                        source_config_class(source.get("kind", ""), f"data.sources.{key}")
                    )
                }
                for name in set(source) - fields:
                    del source[name]
    config = TrainingConfig.from_dict(apply_overrides(raw, list(overrides)))
    return config.validate()
