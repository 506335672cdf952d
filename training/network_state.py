"""What training keeps for each network (D and E alike): the model, its moving average, its
optimiser, learning-rate schedule and loss scaler."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from training.losses import cosine_with_warmup
from training.run_state import TrainingError

# Consecutive optimiser steps skipped for a non-finite gradient norm after which the run stops:
# by then the data or the weights, not one unlucky batch, make every gradient NaN or inf.
MAX_CONSECUTIVE_SKIPS = 20


class NonFiniteTraining(TrainingError):
    """Every step of a network has had a NaN or inf gradient for MAX_CONSECUTIVE_SKIPS steps."""


class ModelEma:
    """Exponential moving average of a network's weights, for validation and export.

    The decay ramps up as (1 + step) / (10 + step) so the average is not dominated by the random
    initialisation in short runs.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


class NetworkState:
    """One network in training: ``model`` (plain module: state dicts, EMA, frozen forwards),
    ``forward`` (what its own step calls: the DDP wrapper under torchrun, else ``model``), ``ema``,
    AdamW ``optimizer``, cosine ``scheduler`` and fp16 ``scaler``.

    ``weights_key`` and ``optim_key`` name its entries in the run-state file (training/run_state.py):
    ``<weights_key>``, ``ema_<weights_key>``, ``optimizer_<optim_key>``, ``scheduler_<...>``, ``scaler_<...>``.
    """

    def __init__(
        self,
        model: nn.Module,
        weights_key: str,
        optim_key: str,
        lr: float,
        optim,
        total_steps: int,
        ema_decay: float,
        fp16_scaler: bool,
    ):
        self.model = self.forward = model
        self.weights_key, self.optim_key = weights_key, optim_key
        self.ema = ModelEma(model, ema_decay)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
        )

        def lr_factor(step: int) -> float:
            return cosine_with_warmup(step, total_steps, optim.warmup_steps, optim.min_lr_ratio)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        # Loss scaling only for fp16 (bf16 has fp32's range). One scaler per network: an overflow
        # in one network's step must not skip the other's.
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16_scaler)
        self.skipped_steps = (
            0  # optimiser steps left out for a non-finite gradient norm (run total)
        )
        self.consecutive_skips = 0
        self.last_step_skipped = False

    def train(self, training: bool) -> None:
        """Train this network (True) or freeze it (False: eval mode, no gradients)."""
        self.model.train(training).requires_grad_(training)

    def step(self, grad_clip: float, scaler: torch.amp.GradScaler | None = None) -> float:
        """Optimiser step on the gradients already there (scaled by ``scaler``, default its own);
        returns the gradient norm before clipping.

        A non-finite norm skips the step (``skipped_steps``, ``last_step_skipped``) where no fp16
        scaler does it already: one NaN gradient through AdamW makes every weight NaN, and the EMA
        and last.pt follow. The norm is this step's one wait for the GPU: the decision needs it.
        """
        scaler = self.scaler if scaler is None else scaler
        scaler.unscale_(self.optimizer)  # a no-op without fp16 scaling
        # max_norm inf: the norm without clipping (the guard needs it also when clipping is off).
        grad_norm = float(
            nn.utils.clip_grad_norm_(
                self.model.parameters(), grad_clip if grad_clip > 0 else math.inf
            )
        )
        self.last_step_skipped = not math.isfinite(grad_norm) and not scaler.is_enabled()
        if self.last_step_skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_buffers()
            self.skipped_steps += 1
            self.consecutive_skips += 1
            if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
                raise NonFiniteTraining(
                    f"{self.weights_key}: the gradient norm was not finite in {self.consecutive_skips} steps "
                    f"in a row ({self.skipped_steps} in all): the run stops; last.pt holds the last weights "
                    "saved before (check the data, lower the learning rate, or train in fp32)"
                )
            return grad_norm
        self.consecutive_skips = 0
        scaler.step(self.optimizer)  # fp16: skipped by the scaler itself on inf / NaN
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    @torch.no_grad()
    def _restore_buffers(self) -> None:
        """BatchNorm statistics as they were before the skipped step's forward pass (the EMA copy
        holds them: it copies the buffers after every step), since a NaN forward has made them NaN."""
        for buffer, kept in zip(self.model.buffers(), self.ema.module.buffers()):
            buffer.copy_(kept)

    def backward_and_step(self, loss: torch.Tensor, grad_clip: float) -> float:
        self.scaler.scale(loss).backward()
        grad_norm = self.step(grad_clip)
        self.scaler.update()
        return grad_norm

    def weights(self) -> dict:
        return {
            self.weights_key: self.model.state_dict(),
            f"ema_{self.weights_key}": self.ema.module.state_dict(),
        }

    def optimisation_state(self) -> dict:
        return {
            f"optimizer_{self.optim_key}": self.optimizer.state_dict(),
            f"scheduler_{self.optim_key}": self.scheduler.state_dict(),
            f"scaler_{self.optim_key}": self.scaler.state_dict(),
        }

    def load(self, state: dict) -> None:
        """Weights, EMA and optimisation state from a full run-state file (last.pt)."""
        self.model.load_state_dict(state[self.weights_key])
        self.ema.module.load_state_dict(state[f"ema_{self.weights_key}"])
        self.optimizer.load_state_dict(state[f"optimizer_{self.optim_key}"])
        self.scheduler.load_state_dict(state[f"scheduler_{self.optim_key}"])
        self.scaler.load_state_dict(state[f"scaler_{self.optim_key}"])
