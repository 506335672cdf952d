"""ASM forward/inverse and the procedural renderer."""

import numpy as np
import pytest

from dehaze_ros.haze import recover_scene, synthesize_haze, transmission_from_depth
from dehaze_ros.sim.scenes import (
    SceneRenderer,
    intrinsics,
    render,
    render_random_view,
    random_scene,
)


def test_asm_forward_inverse_round_trip():
    rng = np.random.default_rng(0)
    clear = rng.uniform(0, 1, (24, 32, 3)).astype(np.float32)
    depth = rng.uniform(0.5, 20, (24, 32)).astype(np.float32)
    airlight = np.array([0.85, 0.87, 0.9], dtype=np.float32)
    hazy, transmission = synthesize_haze(clear, depth, 0.05, airlight)
    np.testing.assert_allclose(transmission, np.exp(-0.05 * depth), rtol=1e-5)
    # Where transmission is above t_min the inverse is exact (up to float rounding).
    recovered = recover_scene(hazy, transmission, airlight, t_min=0.01)
    np.testing.assert_allclose(recovered, clear, atol=1e-4)


def test_asm_sky_and_unknown_depth_become_airlight():
    clear = np.zeros((2, 2, 3), dtype=np.float32)
    depth = np.array([[np.inf, np.nan], [1.0, 0.0]], dtype=np.float32)
    hazy, transmission = synthesize_haze(clear, depth, 0.5, 0.8)
    assert transmission[0, 0] == 0 and transmission[0, 1] == 0
    np.testing.assert_allclose(hazy[0, 0], 0.8)
    assert transmission[1, 1] == 1.0  # zero distance: no haze


def test_asm_spatially_varying_beta_and_errors():
    depth = np.full((4, 4), 10.0, dtype=np.float32)
    beta = np.linspace(0, 0.2, 16, dtype=np.float32).reshape(4, 4)
    t = transmission_from_depth(depth, beta)
    assert t[0, 0] == 1.0 and t[-1, -1] < t[0, 0]
    with pytest.raises(ValueError, match="beta must be a scalar or an H x W map"):
        transmission_from_depth(depth, np.ones((3, 3)))
    with pytest.raises(ValueError, match="airlight"):
        synthesize_haze(np.zeros((4, 4, 3)), depth, 0.1, [0.5, 0.5])
    with pytest.raises(ValueError, match="does not match"):
        synthesize_haze(np.zeros((4, 5, 3)), depth, 0.1, 0.5)


def test_renderer_is_deterministic_by_seed_and_time():
    first = SceneRenderer(64, 48, seed=3).render(1.5)
    again = SceneRenderer(64, 48, seed=3).render(1.5)
    other_seed = SceneRenderer(64, 48, seed=4).render(1.5)
    later = SceneRenderer(64, 48, seed=3).render(2.5)
    np.testing.assert_array_equal(first.rgb, again.rgb)
    np.testing.assert_array_equal(first.depth_m, again.depth_m)
    assert not np.array_equal(first.rgb, other_seed.rgb)
    assert not np.array_equal(first.depth_m, later.depth_m)
    a = render_random_view(np.random.default_rng(7), 40, 30)
    b = render_random_view(np.random.default_rng(7), 40, 30)
    np.testing.assert_array_equal(a.rgb, b.rgb)


def test_ground_plane_depth_is_exact_and_monotonic():
    """A level camera at height h over an empty ground: Z = fy * h / (v - cy) below the horizon."""
    scene = random_scene(np.random.default_rng(0), indoor=False)
    scene.planes = scene.planes[:1]  # ground only
    scene.box_lo = scene.box_hi = np.zeros((0, 3))
    scene.box_color = np.zeros((0, 3), dtype=np.float32)
    scene.sphere_center = np.zeros((0, 3))
    scene.sphere_radius = np.zeros(0)
    scene.sphere_color = np.zeros((0, 3), dtype=np.float32)
    width, height, camera_height = 64, 48, 1.5
    frame = render(scene, width, height, np.array([0.0, 0.0, camera_height]), yaw=0.3, pitch=0.0)
    K = frame.K
    rows = np.arange(height)
    below = rows > K[1, 2]
    expected = K[1, 1] * camera_height / (rows[below] - K[1, 2])
    column = frame.depth_m[:, width // 2]
    np.testing.assert_allclose(column[below], expected, rtol=1e-4)
    assert np.all(np.diff(column[below]) < 0), "depth must fall towards the image bottom"
    assert np.all(np.isinf(column[rows < K[1, 2]])), "above the horizon is sky"


def test_intrinsics_and_bad_size():
    K = intrinsics(640, 480, hfov_deg=90.0)
    assert K[0, 0] == pytest.approx(320.0) and K[0, 2] == pytest.approx(319.5)
    with pytest.raises(ValueError, match="positive"):
        SceneRenderer(0, 10)
