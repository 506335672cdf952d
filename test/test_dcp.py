"""Dark Channel Prior: it must actually remove synthetic haze."""

import numpy as np
import pytest

import torch

from dehaze_ros.dcp import dark_channel, dehaze_dcp, estimate_airlight
from dehaze_ros.models import dcp_prior
from dehaze_ros.haze import synthesize_haze
from dehaze_ros.sim.scenes import SceneRenderer


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


@pytest.mark.parametrize("seed,indoor", [(1, False), (2, True)])
def test_dcp_raises_psnr_on_rendered_hazy_scene(seed, indoor):
    frame = SceneRenderer(160, 120, seed=seed, indoor=indoor).render(2.0)
    clear = frame.rgb.astype(np.float32) / 255.0
    beta = 0.08 if not indoor else 0.25
    hazy, _ = synthesize_haze(clear, frame.depth_m, beta, [0.9, 0.9, 0.92])
    result = dehaze_dcp(hazy)
    assert psnr(result.dehazed, clear) > psnr(hazy, clear) + 2.0
    assert result.dehazed.shape == hazy.shape and result.dehazed.dtype == np.float32
    assert np.all((result.transmission >= 0.1) & (result.transmission <= 1.0))
    np.testing.assert_allclose(result.relative_depth, -np.log(result.transmission), rtol=1e-5)


def test_dcp_relative_depth_orders_near_and_far():
    """-ln t grows with distance: the far half of a two-depth scene must read deeper."""
    rng = np.random.default_rng(0)
    clear = rng.uniform(0, 1, (60, 80, 3)).astype(np.float32)
    depth = np.where(np.arange(80) < 40, 2.0, 20.0)[None, :].repeat(60, 0).astype(np.float32)
    hazy, _ = synthesize_haze(clear, depth, 0.1, 0.9)
    result = dehaze_dcp(hazy)
    assert result.relative_depth[:, 50:].mean() > result.relative_depth[:, :30].mean() + 0.5


def test_dcp_rejects_non_rgb():
    with pytest.raises(ValueError, match="H x W x 3"):
        dehaze_dcp(np.zeros((10, 10), dtype=np.float32))


def test_airlight_breaks_ties_of_the_dark_channel_in_row_major_order_as_the_network_prior_does():
    """A plateau of the dark channel (every pixel ties): the candidates are the first 0.1 % of the
    pixels in row-major order, whatever numpy's argpartition would pick, and the torch prior of
    the networks picks the same pixels."""
    image = np.full((100, 100, 3), 0.5, np.float32)
    image[20:, :, 1:] = 0.9  # brighter pixels of the same dark channel, later
    image[0, :10, 1] = 0.5 + 0.01 * np.arange(10)  # the 10 candidates (0.1 % of 10000)
    dark = dark_channel(image, 15)
    assert np.ptp(dark) == 0.0
    # Candidate brightness 1.5 + 0.01 i; the 0.9 quantile is 1.581, so only i = 9 is above it.
    np.testing.assert_allclose(estimate_airlight(image, dark), [0.5, 0.59, 0.5], atol=1e-6)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    prior = dcp_prior.estimate_airlight(tensor, torch.from_numpy(dark)[None, None])
    np.testing.assert_allclose(prior.reshape(3).numpy(), [0.5, 0.59, 0.5], atol=1e-6)
