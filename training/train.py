"""Alternating dual-task training of the DIACMPN dehazer D and depth network E.

    python -m training.train --config config/train/diacmpn_rt.yaml [key=value ...]
    python -m training.train --resume runs/diacmpn_rt_20250101-120000 [--max-minutes 9]

Each iteration of the ``alternating`` schedule (the paper's idea, really alternated):

(a) dehazing step, E frozen: D's loss is reconstruction + depth-difference perception (E applied
    to D's output against the depth target: gradients reach D through the frozen E) + supervision
    of D's own depth branch where the data has depth;
(b) depth step, D frozen and its output detached: E's loss on E(D(I)) weighted by the dehazing
    difference map (where D is still wrong) + the same loss unweighted.

``joint`` sums every term and takes one backward pass for both networks (the public code's
scheme, kept as an ablation). E always sees D's output clamped to [0, 1], as in deployment.

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
import contextlib
import datetime
import json
import math
import os
import random
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dehaze_ros.camera import canonical_from_metric, metric_from_canonical
from dehaze_ros.checkpoint import CheckpointError, build_models, file_sha256, load_checkpoint
from dehaze_ros.devices import DeviceError
from dehaze_ros.devices import resolve_precision as engine_precision
from dehaze_ros.models import ModelConfig, build_dehazer, build_depth_net, count_parameters, get_model_config
from dehaze_ros.models.config import DEPTH_INPUTS, FINE_TUNE_MAY_CHANGE, depth_inputs_widen
from training import losses
from training.config import (ConfigError, TrainingConfig, check_resume_overrides, load_config,
                             save_config)
from training.data import (ContinuingSampler, DataError, build_sources, build_training_dataset,
                           build_validation_samples, worker_init)
from training.distributed import Distributed
from training.metrics import depth_metrics, psnr, ssim
from training.network_state import NetworkState
from training.run_state import (TRAINING_STATE_FORMAT, TRAINING_STATE_VERSION, TrainingError, git_commit,
                                load_training_file, rng_state, save_training_file, set_rng_state, to_python)
from training.visualize import training_grid

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "abs_rel": False}
# What the progress bar shows (label -> loss key); TensorBoard gets every term.
SHOWN_LOSSES = {"D": "dehazer/total", "l1": "dehazer/l1", "E": "depth/total", "silog": "depth/depth_silog",
                "joint": "joint/total"}


# --------------------------------------------------------------------------------------------
# Small pieces

def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    The engine's rule (auto: bf16 where the GPU supports it, else fp16; fp32 on the CPU), taken
    from the engine itself so that a checkpoint is deployed in the precision it was validated in.
    bf16 autocast *training* on the CPU is refused: on this project's AVX512-BF16 CPU (torch
    2.13) the first backward pass gave NaN gradients in both networks (the engine's bf16
    inference is fine).
    """
    if device.type != "cuda" and name in ("bf16", "fp16"):
        raise ConfigError(f"train.precision={name} needs a CUDA device (bf16 training on the CPU gave NaN "
                          f"gradients); on {device} use fp32 or auto")
    try:
        dtype = engine_precision(name, device, training=True)
    except DeviceError as exc:
        raise ConfigError(f"train.precision={name}: {exc}") from exc
    return None if dtype == torch.float32 else dtype


def build_model_config(config: TrainingConfig) -> ModelConfig:
    try:
        preset = get_model_config(config.model.preset)
        values = {**preset.to_dict(), **config.model.overrides}
        if config.model.overrides and "name" not in config.model.overrides:
            values["name"] = f"{preset.name}-custom"
        return ModelConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from exc


def all_known(depth: torch.Tensor) -> torch.Tensor:
    """Every image of the batch has depth of known scale (the default of the step methods)."""
    return torch.ones(depth.shape[0], dtype=torch.bool, device=depth.device)


class DehazerWithDepth(nn.Module):
    """D's ``forward_with_depth`` as ``forward``: DistributedDataParallel hooks ``forward`` only
    (it prepares the gradient all-reduce there), and the dehazing step needs the branch depth."""

    def __init__(self, dehazer: nn.Module):
        super().__init__()
        self.dehazer = dehazer

    def forward(self, hazy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                    torch.Tensor | None]:
        """(dehazed, branch depth, transmission or None, airlight or None): the transmission feeds
        a depth network built with ``depth_inputs: image_transmission``; both are supervised by
        ``loss.transmission``, ``loss.optical_depth`` and ``loss.airlight``."""
        out = self.dehazer.forward_physics(hazy)
        return (out.dehazed, self.dehazer.depth_branch.metres_from_log_depth(out.branch_log_depth),
                out.transmission, out.airlight)


class _NoWriter:
    """TensorBoard on ranks other than 0: writes nothing."""

    def __getattr__(self, _name):
        return lambda *args, **kwargs: None


@dataclass
class StepOutput:
    losses: dict[str, float] = field(default_factory=dict)
    visuals: dict[str, torch.Tensor] = field(default_factory=dict)
    transmission: torch.Tensor | None = None   # D's, detached: the depth step's second input


class ProgressLog:
    """What a run shows while it trains: losses, learning rates and throughput to TensorBoard
    every ``log_every`` steps, the progress bar on a terminal, else a plain line every 30 s (and
    at the first logged step) for log files. Throughput is measured over the steps since the
    last log, counting only training and data loading."""

    def __init__(self, trainer: "Trainer"):
        self.trainer, self.cfg = trainer, trainer.config.train
        self.interactive = sys.stderr.isatty() and trainer.dist.is_main
        self.bar = tqdm(total=self.cfg.steps, initial=trainer.step, dynamic_ncols=True, disable=not self.interactive,
                        desc=trainer.config.name)
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
            for key, value in out.losses.items():
                if math.isfinite(value):
                    writer.add_scalar(f"train/{key}", value, step)
            writer.add_scalar("train/lr_dehazer", trainer.D.scheduler.get_last_lr()[0], step)
            writer.add_scalar("train/lr_depth", trainer.E.scheduler.get_last_lr()[0], step)
            writer.add_scalar("perf/images_per_s", throughput, step)
            writer.add_scalar("perf/data_wait_share", data_share, step)
            shown = {label: out.losses[key] for label, key in SHOWN_LOSSES.items() if key in out.losses}
            self.bar.set_postfix({**{k: f"{v:.4f}" for k, v in shown.items()},
                                  "img/s": f"{throughput:.1f}", "data": f"{data_share:.0%}"}, refresh=False)
            if not self.interactive and trainer.dist.is_main and (now - self.last_print > 30
                                                                  or step == self.first_logged_step):
                print(f"step {step}/{self.cfg.steps} " + " ".join(f"{k} {v:.4f}" for k, v in shown.items())
                      + f" | {throughput:.1f} img/s, data wait {data_share:.0%}", flush=True)
                self.last_print = now
            self.images, self.data_s, self.window_start = 0, 0.0, now
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------------------------------
# The trainer

class Trainer:
    """One training run: models, optimisers, data, and the loop. ``fit()`` trains; state in
    ``state_dict()`` / ``load_state_dict()``; ``last.pt`` and ``best.pt`` in ``run_dir``."""

    def __init__(self, config: TrainingConfig, run_dir: str | Path, log: Callable[[str], None] = print,
                 resumed_with: list[str] | None = None, dist: Distributed | None = None):
        """``resumed_with``: None for a new run; for a resumed one, the overrides of this session
        (already applied to ``config``): they hold for this process only, config.yaml keeps the
        run's own configuration and resumes.jsonl records them. ``dist``: this process's place
        under torchrun (default: the only process)."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist = Distributed() if dist is None else dist
        self.log = log if self.dist.is_main else (lambda message: None)
        self.resumed_with = None if resumed_with is None else list(resumed_with)
        train = config.train
        self.device = self.dist.start(train.device)
        if self.resumed_with is None:
            if train.world_size not in (1, self.dist.world_size):
                raise ConfigError(f"train.world_size={train.world_size} but this run has {self.dist.world_size} "
                                  "process(es): the field is recorded by the trainer from torchrun; leave it out")
            train.world_size = self.dist.world_size
        self._rng_cuda_device = self.device if self.dist.launched and self.device.type == "cuda" else None
        self.amp_dtype = resolve_precision(train.precision, self.device)
        if self.device.type == "cuda":
            # Speed over bit-exactness on the GPU: fixed crop sizes make cuDNN autotuning pay off.
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        random.seed(train.seed)
        np.random.seed(train.seed % 2 ** 32)
        torch.manual_seed(train.seed)
        self.model_config = build_model_config(config)
        self.dehazer = build_dehazer(self.model_config)
        self.depth_net = build_depth_net(self.model_config)
        # Where the starting weights came from (path, hash, units, their own provenance): kept in
        # every state and export. A resume takes its weights and this record from last.pt, so the
        # init_from file may have moved or been replaced (an export over the shipped default) since.
        self.init_record: dict = {}
        if train.init_from and self.resumed_with is None:
            self._init_from(train.init_from)
        self.dehazer.to(self.device)
        self.depth_net.to(self.device)
        optim, use_scaler = config.optim, self.amp_dtype == torch.float16
        self.D = NetworkState(self.dehazer, "dehazer", "dehazer", optim.lr_dehazer, optim, train.steps,
                              train.ema_decay, use_scaler)
        self.E = NetworkState(self.depth_net, "depth_net", "depth", optim.lr_depth, optim, train.steps,
                              train.ema_decay, use_scaler)
        # What each step calls to run the network it trains: under torchrun DistributedDataParallel
        # around the plain module (which keeps serving EMA, state dicts, validation and the frozen
        # forwards), else the plain module itself. Every rank built the same seeded weights (and DDP
        # broadcasts rank 0's anyway), so the EMA copies above agree too. Every parameter of D takes
        # part in its step (the depth branch feeds the encoder), so DDP need not search for unused
        # ones; E in the joint ablation may have no depth term on a rank: search there.
        self._plain_dehazer = DehazerWithDepth(self.dehazer)   # a frozen D runs without DDP
        self.D.forward = self.dist.wrap(self._plain_dehazer)
        self.E.forward = self.dist.wrap(self.depth_net, find_unused_parameters=train.schedule == "joint")

        self.train_sources = build_sources(config.data, "train")
        self.dataset = build_training_dataset(config.data, train.seed, self.train_sources)
        self.val_sources = build_sources(config.data, "val")
        # Only rank 0 validates.
        self.val_samples = (build_validation_samples(config.data, train.seed, self.val_sources)
                            if self.dist.is_main else [])
        self.teacher = self._load_teacher(config.depth.teacher_checkpoint)
        sources_with_depth = [s.name for s in self.train_sources if s.has_depth]
        self.depth_available = bool(sources_with_depth) or self.teacher is not None
        self.loss = losses.DualTaskLoss.from_config(config.loss, self.depth_available)
        if "dehazer" in train.freeze and not (self.depth_available and self.loss.trains_depth_net()):
            raise TrainingError("train.freeze=[dehazer] leaves only the depth network to train, and it has "
                                "nothing to learn from: no training source has depth (nor a "
                                "depth.teacher_checkpoint), or loss.depth_weighted and depth_unweighted are 0")
        if self.loss.supervises_haze() and self.model_config.head == "residual":
            raise TrainingError("loss.transmission, optical_depth and airlight supervise a physics head's t and A; "
                                f"model {self.model_config.name} has the residual head (J = I + f(I)), "
                                "which predicts neither: set them to 0 or use head asm / asm_dcp")

        self.step = 0
        self.samples_seen = 0  # the data position: global sample index, over all ranks and sessions
        self.best: dict = {}
        # The newest validation ({"step", "metrics"}): what an export of last.pt can truthfully claim.
        self.last_validation: dict = {}
        self.elapsed_s = 0.0
        self.git_commit = git_commit()
        self._stop_requested = False
        self._last_validated_step = -1
        self._fit_started: float | None = None
        self._writer = None
        self._describe_setup(sources_with_depth)

    # ---- setup helpers

    def _init_from(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        # Normalised: a checkpoint written before a ModelConfig field existed has the field's default.
        theirs, ours = ModelConfig.from_dict(ckpt.model_config).to_dict(), self.model_config.to_dict()
        # Fields without weights of their own may change in a fine-tune (e.g. a grey airlight for
        # a network trained with a coloured one); everything else must match.
        changed = sorted(key for key in ours if theirs.get(key) != ours[key] and key not in FINE_TUNE_MAY_CHANGE)
        if changed:
            raise TrainingError(f"train.init_from={path} was trained with model_config "
                                f"{ckpt.model_config.get('name')!r} that differs from this run's "
                                f"{self.model_config.name!r} in {', '.join(changed)}; use the same "
                                "model.preset/overrides")
        for key in FINE_TUNE_MAY_CHANGE:
            if key != "name" and theirs.get(key) != ours[key]:
                self.log(f"train.init_from: {key} {theirs.get(key)} in {path}, {ours[key]} in this run")
        widen = theirs["depth_inputs"] != ours["depth_inputs"]
        if widen and not depth_inputs_widen(theirs["depth_inputs"], ours["depth_inputs"]):
            raise TrainingError(f"train.init_from={path} has depth_inputs {theirs['depth_inputs']!r}; this run's "
                                f"{ours['depth_inputs']!r} would drop an input its depth network was trained "
                                f"with (a fine-tune may only widen, along {' -> '.join(DEPTH_INPUTS)})")
        frozen_depth = "depth_net" in self.config.train.freeze
        if frozen_depth and ckpt.depth_net_state is None:
            raise TrainingError(f"train.freeze=[depth_net] keeps the depth network of train.init_from={path}, "
                                "but that checkpoint has none: it would stay randomly initialised")
        if frozen_depth and widen:
            raise TrainingError(f"train.freeze=[depth_net] with depth_inputs {ours['depth_inputs']!r} and "
                                f"train.init_from={path} (depth_inputs {theirs['depth_inputs']!r}): a frozen network never "
                                "learns to read the transmission")
        dehazer, depth_net = build_models(ckpt)
        self.dehazer.load_state_dict(dehazer.state_dict())
        if depth_net is not None and widen:
            # The one widening DEPTH_INPUTS has today (image -> image_transmission); a further entry
            # needs its own loader (this one refuses, by shape, a state it cannot widen).
            self.depth_net.load_image_only_state(depth_net.state_dict())
        elif depth_net is not None:
            self.depth_net.load_state_dict(depth_net.state_dict())
        self.init_record = {"path": str(path), "sha256": file_sha256(path), "depth_units": ckpt.depth_units,
                            "depth_range_m": list(ckpt.depth_range_m), "provenance": ckpt.provenance}

    def _load_teacher(self, path: str) -> nn.Module | None:
        if not path:
            return None
        ckpt = load_checkpoint(path)
        if ckpt.depth_units != "meters":
            raise TrainingError(f"depth.teacher_checkpoint={path} gives {ckpt.depth_units} depth; a "
                                "teacher must give metres (depth units 'meters')")
        if ckpt.depth_net_state is None:
            raise TrainingError(f"depth.teacher_checkpoint={path} has no depth network; export one "
                                "from a run trained with metric depth")
        if ckpt.model_config.get("canonical_focal_px"):
            # Its output is canonical depth of the image it sees: metres only with that image's
            # focal length, which the targets here do not carry through the teacher.
            raise TrainingError(f"depth.teacher_checkpoint={path} predicts canonical-camera depth "
                                f"(canonical_focal_px {ckpt.model_config['canonical_focal_px']}); a teacher "
                                "must predict plain metres (a checkpoint with canonical_focal_px 0)")
        _, depth_net = build_models(ckpt)
        # The teacher sees the clear image: the depth of the ideal image, as the paper compares.
        return depth_net.to(self.device).eval().requires_grad_(False)

    def _describe_setup(self, sources_with_depth: list[str]) -> None:
        cfg = self.config
        self.log(f"run folder: {self.run_dir}")
        self.log(f"device {self.device}, precision {self.amp_dtype or torch.float32}, schedule "
                 f"{cfg.train.schedule}, {cfg.train.steps} steps of batch {cfg.data.batch_size} at "
                 f"{cfg.data.crop}x{cfg.data.crop}")
        if self.dist.launched:
            world = self.dist.world_size
            self.log(f"torchrun: {world} processes, global batch {world} x {cfg.data.batch_size} = "
                     f"{world * cfg.data.batch_size}; learning rates as configured (not scaled)")
        self.log(f"model {self.model_config.name}: dehazer {count_parameters(self.dehazer):,} parameters, "
                 f"depth net {count_parameters(self.depth_net):,}")
        if cfg.train.freeze:
            self.log(f"frozen (train.freeze): {', '.join(cfg.train.freeze)} keeps the weights of "
                     f"{cfg.train.init_from}")
        for source in self.train_sources + self.val_sources:
            self.log("  " + source.describe())
        self.log(f"validation: {len(self.val_samples)} images "
                 f"({sum(s.has_depth for s in self.val_samples)} with depth)")
        if not self.depth_available:
            self.log("depth supervision OFF: no training source has depth and depth.teacher_checkpoint "
                     "is empty; loss.depth_perception, branch_depth, depth_weighted and depth_unweighted "
                     "are ignored and only the dehazer learns")
        else:
            without = [s.name for s in self.train_sources if not s.has_depth]
            note = ""
            if without:
                note = (f"; {', '.join(without)}: depth from the teacher" if self.teacher is not None
                        else f"; {', '.join(without)}: no depth, depth terms skip their samples")
            self.log(f"depth supervision: metric depth from {', '.join(sources_with_depth) or 'the teacher'}{note}")
        if not self.val_samples:
            self.log("WARNING: no validation images (no source holds out val scenes): best.pt follows "
                     "the last validation instead of being chosen on held-out data")

    # ---- one iteration

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _depth_targets(self, clear: torch.Tensor, depth: torch.Tensor, has_depth: torch.Tensor) -> torch.Tensor:
        if self.teacher is None or bool(has_depth.all()):
            return depth
        with torch.no_grad(), self._autocast():
            taught = self.teacher(clear).float()
        return torch.where(has_depth.view(-1, 1, 1, 1), depth, taught)

    def _canonical_targets(self, depth: torch.Tensor, batch: dict[str, torch.Tensor]
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Depth targets in the networks' units, per image whether their scale is known, and the
        factor from metres to those units.

        With a canonical camera (ModelConfig.canonical_focal_px) metres become canonical depth
        (dehaze_ros.camera); an image of unknown focal length then has no known scale, like one
        with relative depth, and trains only scale-invariant terms. The validity mask is taken
        on metres before, so depth.min_m / max_m keep meaning metres.
        """
        scale_known = batch["metric_depth"].to(self.device)
        canonical_focal = self.model_config.canonical_focal_px
        if not canonical_focal:
            return depth, scale_known, torch.ones_like(scale_known, dtype=torch.float32)
        focal = batch["focal_px"].to(self.device).float()
        has_focal = torch.isfinite(focal) & (focal > 0)
        factor = torch.where(has_focal, canonical_from_metric(1.0, focal.clamp_min(1e-6), canonical_focal),
                             torch.ones_like(focal))
        return depth * factor.view(-1, 1, 1, 1), scale_known & has_focal, factor

    def dehazer_step(self, hazy, clear, depth, mask, want_visuals: bool = False,
                     scale_known: torch.Tensor | None = None,
                     haze_truth: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, StepOutput]:
        """(a) Update D with E frozen. Returns D's output (detached) for the depth step.

        With ``train.freeze: [dehazer]`` D only runs (eval mode, no gradients: its BatchNorm
        statistics stay too) and its losses are reported; nothing of D changes.
        """
        scale_known = all_known(depth) if scale_known is None else scale_known
        trains = "dehazer" not in self.config.train.freeze
        self.D.train(trains)
        self.E.train(False)
        out = StepOutput()
        with self._autocast(), torch.set_grad_enabled(trains):
            # A frozen D runs as the plain module: DDP has no part in a step without gradients.
            forward = self.D.forward if trains else self._plain_dehazer
            dehazed, branch_depth, transmission, airlight = forward(hazy)
            depth_of_dehazed = None
            if trains and self.loss.perceives(mask, scale_known):
                # The plain E, not its DDP wrapper: E is frozen (requires_grad False), gradients
                # pass through its operations to D, and none reach E's parameters, so nothing of
                # E is all-reduced in this step (a test counts). DDP has no part in a step in
                # which its network does not train; no_sync() would not help, it only postpones.
                depth_of_dehazed = self.depth_net(dehazed.clamp(0.0, 1.0), transmission)
        dehazed = dehazed.float()
        total, parts = self.loss.dehazing(dehazed, clear, depth, mask, scale_known, depth_of_dehazed, branch_depth,
                                          (transmission, airlight), haze_truth)
        if depth_of_dehazed is not None and want_visuals:
            out.visuals["depth_difference"] = losses.depth_difference(
                depth_of_dehazed.detach(), depth, self.loss.perception_mask(mask, scale_known))
        out.losses = {f"dehazer/{k}": float(v.detach()) for k, v in parts.items()}
        out.losses["dehazer/total"] = float(total.detach())
        if trains:
            out.losses["dehazer/grad_norm"] = self.D.backward_and_step(total, self.config.optim.grad_clip)
        out.transmission = None if transmission is None else transmission.detach()
        return dehazed.detach(), out

    def depth_step(self, dehazed, clear, depth, mask, want_visuals: bool = False,
                   scale_known: torch.Tensor | None = None, sky_far: torch.Tensor | None = None,
                   transmission: torch.Tensor | None = None) -> StepOutput:
        """(b) Update E with D frozen: E(D(I)) with D's output (and transmission) detached."""
        scale_known = all_known(depth) if scale_known is None else scale_known
        out = StepOutput()
        if "depth_net" in self.config.train.freeze:
            return out
        # Whether a batch has depth differs between ranks, and E's step must be taken by all or
        # none (its gradients are all-reduced): a rank without depth adds a zero loss.
        if not self.loss.trains_depth_net() or not any(self.dist.any_rank(mask.any())):
            return out  # nothing to learn from this batch: no optimiser step (Adam would still move)
        self.D.train(False)
        self.E.train(True)
        dehazed = dehazed.detach().clamp(0.0, 1.0)
        difference_weights = self.loss.difference_weights(dehazed, clear, mask)
        with self._autocast():
            depth_pred = self.E.forward(dehazed, None if transmission is None else transmission.detach())
        total, parts = self.loss.depth_estimation(depth_pred, depth, mask, scale_known, difference_weights, sky_far)
        out.losses = {f"depth/{k}": float(v.detach()) for k, v in parts.items()}
        out.losses["depth/grad_norm"] = self.E.backward_and_step(total, self.config.optim.grad_clip)
        out.losses["depth/total"] = float(total.detach())
        if want_visuals:
            out.visuals.update(depth_pred=depth_pred.detach().float(), dehazing_weights=difference_weights)
        return out

    def joint_step(self, hazy, clear, depth, mask, want_visuals: bool = False,
                   scale_known: torch.Tensor | None = None,
                   haze_truth: tuple[torch.Tensor, torch.Tensor] | None = None) -> StepOutput:
        """The ablation: all terms summed, one backward pass, both optimisers step."""
        scale_known = all_known(depth) if scale_known is None else scale_known
        self.D.train(True)
        self.E.train(True)
        out = StepOutput()
        with self._autocast():
            dehazed, branch_depth, transmission, airlight = self.D.forward(hazy)
            depth_pred = self.E.forward(dehazed.clamp(0.0, 1.0), transmission)
        dehazed = dehazed.float()
        difference_weights = self.loss.difference_weights(dehazed, clear, mask)
        total, parts = self.loss.joint(dehazed, clear, depth, mask, scale_known, depth_pred, branch_depth,
                                       difference_weights, (transmission, airlight), haze_truth)
        # One backward pass through D's scaler, both optimisers stepped with it, one update.
        self.D.scaler.scale(total).backward()
        for name, network in (("dehazer", self.D), ("depth", self.E)):
            grad_norm = network.step(self.config.optim.grad_clip, scaler=self.D.scaler)
            if self.config.optim.grad_clip > 0:
                out.losses[f"{name}/grad_norm"] = grad_norm
        self.D.scaler.update()
        out.losses.update({f"joint/{k}": float(v.detach()) for k, v in parts.items()})
        out.losses["joint/total"] = float(total.detach())
        if want_visuals:
            out.visuals.update(dehazed=dehazed.detach(), depth_pred=depth_pred.detach().float(),
                               dehazing_weights=difference_weights)
        return out

    def train_step(self, batch: dict[str, torch.Tensor], want_visuals: bool = False) -> StepOutput:
        non_blocking = self.device.type == "cuda"
        hazy = batch["hazy"].to(self.device, non_blocking=non_blocking)
        clear = batch["clear"].to(self.device, non_blocking=non_blocking)
        depth = batch["depth"].to(self.device, non_blocking=non_blocking)
        has_depth = batch["has_depth"].to(self.device, non_blocking=non_blocking)
        depth = self._depth_targets(clear, depth, has_depth)
        haze_truth = None
        if self.loss.supervises_haze() and "transmission" in batch:
            haze_truth = (batch["transmission"].to(self.device, non_blocking=non_blocking),
                          batch["airlight"].to(self.device, non_blocking=non_blocking))
        mask = losses.valid_depth_mask(depth, self.config.depth.min_m, self.config.depth.max_m)
        if not self.depth_available:
            mask = torch.zeros_like(mask)
        depth, scale_known, to_network_units = self._canonical_targets(depth, batch)
        # Sky must come out beyond the far end of the range, in each image's own units; images of
        # unknown scale have no such units (their factor is 1): no hinge there.
        sky_far = torch.where(scale_known, self.config.depth.max_m * to_network_units,
                              torch.full_like(to_network_units, math.nan))
        if self.config.train.schedule == "alternating":
            dehazed, out = self.dehazer_step(hazy, clear, depth, mask, want_visuals, scale_known, haze_truth)
            depth_out = self.depth_step(dehazed, clear, depth, mask, want_visuals, scale_known, sky_far,
                                        transmission=out.transmission)
            out.losses.update(depth_out.losses)
            out.visuals.update(depth_out.visuals)
            out.visuals["dehazed"] = dehazed
        else:
            out = self.joint_step(hazy, clear, depth, mask, want_visuals, scale_known, haze_truth)
        with warnings.catch_warnings():
            # The schedules follow iterations, also those in which E had no depth to learn from
            # and did not step; torch warns about exactly that order, harmlessly here.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.D.scheduler.step()
            self.E.scheduler.step()
        # Parameters are equal on every rank after the all-reduced steps; BatchNorm statistics of
        # each rank's own batch are not, until rank 0's are copied: then the EMA agrees too.
        self.dist.broadcast_buffers((self.dehazer, self.depth_net))
        for name, network in (("dehazer", self.D), ("depth_net", self.E)):
            if name not in self.config.train.freeze:   # a frozen network's average is its weights
                network.ema.update(network.model, self.step)
        self.step += 1
        self.samples_seen += hazy.shape[0] * self.dist.world_size
        if want_visuals:
            out.visuals.update(hazy=hazy, clear=clear, depth_target=torch.where(mask, depth, torch.nan))
        return out

    # ---- validation

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean metrics of the EMA networks on the validation images (whole images, one by one)."""
        dehazer, depth_net = self.D.ema.module.eval(), self.E.ema.module.eval()
        depth_cfg = self.config.depth
        per_source: dict[str, list[dict]] = {}
        for sample in self.val_samples:
            hazy = torch.from_numpy(sample.hazy.transpose(2, 0, 1).copy())[None].to(self.device)
            with self._autocast():
                physics = dehazer.forward_physics(hazy)
                dehazed = physics.dehazed.float().clamp(0.0, 1.0)
                depth_pred = depth_net(dehazed, physics.transmission).float()
            dehazed_np = dehazed[0].permute(1, 2, 0).cpu().numpy()
            result = {"psnr": psnr(dehazed_np, sample.clear), "ssim": ssim(dehazed_np, sample.clear)}
            canonical_focal = self.model_config.canonical_focal_px
            metric_known = sample.metric_depth and (not canonical_focal or sample.focal_px > 0)
            if sample.has_depth and self.depth_available and metric_known:
                predicted = depth_pred[0, 0].cpu().numpy()
                if canonical_focal:
                    predicted = metric_from_canonical(predicted, sample.focal_px, canonical_focal)
                metrics = depth_metrics(predicted, sample.depth_m, depth_cfg.min_m, depth_cfg.max_m)
                if metrics["valid_fraction"] > 0:
                    result.update({k: metrics[k] for k in ("abs_rel", "rmse", "delta1", "abs_rel_median")})
            per_source.setdefault(sample.name.split("/")[0], []).append(result)
        summary: dict[str, float] = {}
        everything = [r for results in per_source.values() for r in results]
        for key in ("psnr", "ssim", "abs_rel", "rmse", "delta1", "abs_rel_median"):
            values = [r[key] for r in everything if key in r and math.isfinite(r[key])]
            if values:
                summary[key] = float(np.mean(values))
            for source, results in per_source.items():
                values = [r[key] for r in results if key in r and math.isfinite(r[key])]
                if values:
                    summary[f"{key}/{source}"] = float(np.mean(values))
        return summary

    def _is_better(self, metrics: dict[str, float]) -> bool:
        name = self.config.train.select_metric
        if name not in metrics:
            # e.g. abs_rel without validation depth: fall back to PSNR rather than never choosing.
            name = "psnr"
        value = metrics.get(name)
        if value is None:
            return not self.best
        if not self.best or self.best.get("metric") != name:
            return True
        previous = self.best["value"]
        return value > previous if HIGHER_IS_BETTER[name] else value < previous

    # ---- state

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
                "train": {s.name: {"kind": s.kind, "scenes": s.scenes(), "items": len(s)} for s in self.train_sources},
                "val": {s.name: {"kind": s.kind, "scenes": s.scenes(), "items": len(s)} for s in self.val_sources},
                "test_scenes": {name: list(getattr(src, "test_scenes", []))
                                for name, src in self.config.data.sources.items()},
            },
            # A frozen depth network is the init_from checkpoint's: its units, whatever this run's data.
            "depth_supervised": (self.init_record.get("depth_units") == "meters"
                                 if "depth_net" in self.config.train.freeze else self.depth_available),
            "teacher_checkpoint": self.config.depth.teacher_checkpoint,
            "init_from": self.init_record,
        }

    def state_dict(self, full: bool = True) -> dict:
        state = {
            "format": TRAINING_STATE_FORMAT,
            "format_version": TRAINING_STATE_VERSION,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "world_size": self.dist.world_size,   # of the session that wrote this file
            "elapsed_s": self.training_seconds,
            "best": to_python(self.best),
            "last_validation": to_python(self.last_validation),
            "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "provenance": to_python(self._provenance()),
            **self.D.weights(),
            **self.E.weights(),
        }
        if full:
            state.update({**self.D.optimisation_state(), **self.E.optimisation_state(),
                          "rng": rng_state(self._rng_cuda_device)})
        return state

    def load_state_dict(self, state: dict) -> None:
        if "optimizer_dehazer" not in state:
            raise TrainingError("this training file holds weights only (best.pt); resume reads last.pt")
        stored = (state.get("provenance") or {}).get("model_config")
        if stored is not None:
            stored = ModelConfig.from_dict(stored).to_dict()   # fields added since take their defaults
        if stored is not None and stored != self.model_config.to_dict():
            # The run's config names a preset; a preset changed since the run started (its head,
            # its canonical camera) would otherwise resume in other units or fail on shapes.
            changed = sorted(key for key in set(stored) | set(self.model_config.to_dict())
                             if stored.get(key) != self.model_config.to_dict().get(key))
            raise TrainingError(f"this run was trained with another model config than its preset gives now "
                                f"(differs in {', '.join(changed)}); continue it with "
                                "model.overrides holding those values, or start a new run with "
                                "train.init_from=<its exported checkpoint>")
        self.D.load(state)
        self.E.load(state)
        set_rng_state(state["rng"], self._rng_cuda_device)
        self.step = int(state["step"])
        # The global data position; a resume with another number of processes continues from it.
        self.samples_seen = int(state.get("samples_seen", self.step * self.config.data.batch_size))
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
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

    # ---- the loop

    def _workers(self) -> int:
        workers = self.config.data.workers
        if workers >= 0:
            return workers
        if self.device.type != "cuda":
            return 0  # CPU runs are smoke tests: worker start-up would cost more than it saves
        # The machine's cores are shared by the processes torchrun started on it.
        return max(2, min(12, ((os.cpu_count() or 4) - 2) // self.dist.local_world_size))

    def _loader(self) -> DataLoader:
        workers = self._workers()
        extra = {}
        if workers:
            # Spawned, not forked: by now this process runs threads (torch's and OpenCV's pools,
            # pin-memory, TensorBoard), and a fork can copy a lock that one of them held into the
            # child, where no thread will ever release it. Forked workers stalled that way on the
            # GPU machine; spawned ones start clean, once (persistent), for a few seconds each.
            extra = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": worker_init,
                     "multiprocessing_context": "spawn"}
        return DataLoader(self.dataset, batch_size=self.config.data.batch_size,
                          sampler=ContinuingSampler(self.samples_seen, self.config.data.batch_size,
                                                    self.dist.rank, self.dist.world_size),
                          num_workers=workers, pin_memory=self.device.type == "cuda",
                          # Its own generator: creating the loader must not draw from the global
                          # torch RNG, or a resumed run would diverge from an uninterrupted one.
                          generator=torch.Generator(), **extra)

    @property
    def writer(self):
        if not self.dist.is_main:
            return _NoWriter()
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=self.step or None)
        return self._writer

    def request_stop(self, *_args) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt  # second Ctrl-C: stop at once
        self._stop_requested = True
        tqdm.write("stop requested: finishing this step and writing last.pt (Ctrl-C again to abort)")

    def _run_validation(self) -> None:
        self._last_validated_step = self.step
        if not self.val_samples:
            metrics, better = {}, True
        else:
            metrics = self.validate()
            better = self._is_better(metrics)
        for key, value in metrics.items():
            self.writer.add_scalar(f"val/{key}", value, self.step)
        record = {"step": self.step, **metrics}
        self.last_validation = {"step": self.step, "metrics": metrics}
        if better:
            name = self.config.train.select_metric if self.config.train.select_metric in metrics else "psnr"
            self.best = {"metric": name, "value": metrics.get(name, math.nan), "step": self.step, "metrics": metrics}
            self.save_best()
            record["best"] = True
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(to_python(record)) + "\n")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "/" not in k)
        tqdm.write(f"step {self.step}: validation {shown or '(no images)'}{'  -> best.pt' if better else ''}")

    def _log_images(self, out: StepOutput) -> None:
        v = out.visuals
        grid = training_grid(v["hazy"], v.get("dehazed"), v["clear"], v.get("depth_pred"), v.get("depth_target"),
                             v.get("dehazing_weights"), v.get("depth_difference"),
                             self.config.depth.min_m, self.config.depth.max_m)
        self.writer.add_image("train/hazy|dehazed|GT|depth|depth GT|dehaze diff|depth diff", grid,
                              self.step, dataformats="HWC")

    def fit(self, budget_start: float | None = None, on_step: Callable[["Trainer"], None] | None = None) -> dict:
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
        self._reserve_s = 15.0  # time kept for the final validation and last.pt; grows with measurements
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
                progress.step_done(out, batch["hazy"].shape[0] * self.dist.world_size)  # the whole job's images
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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resumed_with is None:
            save_config(self.config, self.run_dir / "config.yaml")
            return
        # Not config.yaml: a resume's overrides (a time budget, workers) are for this session;
        # written there they would silently become the defaults of every later resume.
        record = {"step": self.step, "overrides": self.resumed_with, "world_size": self.dist.world_size,
                  "samples_seen": self.samples_seen,
                  "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        with open(self.run_dir / "resumes.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

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
        out_of_time = budget_s and time.monotonic() - budget_start + min(self._reserve_s, 0.2 * budget_s) >= budget_s
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
        if (self.step > 0 and self._last_validated_step != self.step and not stopped_by_user
                and reason != "already finished" and self.dist.is_main):
            self._run_validation()
        last = self.save_last()
        # No rank leaves before last.pt is written: torchrun ends the whole job as soon as one
        # process exits with an error status (130 after a stop request is one).
        self.dist.barrier()
        if self._writer is not None:
            self._writer.flush()
        minutes = self.elapsed_s / 60.0
        self.log(f"{reason} at step {self.step}/{cfg.steps} ({minutes:.1f} min of training in all); "
                 f"state: {last}; best: {self.best.get('metric', '-')} {self.best.get('value', math.nan):.4g} "
                 f"at step {self.best.get('step', '-')}")
        if self.step < cfg.steps:
            self.log(f"continue with: python -m training.train --resume {self.run_dir}")
        return {"reason": reason, "step": self.step, "best": self.best, "last": str(last)}

    def _install_sigint(self) -> bool:
        """Ctrl-C and SIGTERM (a scheduler's stop, torchrun passing either on) finish the step."""
        try:
            self._previous_handlers = {number: signal.signal(number, self.request_stop)
                                       for number in (signal.SIGINT, signal.SIGTERM)}
            return True
        except ValueError:  # not the main thread: signals cannot be handled here
            return False

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# --------------------------------------------------------------------------------------------
# Command line

def new_run_dir(config: TrainingConfig) -> Path:
    name = config.train.run_name or f"{config.name}_{datetime.datetime.now():%Y%m%d-%H%M%S}"
    return Path(config.train.out_dir) / name


def prepare(config_path: str | None, overrides: list[str], resume: str | None,
            run_dir: str | None, log: Callable[[str], None] = print, dist: Distributed | None = None) -> Trainer:
    """A Trainer for a new run (config + overrides) or a resumed one (run folder); ``dist`` is
    this process's place under torchrun (``Distributed.from_environment()``), default alone.
    Every rank reads the run folder here (on several machines it must be on a shared disk)."""
    if resume:
        resume_dir = Path(resume)
        if not (resume_dir / "last.pt").is_file() or not (resume_dir / "config.yaml").is_file():
            raise TrainingError(f"cannot resume {resume_dir}: it needs config.yaml and last.pt (a run "
                                "folder written by training.train)")
        check_resume_overrides(overrides)
        config = load_config(resume_dir / "config.yaml", overrides, saved=True)
        trainer = Trainer(config, resume_dir, log=log, resumed_with=overrides, dist=dist)
        trainer.load_state_dict(load_training_file(resume_dir / "last.pt"))
        trainer.log(f"resumed at step {trainer.step}" + (f" with {' '.join(overrides)} (this session only)"
                                                           if overrides else ""))
        return trainer
    if not config_path:
        raise ConfigError("give --config FILE for a new run, or --resume RUN_DIR to continue one")
    config = load_config(config_path, overrides)
    target = Path(run_dir) if run_dir else new_run_dir(config)
    if dist is not None and dist.launched:
        dist.start(config.train.device)
        target = Path(dist.broadcast_object(str(target)))  # named after rank 0's clock
    if (target / "last.pt").exists():
        raise TrainingError(f"{target} already holds a run (last.pt); continue it with --resume {target} "
                            "or choose another train.run_name / --run-dir")
    return Trainer(config, target, log=log, dist=dist)


def main(argv: list[str] | None = None) -> int:
    budget_start = time.monotonic()
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML training config (config/train/*.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in this folder exactly")
    parser.add_argument("--run-dir", help="folder of a new run (default: train.out_dir/<name>_<date-time>)")
    parser.add_argument("--max-minutes", type=float, help="wall-clock budget (same as train.max_minutes=)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.steps=2000 data.root=/data data.sources.rgbd.weight=0.5")
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
