"""Loss terms of the alternating dual-task training (DIACMPN, CVPR 2024), in float32.

Dehazing D:  reconstruction (L1 + (1 - SSIM)) + depth-difference perception (E applied to D's
             output, compared with the depth target, weighted towards where they disagree)
             + supervision of D's internal depth branch
             (+ physics heads, where the haze was synthesised: L1 of t and of A against the truth).
Depth E:     depth loss on E(D(I)) weighted by the dehazing-difference map (softmax over pixels
             of D's error summed over channels) + the same depth loss unweighted.

Depth tensors are metres, B x 1 x H x W; a pixel counts only where the target is finite and
inside [min_m, max_m] (NaN = unknown, +inf = sky: REP-117). Every depth loss is a weighted mean
per image, and images without a single valid pixel are left out of the batch mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dehaze_ros.models.dehazer import T_MIN  # the physics head's floor of t

LOG_FLOOR_M = 1e-3  # predictions are >= 0 by construction; log() needs a floor


# --------------------------------------------------------------------------------------------
# Structural similarity (Wang et al. 2004): Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03


def _gaussian_kernel(
    size: int, sigma: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    kernel = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _filter(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of every channel (as Wang et al.'s reference code)."""
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(images, horizontal, groups=channels), vertical, groups=channels)


def ssim_map(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Per-pixel SSIM, B x C x (H - w + 1) x (W - w + 1); the window shrinks for tiny images."""
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"SSIM needs two B x C x H x W tensors of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    window = min(window, pred.shape[-1], pred.shape[-2])
    window -= 1 - window % 2  # odd
    kernel = _gaussian_kernel(
        window, sigma * window / 11.0 if window < 11 else sigma, pred.dtype, pred.device
    )
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_p, mu_t = _filter(pred, kernel), _filter(target, kernel)
    var_p = _filter(pred * pred, kernel) - mu_p**2
    var_t = _filter(target * target, kernel) - mu_t**2
    cov = _filter(pred * target, kernel) - mu_p * mu_t
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    )


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image (over channels and pixels): a B-vector."""
    return ssim_map(pred, target, data_range).flatten(1).mean(dim=1)


def reconstruction_loss(
    dehazed: torch.Tensor, clear: torch.Tensor, l1_weight: float, ssim_weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    parts = {}
    if l1_weight:
        parts["l1"] = (dehazed - clear).abs().mean()
    if ssim_weight:
        parts["ssim"] = 1.0 - ssim(dehazed, clear).mean()
    total = l1_weight * parts.get("l1", 0.0) + ssim_weight * parts.get("ssim", 0.0)
    return total, parts


# --------------------------------------------------------------------------------------------
# Depth


def valid_depth_mask(depth_m: torch.Tensor, min_m: float, max_m: float) -> torch.Tensor:
    """True where the depth is a usable target: finite and inside [min_m, max_m]."""
    return torch.isfinite(depth_m) & (depth_m >= min_m) & (depth_m <= max_m)


def masked_softmax_weights(
    scores: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """softmax(scores / T) over the valid pixels of each image: B x 1 x H x W, sums to 1 per image.

    Invalid pixels get weight 0; an image without valid pixels gets all zeros.
    """
    batch = scores.shape[0]
    logits = (scores.float() / temperature).reshape(batch, -1)
    flat_mask = mask.reshape(batch, -1)
    logits = logits.masked_fill(~flat_mask, float("-inf"))
    empty = ~flat_mask.any(dim=1, keepdim=True)
    logits = logits.masked_fill(empty, 0.0)  # avoid softmax over all -inf (NaN)
    weights = torch.softmax(logits, dim=1) * flat_mask
    return weights.reshape(scores.shape)


def dehazing_difference_weights(
    dehazed: torch.Tensor, clear: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The paper's dehazing -> depth signal: softmax over all pixels of |J - GT| summed over
    channels. Detached: it tells E where to look, it is not a path for gradients into D."""
    error = (dehazed.detach().float() - clear.float()).abs().sum(dim=1, keepdim=True)
    return masked_softmax_weights(error, mask, temperature)


def _log_depth(depth_m: torch.Tensor) -> torch.Tensor:
    return torch.log(depth_m.float().clamp_min(LOG_FLOOR_M))


def _per_image_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).flatten(1).sum(dim=1)


def depth_loss(
    pred_m: torch.Tensor,
    target_m: torch.Tensor,
    mask: torch.Tensor,
    l1_weight: float,
    silog_weight: float,
    silog_lambda: float,
    pixel_weights: torch.Tensor | None = None,
    scale_known: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """l1_weight * L1 (metres) + silog_weight * SILog, as weighted means over valid pixels.

    SILog (Eigen et al. 2014): sqrt(E[g^2] - lambda E[g]^2), g = log pred - log target. lambda = 1
    ignores a global scale error entirely; lambda < 1 keeps (1 - lambda) of it, so the term stays
    scale-aware and the network must get metres right, not only relative depth.
    ``pixel_weights`` (B x 1 x H x W) re-weight pixels (renormalised over the valid ones).
    ``scale_known`` (B bools, default all True): where False, the target is right only up to a
    scale (relative depth, or an unknown focal length): that image has no L1 term and SILog
    with lambda = 1, which learns its relative depth and nothing of its scale.
    """
    mask = mask & torch.isfinite(pred_m)
    if pixel_weights is None:
        weights = mask.float()
    else:
        weights = pixel_weights.float() * mask
    totals = weights.flatten(1).sum(dim=1)
    has_pixels = totals > 0
    weights = weights / totals.clamp_min(1e-12).view(-1, 1, 1, 1)
    # Invalid targets are replaced before any arithmetic so no NaN can reach a gradient.
    target = torch.where(mask, target_m.float(), torch.ones_like(pred_m, dtype=torch.float32))
    pred = torch.where(mask, pred_m.float(), torch.ones_like(pred_m, dtype=torch.float32))
    parts = {}
    total = pred_m.float().sum() * 0.0  # keeps the graph when no image has valid depth
    if not has_pixels.any():
        return total, parts
    count = has_pixels.sum()
    if scale_known is None:
        scale_known = torch.ones_like(has_pixels)
    if l1_weight and (has_pixels & scale_known).any():
        l1 = _per_image_mean((pred - target).abs(), weights)
        metric = has_pixels & scale_known
        parts["depth_l1"] = l1[metric].sum() / metric.sum()
        total = total + l1_weight * parts["depth_l1"]
    if silog_weight:
        log_error = _log_depth(pred) - _log_depth(target)
        mean_sq = _per_image_mean(log_error**2, weights)
        mean = _per_image_mean(log_error, weights)
        lambdas = torch.where(
            scale_known, torch.full_like(mean, silog_lambda), torch.ones_like(mean)
        )
        silog = torch.sqrt((mean_sq - lambdas * mean**2).clamp_min(1e-8))
        parts["depth_silog"] = silog[has_pixels].sum() / count
        total = total + silog_weight * parts["depth_silog"]
    return total, parts


SKY_MARGIN = 1.25  # sky must come out at least this factor beyond the far end of the range


def sky_depth_loss(pred: torch.Tensor, target: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """Sky (target +inf, REP-117 "out of range") must be predicted beyond the trained range.

    A hinge on log depth: zero once the prediction passes ``far * SKY_MARGIN`` (``far``: B, the
    far end of the range in the target's units; NaN leaves that image out), so sky never becomes
    a finite depth *target*,
    but a wall of sky a few metres ahead is penalised. Mean over sky pixels; 0 without sky.
    """
    far = far.float().view(-1, 1, 1, 1)
    sky = torch.isposinf(target) & torch.isfinite(far)  # far NaN: that image has no hinge
    # No "if not sky.any()": that waits for the GPU every step; without sky the sum is 0 and the
    # count is clamped to 1 (far NaN makes gap NaN there, but where() never selects it).
    gap = F.relu(torch.log(far * SKY_MARGIN) - _log_depth(pred))
    return torch.where(sky, gap, torch.zeros_like(gap)).sum() / sky.sum().clamp_min(1)


def depth_difference(
    depth_of_dehazed_m: torch.Tensor, target_m: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """|log E(D(I)) - log d|: how far the dehazed image's geometry is from the ideal one's,
    in log space so that 10 cm at 1 m counts like 1 m at 10 m. Zero where invalid."""
    target = torch.where(mask, target_m.float(), torch.ones_like(target_m, dtype=torch.float32))
    difference = (_log_depth(depth_of_dehazed_m) - _log_depth(target)).abs()
    return torch.where(mask, difference, torch.zeros_like(difference))


def depth_perception_loss(
    depth_of_dehazed_m: torch.Tensor, target_m: torch.Tensor, mask: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's depth -> dehazing signal, a loss on D through the frozen E.

    The depth difference is averaged with weights softmax(difference / T) over valid pixels, so
    regions whose depth is still wrong (where D's result is not yet geometrically right) dominate.
    Returns (loss, weight map for logging).
    """
    difference = depth_difference(depth_of_dehazed_m, target_m, mask)
    weights = masked_softmax_weights(difference.detach(), mask, temperature)
    per_image = _per_image_mean(difference, weights)
    has_pixels = mask.flatten(1).any(dim=1)
    # The mean over the images with pixels, without asking the GPU whether there are any: an
    # image without has zero weights and so a zero per_image; none at all gives 0 / 1.
    return per_image.sum() / has_pixels.sum().clamp_min(1), weights


def haze_supervision_loss(
    pred_transmission: torch.Tensor,
    pred_airlight: torch.Tensor,
    true_transmission: torch.Tensor,
    true_airlight: torch.Tensor,
    t_min: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L1 of t, L1 of -ln t, L1 of A) of a physics head against the synthetic haze it should invert.

    t: B x 1 x H x W, A: B x 3 (x 1 x 1). The truth is NaN where unknown (a photograph's haze).
    Pixels with true t below ``t_min`` (sky, the densest haze) are left out: the inverse ASM
    clamps t there, and their clear image cannot be recovered from I, whatever t is predicted.
    The optical depth -ln t = beta * d compares t by its relative error |dt| / t: the error that
    J = (I - A) / t + A makes of a t error grows as 1 / t, and so does this term's weight of it,
    where an L1 of t weighs the same error alike in dense and in light haze. The prediction is
    clamped at t_min as the inverse model clamps it (so below t_min only the L1 of t moves it).
    Each term is a mean over the images that have it; zero (with a graph) where none has.
    """
    pred_t, true_t = pred_transmission.float(), true_transmission.float()
    valid = torch.isfinite(true_t) & (true_t >= t_min)
    counts = valid.flatten(1).sum(dim=1)
    has_t = counts > 0

    def per_pixel_mean(error: torch.Tensor) -> torch.Tensor:
        # Mean over the images that have t, by arithmetic rather than a host-side has_t.any():
        # an image without has zero error everywhere (target = prediction), none at all gives 0 / 1.
        per_image = error.flatten(1).sum(dim=1) / counts.clamp_min(1)
        return per_image.sum() / has_t.sum().clamp_min(1)

    # Where the truth is unusable it is replaced by the prediction itself: zero error, no NaN gradient.
    target_t = torch.where(valid, true_t, pred_t)
    t_loss = per_pixel_mean((pred_t - target_t).abs())
    pred_od = -torch.log(pred_t.clamp(t_min, 1.0))
    target_od = torch.where(valid, -torch.log(true_t.clamp(t_min, 1.0)), pred_od)
    od_loss = per_pixel_mean((pred_od - target_od).abs())
    pred_a, true_a = pred_airlight.float().flatten(1), true_airlight.float().flatten(1)
    has_a = torch.isfinite(true_a).all(dim=1, keepdim=True)
    # Unknown airlight replaced by the prediction (zero error, no NaN gradient), as t above.
    a_error = (pred_a - torch.where(has_a, true_a, pred_a.detach())).abs()
    a_loss = a_error.sum() / (has_a.sum() * pred_a.shape[1]).clamp_min(1)
    return t_loss, od_loss, a_loss


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine down to ``min_ratio``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# The dual-task loss: every term's weight and the depth-loss settings, from one LossConfig

DEPTH_TERMS = (
    "depth_perception",
    "branch_depth",
    "depth_weighted",
    "depth_unweighted",
    "sky_depth",
)


@dataclass(frozen=True)
class DualTaskLoss:
    """D's and E's losses with the settings of one ``loss`` config section (training/config.py).

    A weight of 0 switches its term off. ``from_config(..., depth_available=False)`` switches every
    depth term off (no source has depth and there is no teacher).
    """

    l1: float
    ssim: float
    depth_perception: float
    branch_depth: float
    depth_weighted: float
    depth_unweighted: float
    sky_depth: float
    depth_l1: float
    depth_silog: float
    silog_lambda: float
    temperature: float
    transmission: float
    optical_depth: float
    airlight: float

    @classmethod
    def from_config(cls, loss, depth_available: bool = True) -> "DualTaskLoss":
        weights = {name: (getattr(loss, name) if depth_available else 0.0) for name in DEPTH_TERMS}
        return cls(
            l1=loss.l1,
            ssim=loss.ssim,
            **weights,
            depth_l1=loss.depth_l1,
            depth_silog=loss.depth_silog,
            silog_lambda=loss.silog_lambda,
            temperature=loss.difference_temperature,
            transmission=loss.transmission,
            optical_depth=loss.optical_depth,
            airlight=loss.airlight,
        )

    def depth(self, pred_m, target_m, mask, scale_known, pixel_weights=None):
        """``depth_loss`` with this config's L1 / SILog weights and lambda: (total, parts)."""
        return depth_loss(
            pred_m,
            target_m,
            mask,
            self.depth_l1,
            self.depth_silog,
            self.silog_lambda,
            pixel_weights,
            scale_known,
        )

    @staticmethod
    def perception_mask(mask: torch.Tensor, scale_known: torch.Tensor) -> torch.Tensor:
        """The depth difference compares log depths directly: only images of known scale."""
        return mask & scale_known.view(-1, 1, 1, 1)

    def perceives(self, mask: torch.Tensor, scale_known: torch.Tensor) -> bool:
        """Whether the dehazing loss has a depth-perception term for this batch (E must run on J)."""
        return bool(self.depth_perception) and bool(self.perception_mask(mask, scale_known).any())

    def difference_weights(self, dehazed, clear, mask):
        return dehazing_difference_weights(dehazed, clear, mask, self.temperature)

    def supervises_haze(self) -> bool:
        return bool(self.transmission or self.optical_depth or self.airlight)

    def dehazing(
        self,
        dehazed,
        clear,
        depth,
        mask,
        scale_known,
        depth_of_dehazed=None,
        branch_depth=None,
        physics=None,
        haze_truth=None,
    ):
        """D's loss: reconstruction + depth perception of E(J) (when given) + D's depth branch
        + (physics heads, when weighted) t and A against the synthetic haze. ``physics`` is D's
        (transmission, airlight), ``haze_truth`` the batch's; either None skips those terms.
        Returns (total, parts by term name)."""
        total, parts = reconstruction_loss(dehazed, clear, self.l1, self.ssim)
        if (
            self.supervises_haze()
            and physics is not None
            and physics[0] is not None
            and haze_truth is not None
        ):
            parts["transmission"], parts["optical_depth"], parts["airlight"] = (
                haze_supervision_loss(*physics, *haze_truth, T_MIN)
            )
            total = (
                total
                + self.transmission * parts["transmission"]
                + self.optical_depth * parts["optical_depth"]
                + self.airlight * parts["airlight"]
            )
        if depth_of_dehazed is not None:
            parts["depth_perception"], _ = depth_perception_loss(
                depth_of_dehazed, depth, self.perception_mask(mask, scale_known), self.temperature
            )
            total = total + self.depth_perception * parts["depth_perception"]
        if self.branch_depth and bool(mask.any()):
            parts["branch_depth"], _ = self.depth(branch_depth, depth, mask, scale_known)
            total = total + self.branch_depth * parts["branch_depth"]
        return total, parts

    def trains_depth_net(self) -> bool:
        return bool(self.depth_weighted or self.depth_unweighted)

    def depth_estimation(
        self, depth_pred, depth, mask, scale_known, difference_weights, sky_far=None
    ):
        """E's loss: the depth loss weighted by the dehazing difference map + unweighted + the
        sky hinge. Returns (total, parts named as logged: weighted_depth_silog, depth_silog, sky)."""
        total = depth_pred.float().sum() * 0.0
        parts = {}
        if self.depth_weighted:
            weighted, weighted_parts = self.depth(
                depth_pred, depth, mask, scale_known, difference_weights
            )
            parts.update({f"weighted_{key}": value for key, value in weighted_parts.items()})
            total = total + self.depth_weighted * weighted
        if self.depth_unweighted:
            plain, plain_parts = self.depth(depth_pred, depth, mask, scale_known)
            parts.update(plain_parts)
            total = total + self.depth_unweighted * plain
        if self.sky_depth and sky_far is not None:
            parts["sky"] = sky_depth_loss(depth_pred, depth, sky_far)
            total = total + self.sky_depth * parts["sky"]
        return total, parts

    def joint(
        self,
        dehazed,
        clear,
        depth,
        mask,
        scale_known,
        depth_pred,
        branch_depth,
        difference_weights,
        physics=None,
        haze_truth=None,
    ):
        """The ablation's one summed loss: D's terms (E(J) with gradients into both) + E's two
        depth terms. Returns (total, parts by term name)."""
        depth_of_dehazed = depth_pred if self.perceives(mask, scale_known) else None
        total, parts = self.dehazing(
            dehazed,
            clear,
            depth,
            mask,
            scale_known,
            depth_of_dehazed,
            branch_depth,
            physics,
            haze_truth,
        )
        if bool(mask.any()):
            for name, pixel_weights in (
                ("depth_weighted", difference_weights),
                ("depth_unweighted", None),
            ):
                if getattr(self, name):
                    parts[name], _ = self.depth(depth_pred, depth, mask, scale_known, pixel_weights)
                    total = total + getattr(self, name) * parts[name]
        return total, parts
