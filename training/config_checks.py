"""The value checks of a training configuration (training/config.py): ranges and choices, section by
section (``validate``), and ConfigError, the error every configuration problem raises."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from dehaze_ros.devices import PRECISIONS, validate_device

if TYPE_CHECKING:
    from training.config import DataConfig, LossConfig, OptimConfig, TrainConfig, TrainingConfig


SCHEDULES = ("alternating", "joint")
SELECT_METRICS = ("psnr", "ssim", "abs_rel")
FREEZABLE = ("dehazer", "depth_net")


class ConfigError(ValueError):
    """A training configuration file, key or value is invalid."""


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
