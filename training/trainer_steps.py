"""One training iteration of the Trainer (training/trainer.py): the dehazing step (a), the depth
step (b), the joint ablation and train_step, which feeds a batch to the schedule's steps; the
depth targets in the networks' units and the loss terms each step reports (StepOutput)."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import torch

from dehaze_ros.canonical_camera import canonical_from_metric
from training import losses
from training.network_state import NetworkState
from training.run_setup import autocast


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


class TrainerSteps:
    """The Trainer's steps (a mixin of Trainer: the networks, losses, optimisers and settings it
    uses are those Trainer.__init__ builds)."""

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
        (dehaze_ros.canonical_camera); an image of unknown focal length then has no known scale,
        like one with relative depth, and trains only scale-invariant terms. The validity mask is
        taken on metres before, so depth.min_m / max_m keep meaning metres.
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
        """Log a network's step left out for a non-finite gradient (NetworkState.step)."""
        if network.last_step_skipped:
            self.log(
                f"step {self.step}: {name} gradient norm not finite: its optimiser step was "
                f"skipped ({network.skipped_steps} so far in this run)"
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
