"""Configuration files and overrides (training/config.py): YAML with ``inherit:`` chains,
``key.path=value`` overrides, which of them a resumed run may take, the saved config.yaml, and
source paths relative to data.root."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from training.config_checks import ConfigError

if TYPE_CHECKING:
    from training.config import TrainingConfig


# Keys that may change when a run is resumed: they do not alter what the run computes.
RESUMABLE_OVERRIDES = ("train.max_minutes", "data.workers", "train.log_every", "train.image_every")


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


def save_config(config: TrainingConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def resolve_path(root: str | Path, path: str) -> Path:
    """A source path: absolute as is, otherwise relative to data.root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(root).expanduser() / candidate
