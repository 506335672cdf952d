"""Dark Channel Prior: it must actually remove synthetic haze."""
import numpy as np
import pytest

from dehaze_ros.dcp import dehaze_dcp
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
