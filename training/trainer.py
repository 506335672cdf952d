"""The Trainer: alternating dual-task training of the DIACMPN dehazer D and depth network E.

    trainer = Trainer(config, run_dir)  # or training.train.prepare(...): new and resumed runs
    trainer.fit()                       # until train.steps, the time budget or Ctrl-C

Each iteration of the ``alternating`` schedule (the paper's idea, really alternated):

(a) dehazing step, E frozen: D's loss is reconstruction + depth-difference perception (E applied
    to D's output against the depth target: gradients reach D through the frozen E) + supervision
    of D's own depth branch where the data has depth;
(b) depth step, D frozen and its output detached: E's loss on E(D(I)) weighted by the dehazing
    difference map (where D is still wrong) + the same loss unweighted.

``joint`` sums every term and takes one backward pass for both networks (the public code's
scheme, kept as an ablation). E always sees D's output clamped to [0, 1], as in deployment.

The class builds the run (networks, optimisers, data); its methods come in three parts: the
step in training/trainer_steps.py, the run's state (last.pt, best.pt) in
training/trainer_state.py and the loop (fit) in training/trainer_loop.py. What is decided and
checked before the first step (precision, init_from, the teacher, the setup report) is in
training/run_setup.py, validation metrics in training/validation.py, progress output in
training/progress.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from dehaze_ros.models import build_dehazer, build_depth_net
from training import losses
from training.config import TrainingConfig
from training.data import build_sources, build_training_dataset, build_validation_samples
from training.distributed import DehazerWithDepth, Distributed
from training.network_state import NetworkState
from training.run_setup import (
    build_model_config,
    check_trainable,
    describe_setup,
    load_init_weights,
    load_teacher,
    recorded_world_size,
    resolve_precision,
    seed_everything,
    tune_for_device,
)
from training.run_state import git_commit
from training.trainer_loop import TrainerLoop
from training.trainer_state import TrainerState
from training.trainer_steps import StepOutput, TrainerSteps, all_known

# StepOutput and all_known are defined with the step and stay importable from here.
__all__ = ["StepOutput", "Trainer", "all_known"]


# --------------------------------------------------------------------------------------------
# The trainer


class Trainer(TrainerSteps, TrainerState, TrainerLoop):
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
        # The newest validation ({"step", "metrics"}): what an export of last.pt can claim.
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
