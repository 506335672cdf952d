"""Evaluation metrics, in float64, on numpy arrays.

Images: RGB in [0, 1] (uint8 is divided by 255), H x W x 3.
* PSNR = 10 log10(1 / MSE) over all pixels and channels (inf for identical images).
* SSIM: Wang et al. 2004, Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03, data range 1,
  'valid' filtering, computed per RGB channel and averaged (not on luma).
Depth: metres, H x W; ground truth counts where finite and inside [min_m, max_m], the
prediction where finite and > 0.
* abs_rel = mean |p - g| / g,  rmse = sqrt(mean (p - g)^2),  delta1 = share of max(p/g, g/p) < 1.25.
* The ``*_median`` variants first scale the prediction by median(g) / median(p): they measure
  relative depth, the only kind a relative-depth method (DCP) can be scored on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from training.losses import ssim as ssim_torch

DEPTH_METRICS = ("abs_rel", "rmse", "delta1")


def as_unit_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return image.astype(np.float64)


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    pred, target = as_unit_float(pred), as_unit_float(target)
    _check_pair(pred, target)
    mse = float(np.mean((np.clip(pred, 0, 1) - np.clip(target, 0, 1)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    pred, target = as_unit_float(pred), as_unit_float(target)
    _check_pair(pred, target)
    if pred.ndim == 2:
        pred, target = pred[..., None], target[..., None]

    def to_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.clip(image, 0, 1).transpose(2, 0, 1)))[None]

    with torch.no_grad():
        return float(ssim_torch(to_tensor(pred), to_tensor(target), data_range=1.0)[0])


def depth_metrics(
    pred_m: np.ndarray, target_m: np.ndarray, min_m: float = 1e-3, max_m: float = math.inf
) -> dict[str, float]:
    """Metric and median-scaled abs_rel, rmse, delta1, plus ``valid_fraction``; NaN without valid pixels."""
    pred = np.asarray(pred_m, dtype=np.float64)
    target = np.asarray(target_m, dtype=np.float64)
    _check_pair(pred, target)
    valid = (
        np.isfinite(target) & (target >= min_m) & (target <= max_m) & np.isfinite(pred) & (pred > 0)
    )
    results = {"valid_fraction": float(valid.mean()) if valid.size else 0.0}
    if not valid.any():
        for name in DEPTH_METRICS:
            results[name] = results[f"{name}_median"] = math.nan
        return results
    p, g = pred[valid], target[valid]
    scale = float(np.median(g) / np.median(p))
    for suffix, values in (("", p), ("_median", p * scale)):
        ratio = np.maximum(values / g, g / values)
        results[f"abs_rel{suffix}"] = float(np.mean(np.abs(values - g) / g))
        results[f"rmse{suffix}"] = float(np.sqrt(np.mean((values - g) ** 2)))
        results[f"delta1{suffix}"] = float(np.mean(ratio < 1.25))
    results["median_scale"] = scale
    return results
