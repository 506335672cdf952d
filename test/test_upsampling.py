"""Full-resolution recovery: guided (fast guided filter) against the exact answer and bilinear."""

import cv2
import numpy as np
import pytest

from dehaze_ros.haze import recover_scene
from dehaze_ros.upsampling import (
    recover_from_dehazed,
    recover_from_transmission,
    recover_full_resolution,
    upsample_depth,
    upsample_transmission,
)


def textured(height, width, seed=0, cell=8):
    """A smooth random scene with texture of about ``cell`` pixels, RGB float32 [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // cell + 1, width // cell + 1, 3), dtype=np.float32)
    return np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def downscale(image, height, width):
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("mode", ["guided", "bilinear"])
def test_constant_transmission_upsampled_is_the_exact_full_resolution_inversion(mode):
    hazy = textured(200, 300)
    small = downscale(hazy, 64, 96)
    t_small = np.full((64, 96), 0.4, np.float32)
    airlight = np.array([0.8, 0.82, 0.85], np.float32)
    recovered = recover_from_transmission(hazy, small, t_small, airlight, mode)
    exact = recover_scene(hazy, np.full((200, 300), 0.4, np.float32), airlight)
    np.testing.assert_allclose(recovered, exact, atol=1e-5)


def test_affine_relation_is_reproduced_exactly_at_full_resolution():
    """J = a I + b per channel with constant a, b (the scattering model at constant t) comes back
    at full resolution with the full-resolution detail, which the additive path loses."""
    hazy = textured(200, 300, seed=1, cell=4) * 0.5 + 0.25
    small = downscale(hazy, 64, 96)
    gain, offset = np.array([1.6, 1.5, 1.4], np.float32), np.array([-0.2, -0.15, -0.1], np.float32)
    dehazed_small = small * gain + offset
    exact = np.clip(hazy * gain + offset, 0, 1)
    guided = recover_from_dehazed(hazy, small, dehazed_small, "guided")
    additive = recover_from_dehazed(hazy, small, dehazed_small, "bilinear")
    # Within half a grey level: eps shrinks a by var / (var + eps) in the flattest windows.
    assert np.abs(guided - exact).max() < 0.5 / 255
    assert np.abs(additive - exact).max() > 5 * np.abs(guided - exact).max()


def step_scene():
    """A vertical edge at x = 101 (not on the 1/3 grid of the small image): dark near object
    with thick haze behind a bright far background; t and image change at the same column."""
    height, width, edge = 120, 300, 101
    hazy = np.empty((height, width, 3), np.float32)
    hazy[:, :edge], hazy[:, edge:] = 0.2, 0.8
    hazy += textured(height, width, seed=3) * 0.02
    t_true = np.where(np.arange(width) < edge, 0.9, 0.3).astype(np.float32)[None].repeat(height, 0)
    return hazy, t_true, edge


def test_guided_transmission_follows_the_guide_edge_better_than_bilinear():
    hazy, t_true, edge = step_scene()
    small = downscale(hazy, 40, 100)
    t_small = downscale(t_true, 40, 100)
    band = slice(edge - 6, edge + 6)  # where upsampling decides anything
    errors = {
        mode: np.abs(upsample_transmission(t_small, small, hazy, mode) - t_true)[:, band].mean()
        for mode in ("guided", "bilinear")
    }
    assert errors["guided"] < 0.5 * errors["bilinear"], errors


def test_depth_is_never_blended_across_a_depth_step():
    depth = np.where(np.arange(50) < 17, 2.0, 40.0).astype(np.float32)[None].repeat(30, 0)
    full = upsample_depth(depth, 91, 151)
    assert full.shape == (91, 151)
    assert set(np.unique(full)) == {2.0, 40.0}
    same = upsample_depth(depth, 30, 50)
    assert same is not depth and np.array_equal(same, depth)


def test_unknown_mode_is_refused():
    hazy = textured(20, 30)
    with pytest.raises(ValueError, match="upsampling must be one of"):
        upsample_transmission(
            np.ones((10, 15), np.float32), downscale(hazy, 10, 15), hazy, "bicubic"
        )


def test_recovery_dispatch_uses_what_the_model_gave():
    hazy = textured(90, 120, seed=4)
    small = downscale(hazy, 30, 40)
    t_small, airlight = np.full((30, 40), 0.5, np.float32), np.full(3, 0.9, np.float32)
    dehazed_small = np.clip(recover_scene(small, t_small, airlight), 0, 1)
    exact = recover_scene(hazy, np.full((90, 120), 0.5, np.float32), airlight)
    for mode in ("guided", "affine", "bilinear"):
        from_t = recover_full_resolution(hazy, small, None, t_small, airlight, mode)
        np.testing.assert_allclose(from_t, exact, atol=1e-5)  # t and A only: always the inversion
    # With J, t and A: guided inverts with t, affine fits J (a J that is not the inversion shows which).
    shifted = np.clip(dehazed_small + 0.05, 0, 1)
    np.testing.assert_array_equal(
        recover_full_resolution(hazy, small, shifted, t_small, airlight, "guided"),
        recover_from_transmission(hazy, small, t_small, airlight, "guided"),
    )
    np.testing.assert_array_equal(
        recover_full_resolution(hazy, small, shifted, t_small, airlight, "affine"),
        recover_from_dehazed(hazy, small, shifted, "affine"),
    )
    # At the native size J is returned as it is.
    np.testing.assert_array_equal(
        recover_full_resolution(small, small, dehazed_small, t_small, airlight), dehazed_small
    )
    with pytest.raises(ValueError, match="neither a dehazed image nor a transmission"):
        recover_full_resolution(hazy, small, None, None, None)
