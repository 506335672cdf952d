"""The run-state file of a training run (``last.pt``, ``best.pt``): its format, reading and writing.

Export and evaluation read these files without building a trainer, so the format lives here and
nowhere else. A file is one dict that loads with ``torch.load(weights_only=True)``:

    format, format_version     TRAINING_STATE_FORMAT, TRAINING_STATE_VERSION
    step, samples_seen         iterations done; the global data position (over ranks and sessions)
    world_size, elapsed_s      processes of the session that wrote it; training seconds of all sessions
    best, saved_at             the best validation so far ({metric, value, step, metrics}); UTC time
    provenance                 config, model_config, git_commit, torch, run_dir, data, depth_supervised, ...
    skipped_steps              {dehazer, depth_net}: optimiser steps left out for a non-finite gradient
                               norm (absent in files written before that guard: read as 0)
    dehazer, depth_net         state dicts of the networks (CPU tensors)
    ema_dehazer, ema_depth_net state dicts of their moving averages (what export writes)
  last.pt only (``full``): the optimiser state of each network, and the random generators:
    optimizer_dehazer, scheduler_dehazer, scaler_dehazer
    optimizer_depth, scheduler_depth, scaler_depth
    rng                        python, numpy, torch (and cuda) generator states

The run folder's other records are written here too: config.yaml (once, when the run starts),
resumes.jsonl (a line per resumed session) and metrics.jsonl (a line per validation).
"""

from __future__ import annotations

import datetime
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from dehaze_ros.checkpoint import atomic_torch_save
from training.config import TrainingConfig, save_config

TRAINING_STATE_FORMAT = "dehaze_ros.training_state"
TRAINING_STATE_VERSION = 1


class TrainingError(RuntimeError):
    """Training cannot start or continue as asked (bad run folder, unusable teacher, ...)."""


def load_training_file(path: str | Path) -> dict:
    """A last.pt / best.pt of a run, checked; raises TrainingError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"training file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TrainingError(
            f"{path} could not be read ({type(exc).__name__}: {first_line}); the file "
            "is corrupt, truncated or not a training state"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise TrainingError(
            f"{path} is not a dehaze_ros training state (last.pt/best.pt of a run "
            "folder); deployable checkpoints go to the engine directly"
        )
    if state.get("format_version") != TRAINING_STATE_VERSION:
        raise TrainingError(
            f"{path} has training state version {state.get('format_version')}; "
            f"this code reads version {TRAINING_STATE_VERSION}"
        )
    return state


def save_training_file(state: dict, path: str | Path) -> Path:
    """Write atomically (temp file, then rename): a crash never leaves a half-written last.pt."""
    if (
        state.get("format") != TRAINING_STATE_FORMAT
        or state.get("format_version") != TRAINING_STATE_VERSION
    ):
        raise ValueError(
            f"not a training state of format {TRAINING_STATE_FORMAT} version {TRAINING_STATE_VERSION}"
        )
    atomic_torch_save(state, path)
    return Path(path)


def rng_state(cuda_device: torch.device | None = None) -> dict:
    """``cuda_device``: only that GPU's generator (under torchrun, where every process touching
    every GPU of the machine would open a CUDA context on each); None: all GPUs."""
    # Lists and tensors only: the state file must load with weights_only=True.
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = (
            [torch.cuda.get_rng_state(cuda_device)]
            if cuda_device is not None
            else torch.cuda.get_rng_state_all()
        )
    return state


def set_rng_state(state: dict, cuda_device: torch.device | None = None) -> None:
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and cuda_device is not None:
        torch.cuda.set_rng_state(state["cuda"][0], cuda_device)
    elif "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_python(value):
    """Plain floats/ints/lists (weights_only-safe, JSON-safe) from numpy and torch scalars."""
    if isinstance(value, dict):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)  # str subclasses (torch's TorchVersion) are not weights_only-loadable
    return value


def git_commit() -> str:
    """The commit of the code that trains, with '+dirty' for uncommitted changes ('' outside git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{commit}+dirty" if commit and dirty else commit


def open_run_folder(run_dir: Path, config: TrainingConfig, resumed_session: dict | None) -> None:
    """config.yaml for a new run (``resumed_session`` None); a line in resumes.jsonl for a resumed one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resumed_session is None:
        save_config(config, run_dir / "config.yaml")
        return
    # Not config.yaml: a resume's overrides (a time budget, workers) are for this session;
    # written there they would silently become the defaults of every later resume.
    record = {
        **resumed_session,
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    append_record(run_dir / "resumes.jsonl", record)


def append_record(path: Path, record: dict) -> None:
    """One JSON line (numpy and torch scalars made plain) at the end of ``path``."""
    with open(path, "a") as handle:
        handle.write(json.dumps(to_python(record)) + "\n")
