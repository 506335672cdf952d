"""What a run shows while it trains: TensorBoard scalars, the progress bar, plain log lines.

progress = ProgressLog(trainer)
progress.waited_for_data(seconds); progress.step_done(step_output, images)
progress.not_training(trainer.save_last)      # kept out of the throughput window
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Callable

from tqdm import tqdm

if TYPE_CHECKING:
    from training.trainer import StepOutput, Trainer

# What the progress bar shows (label -> loss key); TensorBoard gets every term.
SHOWN_LOSSES = {
    "D": "dehazer/total",
    "l1": "dehazer/l1",
    "E": "depth/total",
    "silog": "depth/depth_silog",
    "joint": "joint/total",
}


class NoWriter:
    """TensorBoard on ranks other than 0: writes nothing."""

    def __getattr__(self, _name):
        return lambda *args, **kwargs: None


class ProgressLog:
    """What a run shows while it trains: losses, learning rates and throughput to TensorBoard
    every ``log_every`` steps, the progress bar on a terminal, else a plain line every 30 s (and
    at the first logged step) for log files. Throughput is measured over the steps since the
    last log, counting only training and data loading."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.cfg = trainer, trainer.config.train
        self.interactive = sys.stderr.isatty() and trainer.dist.is_main
        self.bar = tqdm(
            total=self.cfg.steps,
            initial=trainer.step,
            dynamic_ncols=True,
            disable=not self.interactive,
            desc=trainer.config.name,
        )
        self.last_print = time.monotonic()
        self.images, self.data_s, self.window_start = 0, 0.0, time.monotonic()
        self.first_logged_step = (trainer.step // self.cfg.log_every + 1) * self.cfg.log_every

    def waited_for_data(self, seconds: float) -> None:
        self.data_s += seconds

    def not_training(self, work: Callable[[], None]) -> None:
        """Run ``work`` (saving, validating) outside the throughput window."""
        start = time.monotonic()
        work()
        self.window_start += time.monotonic() - start

    def step_done(self, out: StepOutput, images: int) -> None:
        trainer, step = self.trainer, self.trainer.step
        self.images += images
        if step % self.cfg.log_every == 0 or step == self.cfg.steps:
            now = time.monotonic()
            window_s = max(now - self.window_start, 1e-9)
            throughput, data_share = self.images / window_s, self.data_s / window_s
            writer = trainer.writer
            losses = out.losses  # one wait for the GPU for all the terms (StepOutput.losses)
            for key, value in losses.items():
                if math.isfinite(value):
                    writer.add_scalar(f"train/{key}", value, step)
            writer.add_scalar("train/lr_dehazer", trainer.D.scheduler.get_last_lr()[0], step)
            writer.add_scalar("train/lr_depth", trainer.E.scheduler.get_last_lr()[0], step)
            writer.add_scalar("perf/images_per_s", throughput, step)
            writer.add_scalar("perf/data_wait_share", data_share, step)
            for name, network in (("dehazer", trainer.D), ("depth", trainer.E)):
                writer.add_scalar(f"train/{name}_skipped_steps", network.skipped_steps, step)
            shown = {label: losses[key] for label, key in SHOWN_LOSSES.items() if key in losses}
            self.bar.set_postfix(
                {
                    **{k: f"{v:.4f}" for k, v in shown.items()},
                    "img/s": f"{throughput:.1f}",
                    "data": f"{data_share:.0%}",
                },
                refresh=False,
            )
            if (
                not self.interactive
                and trainer.dist.is_main
                and (now - self.last_print > 30 or step == self.first_logged_step)
            ):
                print(
                    f"step {step}/{self.cfg.steps} "
                    + " ".join(f"{k} {v:.4f}" for k, v in shown.items())
                    + f" | {throughput:.1f} img/s, data wait {data_share:.0%}",
                    flush=True,
                )
                self.last_print = now
            self.images, self.data_s, self.window_start = 0, 0.0, now
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
