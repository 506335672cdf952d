"""Validation during training: the EMA networks on whole held-out images, and which result is best.

    metrics = validation_metrics(dehazer, depth_net, samples, model_config, depth_config,
                                 depth_available, device, amp_dtype)
    if is_better(metrics, best, "psnr"): ...

Whole images, one at a time, at ``data.val_max_side``: the metrics of a deployed frame, not of a
training crop. Means over all images, and per source (``psnr/<source>``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dehaze_ros.camera import metric_from_canonical
from dehaze_ros.models import ModelConfig
from training.config import DepthConfig
from training.data import Sample
from training.metrics import depth_metrics, psnr, ssim
from training.run_setup import autocast

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "abs_rel": False}
DEPTH_KEYS = ("abs_rel", "rmse", "delta1", "abs_rel_median")


@torch.no_grad()
def validation_metrics(
    dehazer: nn.Module,
    depth_net: nn.Module,
    samples: list[Sample],
    model_config: ModelConfig,
    depth_config: DepthConfig,
    depth_available: bool,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> dict[str, float]:
    """Mean metrics of the networks (in eval mode) over ``samples``, overall and per source."""
    dehazer, depth_net = dehazer.eval(), depth_net.eval()
    per_source: dict[str, list[dict]] = {}
    for sample in samples:
        hazy = torch.from_numpy(sample.hazy.transpose(2, 0, 1).copy())[None].to(device)
        with autocast(device, amp_dtype):
            physics = dehazer.forward_physics(hazy)
            dehazed = physics.dehazed.float().clamp(0.0, 1.0)
            depth_pred = depth_net(dehazed, physics.transmission).float()
        dehazed_np = dehazed[0].permute(1, 2, 0).cpu().numpy()
        result = {"psnr": psnr(dehazed_np, sample.clear), "ssim": ssim(dehazed_np, sample.clear)}
        if depth_available:
            result.update(
                sample_depth_metrics(
                    depth_pred[0, 0].cpu().numpy(), sample, model_config, depth_config
                )
            )
        per_source.setdefault(sample.name.split("/")[0], []).append(result)
    return summarise(per_source)


def sample_depth_metrics(
    predicted: np.ndarray, sample: Sample, model_config: ModelConfig, depth_config: DepthConfig
) -> dict[str, float]:
    """Depth metrics in metres where the sample's depth and the prediction's scale are known."""
    canonical_focal = model_config.canonical_focal_px
    # Canonical depth becomes metres only with the image's focal length.
    metric_known = sample.metric_depth and (not canonical_focal or sample.focal_px > 0)
    if not (sample.has_depth and metric_known):
        return {}
    if canonical_focal:
        predicted = metric_from_canonical(predicted, sample.focal_px, canonical_focal)
    metrics = depth_metrics(predicted, sample.depth_m, depth_config.min_m, depth_config.max_m)
    if metrics["valid_fraction"] <= 0:
        return {}
    return {key: metrics[key] for key in DEPTH_KEYS}


def summarise(per_source: dict[str, list[dict]]) -> dict[str, float]:
    summary: dict[str, float] = {}
    everything = [result for results in per_source.values() for result in results]
    for key in ("psnr", "ssim", *DEPTH_KEYS):
        values = [r[key] for r in everything if key in r and math.isfinite(r[key])]
        if values:
            summary[key] = float(np.mean(values))
        for source, results in per_source.items():
            values = [r[key] for r in results if key in r and math.isfinite(r[key])]
            if values:
                summary[f"{key}/{source}"] = float(np.mean(values))
    return summary


def is_better(metrics: dict[str, float], best: dict, select_metric: str) -> bool:
    """Whether ``metrics`` beat ``best`` ({metric, value, ...}; empty before the first)."""
    name = select_metric
    if name not in metrics:
        # e.g. abs_rel without validation depth: fall back to PSNR rather than never choosing.
        name = "psnr"
    value = metrics.get(name)
    if value is None:
        return not best
    if not best or best.get("metric") != name:
        return True
    previous = best["value"]
    return value > previous if HIGHER_IS_BETTER[name] else value < previous
