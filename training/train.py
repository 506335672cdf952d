"""Alternating dual-task training of the DIACMPN dehazer D and depth network E.

    python -m training.train --config config/train/diacmpn_rt.yaml [key=value ...]
    python -m training.train --resume runs/diacmpn_rt_20250101-120000 [--max-minutes 9]

This module is the command line: it reads the config (or the run folder of a resumed run) and
hands a Trainer (training/trainer.py: the alternating schedule, the loop, the state) its run.

Under ``torchrun --nproc_per_node N -m training.train ...`` N processes train data-parallel
(training/distributed.py, docs/training.md "Several GPUs or machines"); rank 0 alone validates
and writes the run folder.

The run folder holds config.yaml (resolved, written once when the run starts), last.pt (full
training state, written atomically every ``checkpoint_every`` steps, at the end, and on Ctrl-C),
best.pt (weights chosen on the validation split), metrics.jsonl (validation history), resumes.jsonl
(one line per resume, with its overrides) and tb/ (TensorBoard).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Callable

from dehaze_ros.checkpoint import CheckpointError
from dehaze_ros.devices import DeviceError
from training.config import ConfigError, TrainingConfig, check_resume_overrides, load_config
from training.data import DataError
from training.distributed import Distributed
from training.run_state import TrainingError, load_training_file
from training.trainer import Trainer

__all__ = ["Trainer", "main", "new_run_dir", "prepare"]


# --------------------------------------------------------------------------------------------
# Command line


def new_run_dir(config: TrainingConfig) -> Path:
    name = config.train.run_name or f"{config.name}_{datetime.datetime.now():%Y%m%d-%H%M%S}"
    return Path(config.train.out_dir) / name


def prepare(
    config_path: str | None,
    overrides: list[str],
    resume: str | None,
    run_dir: str | None,
    log: Callable[[str], None] = print,
    dist: Distributed | None = None,
) -> Trainer:
    """A Trainer for a new run (config + overrides) or a resumed one (run folder); ``dist`` is
    this process's place under torchrun (``Distributed.from_environment()``), default alone.
    Every rank reads the run folder here (on several machines it must be on a shared disk)."""
    if resume:
        resume_dir = Path(resume)
        if not (resume_dir / "last.pt").is_file() or not (resume_dir / "config.yaml").is_file():
            raise TrainingError(
                f"cannot resume {resume_dir}: it needs config.yaml and last.pt (a run "
                "folder written by training.train)"
            )
        check_resume_overrides(overrides)
        config = load_config(resume_dir / "config.yaml", overrides, saved=True)
        trainer = Trainer(config, resume_dir, log=log, resumed_with=overrides, dist=dist)
        trainer.load_state_dict(load_training_file(resume_dir / "last.pt"))
        trainer.log(
            f"resumed at step {trainer.step}"
            + (f" with {' '.join(overrides)} (this session only)" if overrides else "")
        )
        return trainer
    if not config_path:
        raise ConfigError("give --config FILE for a new run, or --resume RUN_DIR to continue one")
    config = load_config(config_path, overrides)
    target = Path(run_dir) if run_dir else new_run_dir(config)
    if dist is not None and dist.launched:
        dist.start(config.train.device)
        target = Path(dist.broadcast_object(str(target)))  # named after rank 0's clock
    if (target / "last.pt").exists():
        raise TrainingError(
            f"{target} already holds a run (last.pt); continue it with --resume {target} "
            "or choose another train.run_name / --run-dir"
        )
    return Trainer(config, target, log=log, dist=dist)


def main(argv: list[str] | None = None) -> int:
    budget_start = time.monotonic()
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML training config (config/train/*.yaml)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in this folder exactly"
    )
    parser.add_argument(
        "--run-dir", help="folder of a new run (default: train.out_dir/<name>_<date-time>)"
    )
    parser.add_argument(
        "--max-minutes", type=float, help="wall-clock budget (same as train.max_minutes=)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. train.steps=2000 data.root=/data data.sources.rgbd.weight=0.5",
    )
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    dist = None
    try:
        # Under torchrun one of several processes; otherwise alone, with no distributed set-up.
        dist = Distributed.from_environment()
        trainer = prepare(args.config, overrides, args.resume, args.run_dir, dist=dist)
    except (ConfigError, DataError, TrainingError, CheckpointError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if dist is not None:
            dist.stop()
        return 2
    try:
        summary = trainer.fit(budget_start=budget_start)
    except KeyboardInterrupt:
        # No dist.stop() here: other ranks may be inside a collective; torchrun ends them.
        print("aborted by a second Ctrl-C; last.pt holds the last saved state", file=sys.stderr)
        return 130
    finally:
        trainer.close()
    dist.stop()
    # 130 like any program stopped by Ctrl-C (the state is saved); a time budget is a normal end.
    return 130 if summary["reason"].startswith("stopped") else 0


if __name__ == "__main__":
    sys.exit(main())
