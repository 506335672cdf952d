"""The Trainer's loop (training/trainer.py): fit() until train.steps, the time budget or a stop
request; validation and best.pt, last.pt on schedule, TensorBoard images, Ctrl-C and SIGTERM, and
the summary at the end."""

from __future__ import annotations

import math
import signal
import time
from typing import TYPE_CHECKING, Callable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.progress import NoWriter, ProgressLog
from training.run_setup import cudnn_autotuning, training_loader
from training.run_state import append_record, open_run_folder
from training.trainer_steps import StepOutput
from training.validation import is_better, validation_metrics
from training.visualize import training_grid

if TYPE_CHECKING:
    from training.trainer import Trainer


class TrainerLoop:
    """The Trainer's loop (a mixin of Trainer: the networks, data and settings it uses are those
    Trainer.__init__ builds)."""

    def validate(self) -> dict[str, float]:
        """Mean metrics of the EMA networks on the validation images (whole images, one by one)."""
        # Whole images of many sizes: cuDNN's autotuning (on for the fixed training crops) would
        # time every convolution again at each new size, for a pass that runs once.
        with cudnn_autotuning(False):
            return validation_metrics(
                self.D.ema.module,
                self.E.ema.module,
                self.val_samples,
                self.model_config,
                self.config.depth,
                self.depth_available,
                self.device,
                self.amp_dtype,
            )

    def _loader(self) -> DataLoader:
        data = self.config.data
        return training_loader(
            self.dataset, data.batch_size, data.workers, self.samples_seen, self.device, self.dist
        )

    @property
    def writer(self):
        if not self.dist.is_main:
            return NoWriter()
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                log_dir=str(self.run_dir / "tb"), purge_step=self.step or None
            )
        return self._writer

    def request_stop(self, *_args) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt  # second Ctrl-C: stop at once
        self._stop_requested = True
        tqdm.write(
            "stop requested: finishing this step and writing last.pt (Ctrl-C again to abort)"
        )

    def _run_validation(self) -> None:
        self._last_validated_step = self.step
        if not self.val_samples:
            metrics, better = {}, True
        else:
            metrics = self.validate()
            better = is_better(metrics, self.best, self.config.train.select_metric)
        for key, value in metrics.items():
            self.writer.add_scalar(f"val/{key}", value, self.step)
        record = {"step": self.step, **metrics}
        self.last_validation = {"step": self.step, "metrics": metrics}
        if better:
            name = (
                self.config.train.select_metric
                if self.config.train.select_metric in metrics
                else "psnr"
            )
            self.best = {
                "metric": name,
                "value": metrics.get(name, math.nan),
                "step": self.step,
                "metrics": metrics,
            }
            self.save_best()
            record["best"] = True
        append_record(self.run_dir / "metrics.jsonl", record)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "/" not in k)
        tqdm.write(
            f"step {self.step}: validation "
            f"{shown or '(no images)'}{'  -> best.pt' if better else ''}"
        )

    def _log_images(self, out: StepOutput) -> None:
        v = out.visuals
        grid = training_grid(
            v["hazy"],
            v.get("dehazed"),
            v["clear"],
            v.get("depth_pred"),
            v.get("depth_target"),
            v.get("dehazing_weights"),
            v.get("depth_difference"),
            self.config.depth.min_m,
            self.config.depth.max_m,
        )
        self.writer.add_image(
            "train/hazy|dehazed|GT|depth|depth GT|dehaze diff|depth diff",
            grid,
            self.step,
            dataformats="HWC",
        )

    def fit(
        self, budget_start: float | None = None, on_step: Callable[["Trainer"], None] | None = None
    ) -> dict:
        """Train until ``train.steps``, the time budget, or a stop request; returns a summary."""
        cfg = self.config.train
        self._open_run_folder()
        budget_start = time.monotonic() if budget_start is None else budget_start
        in_main_thread = self._install_sigint()
        previous_deterministic = torch.are_deterministic_algorithms_enabled()
        if self.device.type == "cpu" and cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        loader = self._loader()
        progress = ProgressLog(self)
        reason = "finished" if self.step < cfg.steps else "already finished"
        self._fit_started = time.monotonic()
        self._reserve_s = (
            15.0  # time kept for the final validation and last.pt; grows with measurements
        )
        try:
            batches = iter(loader) if self.step < cfg.steps else None
            while self.step < cfg.steps:
                fetch_start = time.monotonic()
                batch = next(batches)
                progress.waited_for_data(time.monotonic() - fetch_start)
                want_visuals = (self.step + 1) % cfg.image_every == 0
                out = self.train_step(batch, want_visuals)
                if on_step is not None:
                    on_step(self)
                progress.step_done(
                    out, batch["hazy"].shape[0] * self.dist.world_size
                )  # the whole job's images
                if want_visuals:
                    self._log_images(out)
                # Throughput counts training only: saving and validating are not the data pipeline.
                progress.not_training(self._checkpoint_and_validate)
                stop = self._stop_reason(budget_start)
                if stop:
                    reason = stop
                    break
        finally:
            # Workers stop here, not whenever the garbage collector gets to them: the final
            # validation and last.pt should not compete with prefetching that nobody will use.
            batches = loader = None
            progress.close()
            self.elapsed_s, self._fit_started = self.training_seconds, None
            if in_main_thread:
                for signal_number, handler in self._previous_handlers.items():
                    signal.signal(signal_number, handler)
            torch.use_deterministic_algorithms(previous_deterministic)
        return self._finish(reason)

    def _open_run_folder(self) -> None:
        """config.yaml for a new run, a line in resumes.jsonl for a resumed one (rank 0 alone)."""
        if not self.dist.is_main:
            return
        session = None
        if self.resumed_with is not None:
            session = {
                "step": self.step,
                "overrides": self.resumed_with,
                "world_size": self.dist.world_size,
                "samples_seen": self.samples_seen,
            }
        open_run_folder(self.run_dir, self.config, session)

    def _checkpoint_and_validate(self) -> None:
        """last.pt and validation when their step has come; what they take grows the reserve."""
        cfg = self.config.train
        # Validation first: a last.pt of this step then holds this step's validation and best.
        validating = self.step % cfg.val_every == 0 or self.step == cfg.steps
        if validating:
            mark = time.monotonic()
            if self.dist.is_main:
                self._run_validation()
            self._reserve_s = max(self._reserve_s, 2 * (time.monotonic() - mark) + 5.0)
        if self.step % cfg.checkpoint_every == 0:
            start = time.monotonic()
            self.save_last()
            self._reserve_s = max(self._reserve_s, 2 * (time.monotonic() - start) + 5.0)
        if validating or self.step % cfg.checkpoint_every == 0:
            self.dist.barrier()  # the other ranks wait while rank 0 validates and writes

    def _stop_reason(self, budget_start: float) -> str | None:
        cfg = self.config.train
        budget_s = cfg.max_minutes * 60.0
        out_of_time = (
            budget_s
            and time.monotonic() - budget_start + min(self._reserve_s, 0.2 * budget_s) >= budget_s
        )
        # A signal reaches one rank or all, and clocks differ: all ranks stop at the same
        # step or one would wait for the others forever (one small all-reduce per step).
        stop_requested, out_of_time = self.dist.any_rank(self._stop_requested, out_of_time)
        if stop_requested:
            return "stopped on request (Ctrl-C or SIGTERM)"
        if out_of_time:
            return f"time budget of {cfg.max_minutes:g} min reached"
        return None

    def _finish(self, reason: str) -> dict:
        cfg = self.config.train
        # A run that ends or meets its time budget validates its final weights (they may be the
        # best so far). Ctrl-C never does: the user wants out, and the resumed run validates on
        # schedule, so an interrupted and resumed run validates (and selects best.pt) at exactly
        # the steps of an uninterrupted one. Before its first validation such a run has no best.pt.
        stopped_by_user = reason.startswith("stopped")
        # A finished run validated its last step in the loop; resuming it adds no second entry.
        if (
            self.step > 0
            and self._last_validated_step != self.step
            and not stopped_by_user
            and reason != "already finished"
            and self.dist.is_main
        ):
            self._run_validation()
        last = self.save_last()
        # No rank leaves before last.pt is written: torchrun ends the whole job as soon as one
        # process exits with an error status (130 after a stop request is one).
        self.dist.barrier()
        if self._writer is not None:
            self._writer.flush()
        minutes = self.elapsed_s / 60.0
        skipped = {
            name: network.skipped_steps
            for name, network in (("dehazer", self.D), ("depth", self.E))
            if network.skipped_steps
        }
        if skipped:
            self.log(
                "optimiser steps skipped for a non-finite gradient norm: "
                + ", ".join(f"{name} {count}" for name, count in skipped.items())
            )
        self.log(
            f"{reason} at step {self.step}/{cfg.steps} ({minutes:.1f} min of training in all); "
            f"state: {last}; best: {self.best.get('metric', '-')} "
            f"{self.best.get('value', math.nan):.4g} at step {self.best.get('step', '-')}"
        )
        if self.step < cfg.steps:
            self.log(f"continue with: python -m training.train --resume {self.run_dir}")
        return {"reason": reason, "step": self.step, "best": self.best, "last": str(last)}

    def _install_sigint(self) -> bool:
        """Ctrl-C and SIGTERM (a scheduler's stop, torchrun passing either on) finish the step."""
        try:
            self._previous_handlers = {
                number: signal.signal(number, self.request_stop)
                for number in (signal.SIGINT, signal.SIGTERM)
            }
            return True
        except ValueError:  # not the main thread: signals cannot be handled here
            return False

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
