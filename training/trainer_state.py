"""The Trainer's state (training/trainer.py): what last.pt and best.pt hold (weights, optimisers,
RNG, the run's provenance and best validation) and how a resumed run reads it back."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import torch

from training.run_setup import check_resumed_model_config
from training.run_state import (
    TRAINING_STATE_FORMAT,
    TRAINING_STATE_VERSION,
    TrainingError,
    rng_state,
    save_training_file,
    set_rng_state,
    to_python,
)


class TrainerState:
    """The Trainer's state and files (a mixin of Trainer: the networks, optimisers and counters
    are those Trainer.__init__ builds)."""

    @property
    def training_seconds(self) -> float:
        """Training wall time over all sessions of this run, up to now."""
        running = time.monotonic() - self._fit_started if self._fit_started is not None else 0.0
        return self.elapsed_s + running

    def _provenance(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "git_commit": self.git_commit,
            "torch": str(torch.__version__),
            "run_dir": str(self.run_dir),
            "data": {
                "train": {
                    s.name: {"kind": s.kind, "scenes": s.scenes(), "items": len(s)}
                    for s in self.train_sources
                },
                "val": {
                    s.name: {"kind": s.kind, "scenes": s.scenes(), "items": len(s)}
                    for s in self.val_sources
                },
                "test_scenes": {
                    name: list(getattr(src, "test_scenes", []))
                    for name, src in self.config.data.sources.items()
                },
            },
            # A frozen depth network is init_from's: its units, whatever the run's data.
            "depth_supervised": (
                self.init_record.get("depth_units") == "meters"
                if "depth_net" in self.config.train.freeze
                else self.depth_available
            ),
            "teacher_checkpoint": self.config.depth.teacher_checkpoint,
            "init_from": self.init_record,
        }

    def state_dict(self, full: bool = True) -> dict:
        state = {
            "format": TRAINING_STATE_FORMAT,
            "format_version": TRAINING_STATE_VERSION,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "world_size": self.dist.world_size,  # of the session that wrote this file
            "elapsed_s": self.training_seconds,
            "best": to_python(self.best),
            "last_validation": to_python(self.last_validation),
            "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "provenance": to_python(self._provenance()),
            "skipped_steps": {"dehazer": self.D.skipped_steps, "depth_net": self.E.skipped_steps},
            **self.D.weights(),
            **self.E.weights(),
        }
        if full:
            state.update(
                {
                    **self.D.optimisation_state(),
                    **self.E.optimisation_state(),
                    "rng": rng_state(self._rng_cuda_device),
                }
            )
        return state

    def load_state_dict(self, state: dict) -> None:
        if "optimizer_dehazer" not in state:
            raise TrainingError(
                "this training file holds weights only (best.pt); resume reads last.pt"
            )
        check_resumed_model_config(
            (state.get("provenance") or {}).get("model_config"), self.model_config
        )
        self.D.load(state)
        self.E.load(state)
        set_rng_state(state["rng"], self._rng_cuda_device)
        self.step = int(state["step"])
        # The global data position; a resume with another number of processes continues from it.
        self.samples_seen = int(state.get("samples_seen", self.step * self.config.data.batch_size))
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        skipped = state.get("skipped_steps") or {}  # absent in files from before the guard
        self.D.skipped_steps = int(skipped.get("dehazer", 0))
        self.E.skipped_steps = int(skipped.get("depth_net", 0))
        self.best = dict(state.get("best") or {})
        self.last_validation = dict(state.get("last_validation") or {})
        self._last_validated_step = int(self.last_validation.get("step", -1))
        self.init_record = dict((state.get("provenance") or {}).get("init_from") or {})

    def save_last(self) -> Path:
        path = self.run_dir / "last.pt"
        if self.dist.is_main:  # every rank holds the same state
            save_training_file(self.state_dict(full=True), path)
        return path

    def save_best(self) -> Path:
        path = self.run_dir / "best.pt"
        if self.dist.is_main:
            save_training_file(self.state_dict(full=False), path)
        return path
