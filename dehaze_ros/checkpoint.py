"""Self-describing checkpoints: everything needed to rebuild and use the networks, in one file.

A checkpoint is a plain dict of Python types and tensors, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs on load):

    format            "dehaze_ros.checkpoint"
    format_version    CHECKPOINT_FORMAT_VERSION
    model_config      ModelConfig.to_dict() of the preset (or custom config) the weights belong to
    dehazer           state dict of the dehazing network D (CPU tensors, unwrapped module)
    depth_net         state dict of the depth network E, or None
    io                conventions: colour order, value range, layout of inputs and outputs
    depth             {"units": "meters" | "relative", "range_m": [near, far]}
    provenance        how it was made (config, data, steps, git commit, date)
    metrics           validation numbers, plain floats

Writes are atomic (temporary file in the same folder, then ``os.replace``), so a crash or Ctrl-C
never leaves a half-written checkpoint where a good one was.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

CHECKPOINT_FORMAT = "dehaze_ros.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
DEPTH_UNITS = ("meters", "relative")
DEFAULT_IO = {
    "color_order": "rgb",
    "value_range": [0.0, 1.0],
    "layout": "NCHW float",
    "dehazer": "hazy RGB [0,1] -> dehazed RGB [0,1] (clamp at use)",
    "depth_net": "RGB [0,1] -> depth B x 1 x H x W in depth.units",
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, of another format, or does not fit its model."""


@dataclass(frozen=True)
class Checkpoint:
    path: str
    model_config: dict
    dehazer_state: dict
    depth_net_state: dict | None
    depth_units: str
    depth_range_m: tuple[float, float]
    io: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (which checkpoint an ONNX graph or a fine-tune came from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into a temporary file beside ``path``, fsync, then rename over ``path``:
    readers see the old file or the whole new one, never a half-written one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            write(tmp_file)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the
        # umask), so a checkpoint installed by colcon or shared in a run folder is readable.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, target)
    except BaseException:
        # KeyboardInterrupt included: the old file stays intact, the partial one goes.
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through ``atomic_write``."""
    atomic_write(path, lambda file: torch.save(obj, file))


def _cpu_state(state: dict | None) -> dict | None:
    if state is None:
        return None
    return {key: value.detach().cpu() for key, value in state.items()}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model_config: dict,
    dehazer_state: dict,
    depth_net_state: dict | None,
    depth_units: str = "meters",
    depth_range_m: tuple[float, float] = (0.1, 80.0),
    provenance: dict | None = None,
    metrics: dict | None = None,
    io: dict | None = None,
) -> None:
    """Write a deployable checkpoint atomically. State dicts are moved to CPU."""
    if depth_units not in DEPTH_UNITS:
        raise ValueError(f"depth_units must be one of {DEPTH_UNITS}, got {depth_units!r}")
    near, far = (float(v) for v in depth_range_m)
    if not 0 <= near < far:
        raise ValueError(
            f"depth_range_m must be (near, far) with 0 <= near < far, got {depth_range_m}"
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_config": dict(model_config),
        "dehazer": _cpu_state(dehazer_state),
        "depth_net": _cpu_state(depth_net_state),
        "io": dict(io or DEFAULT_IO),
        "depth": {"units": depth_units, "range_m": [near, far]},
        "provenance": dict(provenance or {}),
        "metrics": dict(metrics or {}),
    }
    atomic_torch_save(payload, path)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Read and check a checkpoint; raise CheckpointError saying what is wrong with which file."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(child.name for child in path.glob("*.pt"))[:5]
        raise CheckpointError(
            f"checkpoint {path} is a directory, not a checkpoint file; give the path of the .pt "
            "file" + (f" (it holds: {', '.join(inside)})" if inside else "")
        )
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (no such file)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:  # permissions: the OS's words are the right ones
        raise CheckpointError(
            f"checkpoint {path} could not be read: {exc.strerror or exc}"
        ) from exc
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of foreign files; the error below says it all.
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled code: all unreadable to us
        raise CheckpointError(_unreadable_checkpoint_message(path, exc)) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a dehaze_ros checkpoint (format field: {found!r}); training state files "
            "(last.pt/best.pt) are exported with `python -m training.export`"
        )
    version = payload.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this dehaze_ros reads version "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )
    missing = [key for key in ("model_config", "dehazer", "depth") if not payload.get(key)]
    if missing:
        raise CheckpointError(f"{path} lacks required entries: {', '.join(missing)}")
    depth = payload["depth"]
    units = depth.get("units")
    if units not in DEPTH_UNITS:
        raise CheckpointError(f"{path}: depth units {units!r} not one of {DEPTH_UNITS}")
    near, far = depth.get("range_m", (0.1, 80.0))
    return Checkpoint(
        path=str(path),
        model_config=payload["model_config"],
        dehazer_state=payload["dehazer"],
        depth_net_state=payload.get("depth_net"),
        depth_units=units,
        depth_range_m=(float(near), float(far)),
        io=payload.get("io", {}),
        provenance=payload.get("provenance", {}),
        metrics=payload.get("metrics", {}),
    )


# How to make a file the node can load, for the end of every "this is not one" message.
_HOW_TO_MAKE_ONE = (
    "a dehaze_ros checkpoint is written by training (`python -m training.train`, "
    "docs/training.md) and exported with `python -m training.export RUN_DIR/best.pt -o "
    "model.pt`"
)


def _unreadable_checkpoint_message(path: Path, exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused ``path``, in words for a robot's operator.

    torch's own text is not passed on when it is about the weights-only unpickler: it suggests
    re-running with weights_only=False, which executes whatever code the file carries.
    """
    text = str(exc)
    if "weights_only" in text or "Weights only" in text:
        unsafe = re.search(r"GLOBAL ([\w.]+)", text)
        if unsafe:
            return (
                f"checkpoint {path} could not be read: it is not a dehaze_ros checkpoint and is "
                f"unsafe to load (it contains pickled Python objects, {unsafe.group(1)}, that "
                "would run code when loaded; dehaze_ros never loads such files); "
                + _HOW_TO_MAKE_ONE
            )
        detail = "not a torch file"
    elif "PytorchStreamReader" in text:  # a zip archive torch cannot read: say what is damaged
        detail = "damaged archive: " + text.splitlines()[0].split(":", 1)[-1].strip()
    else:  # torch's internals (IndexError, ...) mean nothing to the reader
        detail = "not a torch file"
    return (
        f"checkpoint {path} could not be read ({detail}): the file is corrupt, truncated or not "
        f"a dehaze_ros checkpoint; " + _HOW_TO_MAKE_ONE
    )


def _load_state_strict(module: torch.nn.Module, state: dict, what: str, path: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} (checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)})"
        for key in set(expected) & set(state)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or mismatched:

        def _short(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        problems = []
        if missing:
            problems.append(f"missing keys: {_short(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_short(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {_short(mismatched)}")
        raise CheckpointError(
            f"{path}: {what} weights do not fit its model_config; " + "; ".join(problems)
        )
    module.load_state_dict(state, strict=True)


def build_models(ckpt: Checkpoint) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """Rebuild (dehazer, depth_net) from the checkpoint alone, weights loaded strictly, eval mode."""
    from dehaze_ros.models import ModelConfig, build_dehazer, build_depth_net

    try:
        config = ModelConfig.from_dict(ckpt.model_config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.path}: model_config is invalid: {exc}") from exc
    dehazer = build_dehazer(config)
    _load_state_strict(dehazer, ckpt.dehazer_state, "dehazer", ckpt.path)
    depth_net = None
    if ckpt.depth_net_state is not None:
        depth_net = build_depth_net(config)
        _load_state_strict(depth_net, ckpt.depth_net_state, "depth_net", ckpt.path)
        depth_net.eval()
    dehazer.eval()
    return dehazer, depth_net
