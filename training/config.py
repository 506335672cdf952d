"""Training configuration: dataclasses loaded from YAML, with type-checked ``key=value`` overrides.

    config = load_config("config/train/diacmpn_rt.yaml", ["train.steps=2000", "data.root=/data"])

A YAML file may start from another one with ``inherit: other.yaml`` (a path relative to the
file); its keys are merged over the inherited ones, mappings key by key. Every key is checked
against the dataclasses below: an unknown key or a value of the wrong type raises ``ConfigError``
naming the key, what was expected and, for typos, the nearest valid key. ``validate`` then checks
value ranges and choices. The resolved configuration (``to_dict``) is saved in the run folder.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dehaze_ros.devices import PRECISIONS, validate_device

SCHEDULES = ("alternating", "joint")
SELECT_METRICS = ("psnr", "ssim", "abs_rel")
FREEZABLE = ("dehazer", "depth_net")
# Keys that may change when a run is resumed: they do not alter what the run computes.
RESUMABLE_OVERRIDES = ("train.max_minutes", "data.workers", "train.log_every", "train.image_every")


class ConfigError(ValueError):
    """A training configuration file, key or value is invalid."""


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


# --------------------------------------------------------------------------------------------
# Files and overrides


def _deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml_config(path: str | Path, _seen: tuple = ()) -> dict:
    """The raw mapping of a config file, with ``inherit:`` chains resolved."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"config inheritance loops back to {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    parent = raw.pop("inherit", None)
    if parent:
        base = read_yaml_config(path.parent / parent, _seen + (path.resolve(),))
        raw = _deep_merge(base, raw)
    raw.setdefault("name", path.stem)
    return raw


_OVERRIDE = re.compile(r"^([A-Za-z_][\w\-]*(?:\.[\w\-]+)*)=(.*)$", re.S)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is read as YAML (``[1, 2]``)."""
    match = _OVERRIDE.match(text)
    if not match:
        raise ConfigError(
            f"override {text!r} is not of the form key.path=value "
            "(e.g. train.steps=2000 or data.sources.rgbd.weight=0.5)"
        )
    key, raw_value = match.groups()
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' holds a value, not a mapping")
            node = child
        node[path[-1]] = value
    return raw


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


def save_config(config: TrainingConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------------------------
# Value checks


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def require_range(key: str, pair: list[float], low: float, high: float) -> None:
    require(
        len(pair) == 2 and low <= pair[0] <= pair[1] <= high,
        f"{key} must be [min, max] with {low} <= min <= max <= {high}, got {pair}",
    )


def _validate_train(train: TrainConfig) -> None:
    """The train section: schedule, precision, selection metric, device, steps, freezing, limits
    and intervals."""
    require(
        train.schedule in SCHEDULES,
        f"train.schedule must be one of {SCHEDULES}, got {train.schedule!r}",
    )
    require(
        train.precision in PRECISIONS,
        f"train.precision must be one of {PRECISIONS}, got {train.precision!r}",
    )
    require(
        train.select_metric in SELECT_METRICS,
        f"train.select_metric must be one of {SELECT_METRICS}, got {train.select_metric!r}",
    )
    try:
        validate_device(train.device)
    except ValueError as exc:
        raise ConfigError(f"train.{exc}") from None
    require(train.steps > 0, f"train.steps must be > 0, got {train.steps}")
    unknown = [name for name in train.freeze if name not in FREEZABLE]
    require(not unknown, f"train.freeze may name {FREEZABLE}, got {unknown}")
    require(
        len(set(train.freeze)) < len(FREEZABLE),
        f"train.freeze names both networks {FREEZABLE}: nothing would train",
    )
    require(
        not train.freeze or train.schedule == "alternating",
        f"train.freeze needs train.schedule 'alternating' (each network has its own step), "
        f"got {train.schedule!r}",
    )
    require(
        "dehazer" not in train.freeze or train.select_metric == "abs_rel",
        "train.freeze=[dehazer] keeps the validation PSNR and SSIM constant: set "
        f"train.select_metric=abs_rel so best.pt is chosen on depth, got {train.select_metric!r}",
    )
    require(
        not train.freeze or bool(train.init_from),
        f"train.freeze={train.freeze} without train.init_from would keep randomly initialised "
        "weights; give the checkpoint whose networks stay as they are",
    )
    require(
        train.max_minutes >= 0,
        f"train.max_minutes must be >= 0 (0 = no limit), got {train.max_minutes}",
    )
    require(
        0.0 <= train.ema_decay < 1.0, f"train.ema_decay must lie in [0, 1), got {train.ema_decay}"
    )
    for key in ("checkpoint_every", "val_every", "log_every", "image_every"):
        require(getattr(train, key) > 0, f"train.{key} must be > 0, got {getattr(train, key)}")


def _validate_data(data: DataConfig) -> None:
    """The data section: crop, batches, workers, validation sizes and the sources."""
    require(data.crop >= 16, f"data.crop must be at least 16 pixels, got {data.crop}")
    require(data.batch_size >= 1, f"data.batch_size must be >= 1, got {data.batch_size}")
    require(data.workers >= -1, f"data.workers must be -1 (auto) or >= 0, got {data.workers}")
    require(data.val_max_side >= 32, f"data.val_max_side must be >= 32, got {data.val_max_side}")
    require(
        data.val_max_images >= 1, f"data.val_max_images must be >= 1, got {data.val_max_images}"
    )
    require(
        bool(data.sources),
        "data.sources is empty: name at least one source "
        "(e.g. data.sources.procedural={kind: procedural})",
    )
    require(
        any(source.weight > 0 for source in data.sources.values()),
        "every data source has weight 0: give at least one a positive weight",
    )
    for name, source in data.sources.items():
        source.check(f"data.sources.{name}")


def _validate_loss(loss: LossConfig) -> None:
    """The loss weights and their parameters."""
    for item in dataclasses.fields(loss):
        value = getattr(loss, item.name)
        require(value >= 0, f"loss.{item.name} must be >= 0, got {value}")
    require(
        loss.difference_temperature > 0,
        f"loss.difference_temperature must be > 0, got {loss.difference_temperature}",
    )
    require(loss.silog_lambda <= 1.0, f"loss.silog_lambda must be <= 1, got {loss.silog_lambda}")
    require(
        loss.l1 + loss.ssim > 0, "loss.l1 and loss.ssim are both 0: the dehazer would learn nothing"
    )


def _validate_optim(optim: OptimConfig) -> None:
    """The optimiser: learning rates, betas, warm-up, schedule floor, clipping, weight decay."""
    require(
        optim.lr_dehazer > 0 and optim.lr_depth > 0,
        "optim.lr_dehazer and optim.lr_depth must be > 0",
    )
    require(
        len(optim.betas) == 2 and all(0 <= b < 1 for b in optim.betas),
        f"optim.betas must be two numbers in [0, 1), got {optim.betas}",
    )
    require(optim.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {optim.warmup_steps}")
    require(
        0 <= optim.min_lr_ratio <= 1,
        f"optim.min_lr_ratio must lie in [0, 1], got {optim.min_lr_ratio}",
    )
    require(optim.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 = off), got {optim.grad_clip}")
    require(optim.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {optim.weight_decay}")


def validate(config: TrainingConfig) -> None:
    """Raise ConfigError on the first setting out of range, section by section."""
    _validate_train(config.train)
    _validate_data(config.data)
    depth = config.depth
    require(
        0 < depth.min_m < depth.max_m,
        f"depth.min_m and depth.max_m must satisfy 0 < min_m < max_m, got {depth.min_m}, "
        f"{depth.max_m}",
    )
    _validate_loss(config.loss)
    _validate_optim(config.optim)
    require(
        bool(config.model.preset),
        "model.preset is empty: name a preset (diacmpn-s, diacmpn-t, diacmpn-rt)",
    )


def check_resume_overrides(overrides: list[str]) -> None:
    """Only settings that do not change the computation may differ in a resumed run."""
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"override {text!r} cannot be applied to a resumed run: it would change what the "
                f"run computes. On resume only {', '.join(RESUMABLE_OVERRIDES)} may change; start "
                "a new run (train.init_from=<exported checkpoint>) to change anything else"
            )


def resolve_path(root: str | Path, path: str) -> Path:
    """A source path: absolute as is, otherwise relative to data.root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(root).expanduser() / candidate
