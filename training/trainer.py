"""The Trainer: alternating dual-task training of the DIACMPN dehazer D and depth network E.

    trainer = Trainer(config, run_dir)      # or training.train.prepare(...) for new and resumed runs
    trainer.fit()                           # until train.steps, the time budget or Ctrl-C

Each iteration of the ``alternating`` schedule (the paper's idea, really alternated):

(a) dehazing step, E frozen: D's loss is reconstruction + depth-difference perception (E applied
    to D's output against the depth target: gradients reach D through the frozen E) + supervision
    of D's own depth branch where the data has depth;
(b) depth step, D frozen and its output detached: E's loss on E(D(I)) weighted by the dehazing
    difference map (where D is still wrong) + the same loss unweighted.

``joint`` sums every term and takes one backward pass for both networks (the public code's
scheme, kept as an ablation). E always sees D's output clamped to [0, 1], as in deployment.

The class holds the step, the loop and the state; what is decided and checked before the first
step (precision, init_from, the teacher, the setup report) is in training/run_setup.py,
validation metrics in training/validation.py, progress output in training/progress.py.
"""

from __future__ import annotations

import datetime
import math
import re
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dehaze_ros.camera import canonical_from_metric
from dehaze_ros.models import build_dehazer, build_depth_net
from training import losses
from training.config import TrainingConfig
from training.data import build_sources, build_training_dataset, build_validation_samples
from training.distributed import DehazerWithDepth, Distributed
from training.network_state import NetworkState
from training.progress import NoWriter, ProgressLog
from training.run_setup import (
    autocast,
    build_model_config,
    check_resumed_model_config,
    check_trainable,
    cudnn_autotuning,
    describe_setup,
    load_init_weights,
    load_teacher,
    recorded_world_size,
    resolve_precision,
    seed_everything,
    training_loader,
    tune_for_device,
)
from training.run_state import (
    TRAINING_STATE_FORMAT,
    TRAINING_STATE_VERSION,
    TrainingError,
    append_record,
    git_commit,
    open_run_folder,
    rng_state,
    save_training_file,
    set_rng_state,
    to_python,
)
from training.validation import is_better, validation_metrics
from training.visualize import training_grid


def all_known(depth: torch.Tensor) -> torch.Tensor:
    """Every image of the batch has depth of known scale (the default of the step methods)."""
    return torch.ones(depth.shape[0], dtype=torch.bool, device=depth.device)


@dataclass
class StepOutput:
    # Loss terms and gradient norms as they come: 0-d tensors on the training device (detached)
    # or floats. Turning each into a float on the spot waited for the GPU once per term, about 15
    # times a step; ``losses`` converts them all with one wait, and only when someone reads them
    # (the progress log, every log_every steps).
    terms: dict[str, torch.Tensor | float] = field(default_factory=dict)
    visuals: dict[str, torch.Tensor] = field(default_factory=dict)
    transmission: torch.Tensor | None = None  # D's, detached: the depth step's second input

    @property
    def losses(self) -> dict[str, float]:
        """Every term as a float, in the order the step produced them."""
        tensors = {
            key: value for key, value in self.terms.items() if isinstance(value, torch.Tensor)
        }
        floats = {}
        if tensors:
            stacked = torch.stack(
                [value.detach().float().reshape(()) for value in tensors.values()]
            )
            floats = dict(zip(tensors, stacked.tolist()))
        return {
            key: floats[key] if key in floats else float(value) for key, value in self.terms.items()
        }


# --------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """One training run: models, optimisers, data, and the loop. ``fit()`` trains; state in
    ``state_dict()`` / ``load_state_dict()``; ``last.pt`` and ``best.pt`` in ``run_dir``."""

    def __init__(
        self,
        config: TrainingConfig,
        run_dir: str | Path,
        log: Callable[[str], None] = print,
        resumed_with: list[str] | None = None,
        dist: Distributed | None = None,
    ):
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
            train.world_size = recorded_world_size(train.world_size, self.dist)
        self._rng_cuda_device = (
            self.device if self.dist.launched and self.device.type == "cuda" else None
        )
        self.amp_dtype = resolve_precision(train.precision, self.device)
        tune_for_device(self.device)

        # Seeded before the networks are built: their initial weights are the run's first draw.
        seed_everything(train.seed)
        self.model_config = build_model_config(config)
        self.dehazer = build_dehazer(self.model_config)
        self.depth_net = build_depth_net(self.model_config)
        # Where the starting weights came from (path, hash, units, their own provenance): kept in
        # every state and export. A resume takes its weights and this record from last.pt, so the
        # init_from file may have moved or been replaced (an export over the shipped default) since.
        self.init_record: dict = {}
        if train.init_from and self.resumed_with is None:
            self.init_record = load_init_weights(
                train.init_from,
                self.model_config,
                self.dehazer,
                self.depth_net,
                train.freeze,
                self.log,
            )
        self.dehazer.to(self.device)
        self.depth_net.to(self.device)
        self._build_optimisation()

        self.train_sources = build_sources(config.data, "train")
        self.dataset = build_training_dataset(config.data, train.seed, self.train_sources)
        self.val_sources = build_sources(config.data, "val")
        # Only rank 0 validates.
        self.val_samples = (
            build_validation_samples(config.data, train.seed, self.val_sources)
            if self.dist.is_main
            else []
        )
        self.teacher = load_teacher(config.depth.teacher_checkpoint, self.device)
        sources_with_depth = [s.name for s in self.train_sources if s.has_depth]
        self.depth_available = bool(sources_with_depth) or self.teacher is not None
        self.loss = losses.DualTaskLoss.from_config(config.loss, self.depth_available)
        check_trainable(config, self.model_config, self.loss, self.depth_available)

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
        describe_setup(self, sources_with_depth)

    def _build_optimisation(self) -> None:
        """D's and E's optimiser, schedule, EMA and scaler, and what each step calls to run them."""
        train, optim = self.config.train, self.config.optim
        use_scaler = self.amp_dtype == torch.float16
        self.D = NetworkState(
            self.dehazer,
            "dehazer",
            "dehazer",
            optim.lr_dehazer,
            optim,
            train.steps,
            train.ema_decay,
            use_scaler,
        )
        self.E = NetworkState(
            self.depth_net,
            "depth_net",
            "depth",
            optim.lr_depth,
            optim,
            train.steps,
            train.ema_decay,
            use_scaler,
        )
        # What each step calls to run the network it trains: under torchrun DistributedDataParallel
        # around the plain module (which keeps serving EMA, state dicts, validation and the frozen
        # forwards), else the plain module itself. Every rank built the same seeded weights (and DDP
        # broadcasts rank 0's anyway), so the EMA copies above agree too. Every parameter of D takes
        # part in its step (the depth branch feeds the encoder), so DDP need not search for unused
        # ones; E in the joint ablation may have no depth term on a rank: search there.
        self._plain_dehazer = DehazerWithDepth(self.dehazer)  # a frozen D runs without DDP
        self.D.forward = self.dist.wrap(self._plain_dehazer)
        self.E.forward = self.dist.wrap(
            self.depth_net, find_unused_parameters=train.schedule == "joint"
        )

    # ---- one iteration

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def _depth_targets(
        self,
        clear: torch.Tensor,
        depth: torch.Tensor,
        has_depth: torch.Tensor,
        all_known: bool | None = None,
    ) -> torch.Tensor:
        """``all_known``: whether every image has depth, when known without a GPU sync."""
        if all_known is None:
            all_known = bool(has_depth.all())
        if self.teacher is None or all_known:
            return depth
        with torch.no_grad(), self._autocast():
            taught = self.teacher(clear).float()
        return torch.where(has_depth.view(-1, 1, 1, 1), depth, taught)

    def _canonical_targets(
        self, depth: torch.Tensor, batch: dict[str, torch.Tensor]
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
        factor = torch.where(
            has_focal,
            canonical_from_metric(1.0, focal.clamp_min(1e-6), canonical_focal),
            torch.ones_like(focal),
        )
        return depth * factor.view(-1, 1, 1, 1), scale_known & has_focal, factor

    def dehazer_step(
        self,
        hazy,
        clear,
        depth,
        mask,
        want_visuals: bool = False,
        scale_known: torch.Tensor | None = None,
        haze_truth: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, StepOutput]:
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
        total, parts = self.loss.dehazing(
            dehazed,
            clear,
            depth,
            mask,
            scale_known,
            depth_of_dehazed,
            branch_depth,
            (transmission, airlight),
            haze_truth,
        )
        if depth_of_dehazed is not None and want_visuals:
            out.visuals["depth_difference"] = losses.depth_difference(
                depth_of_dehazed.detach(), depth, self.loss.perception_mask(mask, scale_known)
            )
        out.terms = {f"dehazer/{k}": v.detach() for k, v in parts.items()}
        out.terms["dehazer/total"] = total.detach()
        if trains:
            out.terms["dehazer/grad_norm"] = self.D.backward_and_step(
                total, self.config.optim.grad_clip
            )
            self._note_skipped_step("dehazer", self.D)
        out.transmission = None if transmission is None else transmission.detach()
        return dehazed.detach(), out

    def depth_step(
        self,
        dehazed,
        clear,
        depth,
        mask,
        want_visuals: bool = False,
        scale_known: torch.Tensor | None = None,
        sky_far: torch.Tensor | None = None,
        transmission: torch.Tensor | None = None,
    ) -> StepOutput:
        """(b) Update E with D frozen: E(D(I)) with D's output (and transmission) detached."""
        scale_known = all_known(depth) if scale_known is None else scale_known
        out = StepOutput()
        if "depth_net" in self.config.train.freeze:
            return out
        # Whether a batch has depth differs between ranks, and E's step must be taken by all or
        # none (its gradients are all-reduced): a rank without depth adds a zero loss.
        if not self.loss.trains_depth_net() or not any(self.dist.any_rank(mask.any())):
            return (
                out  # nothing to learn from this batch: no optimiser step (Adam would still move)
            )
        self.D.train(False)
        self.E.train(True)
        dehazed = dehazed.detach().clamp(0.0, 1.0)
        difference_weights = self.loss.difference_weights(dehazed, clear, mask)
        with self._autocast():
            depth_pred = self.E.forward(
                dehazed, None if transmission is None else transmission.detach()
            )
        total, parts = self.loss.depth_estimation(
            depth_pred, depth, mask, scale_known, difference_weights, sky_far
        )
        out.terms = {f"depth/{k}": v.detach() for k, v in parts.items()}
        out.terms["depth/grad_norm"] = self.E.backward_and_step(total, self.config.optim.grad_clip)
        self._note_skipped_step("depth", self.E)
        out.terms["depth/total"] = total.detach()
        if want_visuals:
            out.visuals.update(
                depth_pred=depth_pred.detach().float(), dehazing_weights=difference_weights
            )
        return out

    def joint_step(
        self,
        hazy,
        clear,
        depth,
        mask,
        want_visuals: bool = False,
        scale_known: torch.Tensor | None = None,
        haze_truth: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> StepOutput:
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
        total, parts = self.loss.joint(
            dehazed,
            clear,
            depth,
            mask,
            scale_known,
            depth_pred,
            branch_depth,
            difference_weights,
            (transmission, airlight),
            haze_truth,
        )
        # One backward pass through D's scaler, both optimisers stepped with it, one update.
        self.D.scaler.scale(total).backward()
        for name, network in (("dehazer", self.D), ("depth", self.E)):
            grad_norm = network.step(self.config.optim.grad_clip, scaler=self.D.scaler)
            self._note_skipped_step(name, network)
            if self.config.optim.grad_clip > 0:
                out.terms[f"{name}/grad_norm"] = grad_norm
        self.D.scaler.update()
        out.terms.update({f"joint/{k}": v.detach() for k, v in parts.items()})
        out.terms["joint/total"] = total.detach()
        if want_visuals:
            out.visuals.update(
                dehazed=dehazed.detach(),
                depth_pred=depth_pred.detach().float(),
                dehazing_weights=difference_weights,
            )
        return out

    def _note_skipped_step(self, name: str, network: NetworkState) -> None:
        """Say it when a network's step was left out for a non-finite gradient (NetworkState.step)."""
        if network.last_step_skipped:
            self.log(
                f"step {self.step}: {name} gradient norm not finite: its optimiser step was skipped "
                f"({network.skipped_steps} so far in this run)"
            )

    def train_step(self, batch: dict[str, torch.Tensor], want_visuals: bool = False) -> StepOutput:
        non_blocking = self.device.type == "cuda"
        hazy = batch["hazy"].to(self.device, non_blocking=non_blocking)
        clear = batch["clear"].to(self.device, non_blocking=non_blocking)
        depth = batch["depth"].to(self.device, non_blocking=non_blocking)
        has_depth = batch["has_depth"].to(self.device, non_blocking=non_blocking)
        # Asked of the batch's CPU copy: the same answer without waiting for the GPU.
        depth = self._depth_targets(
            clear, depth, has_depth, all_known=bool(batch["has_depth"].all())
        )
        haze_truth = None
        if self.loss.supervises_haze() and "transmission" in batch:
            haze_truth = (
                batch["transmission"].to(self.device, non_blocking=non_blocking),
                batch["airlight"].to(self.device, non_blocking=non_blocking),
            )
        mask = losses.valid_depth_mask(depth, self.config.depth.min_m, self.config.depth.max_m)
        if not self.depth_available:
            mask = torch.zeros_like(mask)
        depth, scale_known, to_network_units = self._canonical_targets(depth, batch)
        # Sky must come out beyond the far end of the range, in each image's own units; images of
        # unknown scale have no such units (their factor is 1): no hinge there.
        sky_far = torch.where(
            scale_known,
            self.config.depth.max_m * to_network_units,
            torch.full_like(to_network_units, math.nan),
        )
        if self.config.train.schedule == "alternating":
            dehazed, out = self.dehazer_step(
                hazy, clear, depth, mask, want_visuals, scale_known, haze_truth
            )
            depth_out = self.depth_step(
                dehazed,
                clear,
                depth,
                mask,
                want_visuals,
                scale_known,
                sky_far,
                transmission=out.transmission,
            )
            out.terms.update(depth_out.terms)
            out.visuals.update(depth_out.visuals)
            out.visuals["dehazed"] = dehazed
        else:
            out = self.joint_step(hazy, clear, depth, mask, want_visuals, scale_known, haze_truth)
        with warnings.catch_warnings():
            # The schedules follow iterations, also those in which E had no depth to learn from
            # and did not step; torch warns about exactly that order, harmlessly here.
            warnings.filterwarnings(
                "ignore", message=re.escape("Detected call of `lr_scheduler.step()`")
            )
            self.D.scheduler.step()
            self.E.scheduler.step()
        # Parameters are equal on every rank after the all-reduced steps; BatchNorm statistics of
        # each rank's own batch are not, until rank 0's are copied: then the EMA agrees too.
        self.dist.broadcast_buffers((self.dehazer, self.depth_net))
        for name, network in (("dehazer", self.D), ("depth_net", self.E)):
            if name not in self.config.train.freeze:  # a frozen network's average is its weights
                network.ema.update(network.model, self.step)
        self.step += 1
        self.samples_seen += hazy.shape[0] * self.dist.world_size
        if want_visuals:
            out.visuals.update(
                hazy=hazy, clear=clear, depth_target=torch.where(mask, depth, torch.nan)
            )
        return out

    # ---- validation

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
            # A frozen depth network is the init_from checkpoint's: its units, whatever this run's data.
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

    # ---- the loop

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
            f"step {self.step}: validation {shown or '(no images)'}{'  -> best.pt' if better else ''}"
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
            f"state: {last}; best: {self.best.get('metric', '-')} {self.best.get('value', math.nan):.4g} "
            f"at step {self.best.get('step', '-')}"
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
