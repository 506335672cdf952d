"""The atmospheric scattering model (ASM): how haze forms, and how to undo it.

    I(x) = J(x) t(x) + A (1 - t(x)),      t(x) = exp(-beta(x) d(x))

I hazy image, J clear scene radiance, A atmospheric light (airlight), t transmission, d depth in
metres, beta the scattering coefficient in 1/m. All images are float32 RGB in [0, 1], H x W x 3;
depth is float32 metres, H x W, with +inf for sky (t = 0 there: only airlight reaches the camera)
and NaN for unknown depth (treated like sky, the conservative choice for synthesis).
"""

from __future__ import annotations

import numpy as np

ArrayLike = np.ndarray | float


def transmission_from_depth(depth_m: np.ndarray, beta: ArrayLike) -> np.ndarray:
    """t = exp(-beta * d). ``beta`` is a scalar or an H x W map (non-homogeneous haze)."""
    depth = np.asarray(depth_m, dtype=np.float32)
    beta_arr = np.asarray(beta, dtype=np.float32)
    if np.any(beta_arr < 0):
        raise ValueError(f"beta must be >= 0 (1/m), got min {float(beta_arr.min())}")
    if beta_arr.ndim not in (0, 2) or (beta_arr.ndim == 2 and beta_arr.shape != depth.shape):
        raise ValueError(
            f"beta must be a scalar or an H x W map matching depth {depth.shape}, got "
            f"{beta_arr.shape}"
        )
    # Unknown depth is treated as far away: the scene is hidden behind airlight there.
    safe_depth = np.where(np.isfinite(depth), np.maximum(depth, 0.0), np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        optical_depth = beta_arr * safe_depth
    # beta = 0 with depth = inf gives nan (0 * inf): clear air, so full transmission.
    optical_depth = np.nan_to_num(optical_depth, nan=0.0, posinf=np.inf)
    return np.exp(-optical_depth).astype(np.float32)


def _airlight_array(airlight: ArrayLike) -> np.ndarray:
    air = np.asarray(airlight, dtype=np.float32)
    if air.ndim == 0:
        air = np.full(3, float(air), dtype=np.float32)
    if air.shape != (3,):
        raise ValueError(f"airlight must be a scalar or 3 RGB values, got shape {air.shape}")
    if np.any(air < 0) or np.any(air > 1):
        raise ValueError(f"airlight must lie in [0, 1], got {air.tolist()}")
    return air


def _check_image(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be H x W x 3 RGB, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32, copy=False)


def synthesize_haze(
    clear: np.ndarray, depth_m: np.ndarray, beta: ArrayLike, airlight: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Forward ASM: clear RGB (float [0,1] or uint8) + metric depth -> (hazy, transmission).

    Returns float32 images: hazy H x W x 3 in [0, 1] and transmission H x W in [0, 1].
    """
    clear_f = _check_image("clear", clear)
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.shape != clear_f.shape[:2]:
        raise ValueError(f"depth {depth.shape} does not match image {clear_f.shape[:2]}")
    transmission = transmission_from_depth(depth, beta)
    air = _airlight_array(airlight)
    t3 = transmission[..., None]
    hazy = clear_f * t3 + air * (1.0 - t3)
    return np.clip(hazy, 0.0, 1.0).astype(np.float32), transmission


def recover_scene(
    hazy: np.ndarray, transmission: np.ndarray, airlight: ArrayLike, t_min: float = 0.1
) -> np.ndarray:
    """Inverse ASM: J = (I - A) / max(t, t_min) + A, clipped to [0, 1].

    ``t_min`` keeps noise from exploding where almost nothing of the scene reaches the camera.
    """
    hazy_f = _check_image("hazy", hazy)
    t = np.asarray(transmission, dtype=np.float32)
    if t.shape != hazy_f.shape[:2]:
        raise ValueError(f"transmission {t.shape} does not match image {hazy_f.shape[:2]}")
    if not 0.0 < t_min <= 1.0:
        raise ValueError(f"t_min must lie in (0, 1], got {t_min}")
    air = _airlight_array(airlight)
    t3 = np.maximum(t, t_min)[..., None]
    # In place on one new array: the same float32 arithmetic as (I - A) / t + A without three
    # temporaries of the full image (the node does this per frame at camera resolution).
    clear = np.subtract(hazy_f, air, dtype=np.float32)
    np.divide(clear, t3, out=clear)
    clear += air
    return np.clip(clear, 0.0, 1.0, out=clear)
