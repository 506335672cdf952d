"""Metrics against values worked out by hand, and the properties the losses rely on."""

import math

import numpy as np
import pytest
import torch

from dehaze_ros.camera import canonical_from_metric, focal_from_hfov, metric_from_canonical
from training import losses
from training.metrics import depth_metrics, psnr, ssim


def test_psnr_of_a_known_error():
    target = np.full((8, 8, 3), 0.5)
    assert psnr(target + 0.1, target) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(target, target) == math.inf
    assert psnr(np.full((4, 4, 3), 255, np.uint8), np.zeros((4, 4, 3), np.uint8)) == pytest.approx(
        0.0
    )


def test_ssim_of_identical_shifted_and_unrelated_images():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (32, 32, 3))
    assert ssim(image, image) == pytest.approx(1.0)
    # Constant images differing by a shift: only the luminance term remains,
    # (2 * 0.5 * 0.6 + C1) / (0.5^2 + 0.6^2 + C1) with C1 = 0.01^2.
    c1 = 1e-4
    assert ssim(np.full((16, 16, 3), 0.6), np.full((16, 16, 3), 0.5)) == pytest.approx(
        (0.6 + c1) / (0.61 + c1), rel=1e-9
    )
    assert ssim(image, rng.uniform(0, 1, (32, 32, 3))) < 0.1


def test_depth_metrics_known_values_and_median_scaling():
    target = np.array([[1.0, 2.0], [4.0, np.nan]])
    pred = np.array([[2.0, 4.0], [8.0, 1.0]])  # twice too far everywhere
    metrics = depth_metrics(pred, target)
    assert metrics["valid_fraction"] == pytest.approx(0.75)
    assert metrics["abs_rel"] == pytest.approx(1.0)
    assert metrics["rmse"] == pytest.approx(math.sqrt((1 + 4 + 16) / 3))
    assert metrics["delta1"] == 0.0
    assert metrics["abs_rel_median"] == pytest.approx(0.0, abs=1e-12)  # right up to scale
    assert metrics["delta1_median"] == 1.0 and metrics["median_scale"] == pytest.approx(0.5)
    no_valid = depth_metrics(pred, np.full((2, 2), np.nan))
    assert math.isnan(no_valid["abs_rel"]) and no_valid["valid_fraction"] == 0.0
    clipped = depth_metrics(pred, target, max_m=3.0)  # 4 m is out of range
    assert clipped["valid_fraction"] == pytest.approx(0.5)


def test_torch_ssim_loss_matches_the_metric():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, (24, 20, 3)), rng.uniform(0, 1, (24, 20, 3))
    ta = torch.from_numpy(a.transpose(2, 0, 1))[None]
    tb = torch.from_numpy(b.transpose(2, 0, 1))[None]
    assert float(losses.ssim(ta, tb)[0]) == pytest.approx(ssim(a, b), rel=1e-9)


def test_dehazing_difference_weights_are_normalised_and_peak_at_the_largest_error():
    clear = torch.zeros(2, 3, 8, 8)
    dehazed = torch.zeros(2, 3, 8, 8)
    dehazed[0, :, 2, 5] = 0.6  # the worst pixel of image 0
    dehazed[0, 0, 6, 1] = 0.3
    dehazed[1, 1, 4, 4] = 0.2
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    mask[1, :, 0, :] = False
    weights = losses.dehazing_difference_weights(dehazed, clear, mask, temperature=0.1)
    assert weights.shape == (2, 1, 8, 8)
    torch.testing.assert_close(weights.flatten(1).sum(1), torch.ones(2))
    assert weights[0, 0].argmax() == 2 * 8 + 5
    assert weights[0, 0, 2, 5] > weights[0, 0, 6, 1] > weights[0, 0, 0, 0]
    assert weights[1, 0, 4, 4] == weights[1].max() and (weights[1, 0, 0] == 0).all()
    # The literal paper setting (T = 1): still a distribution with the same order, only flatter.
    flat = losses.dehazing_difference_weights(dehazed, clear, mask, temperature=1.0)
    torch.testing.assert_close(flat.flatten(1).sum(1), torch.ones(2))
    assert flat[0, 0].argmax() == 2 * 8 + 5 and flat[0, 0, 2, 5] < weights[0, 0, 2, 5]


def test_haze_supervision_scores_known_t_and_a_and_skips_sky_and_unknown_haze():
    pred_t = torch.full((3, 1, 2, 2), 0.5, requires_grad=True)
    pred_a = torch.full((3, 3, 1, 1), 0.8, requires_grad=True)
    true_t = (
        torch.tensor([[0.5, 0.7], [0.0, 0.02]]).expand(3, 1, 2, 2).clone()
    )  # 0.0, 0.02: sky, dense
    true_t[2] = float("nan")  # a photograph's haze
    true_a = torch.tensor([[0.9, 0.9, 0.9], [0.8, 0.8, 0.8], [math.nan] * 3])
    t_loss, od_loss, a_loss = losses.haze_supervision_loss(
        pred_t, pred_a, true_t, true_a, t_min=0.05
    )
    # Per image: |0.5 - 0.5| and |0.5 - 0.7| over the two pixels at or above t_min; the third image
    # has no known t and A and is left out of both means.
    assert float(t_loss.detach()) == pytest.approx(0.1)
    assert float(od_loss.detach()) == pytest.approx(math.log(0.7 / 0.5) / 2)
    assert float(a_loss.detach()) == pytest.approx(0.05)
    (t_loss + od_loss + a_loss).backward()
    assert torch.isfinite(pred_t.grad).all() and torch.isfinite(pred_a.grad).all()
    assert (
        float(pred_t.grad[:, :, 1].abs().sum()) == 0.0 and float(pred_t.grad[2].abs().sum()) == 0.0
    )
    none_t, none_od, none_a = losses.haze_supervision_loss(
        pred_t[2:], pred_a[2:], true_t[2:], true_a[2:], 0.05
    )
    assert (
        float(none_t.detach()) == 0.0
        and float(none_od.detach()) == 0.0
        and float(none_a.detach()) == 0.0
    )


def test_optical_depth_weighs_an_error_in_dense_haze_more_than_the_same_error_in_light_haze():
    true_t = torch.tensor([0.15, 0.8]).view(2, 1, 1, 1).expand(2, 1, 3, 3).clone()
    airlight = torch.full((2, 3), 0.9)
    per_image = []
    for index in range(2):  # the same t error, +0.05, in dense haze and in light haze
        t_loss, od_loss, _ = losses.haze_supervision_loss(
            true_t[index : index + 1] + 0.05,
            airlight[:1],
            true_t[index : index + 1],
            airlight[:1],
            t_min=0.1,
        )
        per_image.append((float(t_loss), float(od_loss)))
    (dense_t, dense_od), (light_t, light_od) = per_image
    assert dense_t == pytest.approx(light_t) == pytest.approx(0.05)
    assert dense_od == pytest.approx(math.log(0.2 / 0.15)) and light_od == pytest.approx(
        math.log(0.85 / 0.8)
    )
    assert dense_od > 4 * light_od
    # A prediction below t_min counts as t_min, as the inverse model clamps it: no infinite log.
    _, clamped, _ = losses.haze_supervision_loss(
        torch.zeros(1, 1, 3, 3), airlight[:1], true_t[:1], airlight[:1], 0.1
    )
    assert float(clamped) == pytest.approx(math.log(0.15 / 0.1))


def test_depth_loss_ignores_invalid_targets_without_nan_gradients():
    pred = torch.full((2, 1, 4, 4), 3.0, requires_grad=True)
    target = torch.full((2, 1, 4, 4), 3.0)
    target[0, 0, 0, 0] = float("nan")
    target[0, 0, 0, 1] = float("inf")
    target[0, 0, 0, 2] = 0.0
    target[1] = float("nan")  # an image without any depth
    mask = losses.valid_depth_mask(target, 0.1, 80.0)
    assert int(mask.sum()) == 13
    loss, parts = losses.depth_loss(pred, target, mask, 1.0, 1.0, 0.85)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert float(parts["depth_l1"].detach()) == 0 and float(parts["depth_silog"].detach()) < 1e-3
    empty, parts = losses.depth_loss(pred, target, torch.zeros_like(mask), 1.0, 1.0, 0.85)
    assert float(empty.detach()) == 0.0 and parts == {}


def test_silog_keeps_part_of_a_global_scale_error():
    target = torch.rand(1, 1, 6, 6) * 5 + 1
    mask = torch.ones_like(target, dtype=torch.bool)
    exact, _ = losses.depth_loss(target.clone(), target, mask, 0.0, 1.0, 0.85)
    scaled, _ = losses.depth_loss(target * 2, target, mask, 0.0, 1.0, 0.85)
    invariant, _ = losses.depth_loss(target * 2, target, mask, 0.0, 1.0, 1.0)
    assert float(exact) < 1e-3 and float(invariant) < 1e-3
    assert float(scaled) == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-4)


def test_depth_perception_loss_weights_the_wrong_regions_and_reaches_the_prediction():
    target = torch.full((1, 1, 4, 4), 2.0)
    depth_of_dehazed = torch.full((1, 1, 4, 4), 2.0, requires_grad=True)
    with torch.no_grad():
        depth_of_dehazed[0, 0, 1, 1] = 4.0  # one region geometrically wrong
    mask = torch.ones_like(target, dtype=torch.bool)
    loss, weights = losses.depth_perception_loss(depth_of_dehazed, target, mask, temperature=0.1)
    loss.backward()
    assert weights[0, 0].argmax() == 5 and float(weights.sum()) == pytest.approx(1.0)
    assert float(loss.detach()) > math.log(2) / 16  # more than the plain mean of the difference
    assert depth_of_dehazed.grad[0, 0, 1, 1] > 0 and depth_of_dehazed.grad.abs().sum() > 0


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    values = [losses.cosine_with_warmup(step, 100, 10, 0.01) for step in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert max(values) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[100] == pytest.approx(0.01)


def test_depth_of_unknown_scale_trains_only_its_relative_shape():
    """scale_known False: a prediction 3x too far costs (almost) nothing; known scale: it costs."""
    target = torch.rand(2, 1, 8, 8) * 5 + 1
    mask = torch.ones_like(target, dtype=torch.bool)
    pred = target * 3.0
    unknown, parts = losses.depth_loss(
        pred, target, mask, 1.0, 1.0, 0.5, scale_known=torch.tensor([False, False])
    )
    known, _ = losses.depth_loss(
        pred, target, mask, 1.0, 1.0, 0.5, scale_known=torch.tensor([True, True])
    )
    assert float(unknown) < 1e-3 and "depth_l1" not in parts
    assert float(known) > 1.0
    shape_error, _ = losses.depth_loss(
        target.flip(-1), target, mask, 0.0, 1.0, 0.5, scale_known=torch.tensor([False, False])
    )
    assert float(shape_error) > 0.1  # a wrong relative layout still costs


def test_sky_must_be_predicted_beyond_the_far_end():
    target = torch.full((2, 1, 4, 4), 5.0)
    target[:, :, :2] = float("inf")  # sky in the top half
    far = torch.tensor([80.0, 160.0])
    near_sky = torch.full_like(target, 6.0, requires_grad=True)
    loss = losses.sky_depth_loss(near_sky, target, far)
    assert float(loss) > 1.0
    loss.backward()
    assert (near_sky.grad[:, :, :2] < 0).all() and (
        near_sky.grad[:, :, 2:] == 0
    ).all()  # pushed farther
    # An image of unknown scale (far NaN) takes no part, also when the prediction is NaN elsewhere.
    partly_unknown = losses.sky_depth_loss(
        near_sky.detach(), target, torch.tensor([80.0, float("nan")])
    )
    assert float(partly_unknown) == pytest.approx(
        float(losses.sky_depth_loss(near_sky.detach()[:1], target[:1], far[:1]))
    )
    with_nan = near_sky.detach().clone()
    with_nan[:, :, 3] = float("nan")  # not sky
    assert torch.isfinite(losses.sky_depth_loss(with_nan, target, far))
    far_enough = torch.full_like(target, 1000.0)
    assert float(losses.sky_depth_loss(far_enough, target, far)) == 0.0
    assert float(losses.sky_depth_loss(near_sky, torch.full_like(target, 5.0), far)) == 0.0


@pytest.mark.parametrize("zoom", [0.25, 0.5, 1.0, 2.0])
def test_canonical_camera_round_trip_for_any_crop_zoom(zoom):
    """A depth target converted for a crop's focal length and back is the original metres, and a
    pinhole scene (size in pixels ~ f / d) has one canonical depth at every zoom."""
    depth_m = np.array([0.5, 3.0, 40.0, np.inf], dtype=np.float32)
    focal = 700.0 * zoom
    canonical = canonical_from_metric(depth_m, focal, 250.0)
    np.testing.assert_allclose(metric_from_canonical(canonical, focal, 250.0), depth_m, rtol=1e-6)
    # Same pixels, same target: a 1 m object 100 px tall is at 7 m for f = 700 and at 3.5 m for
    # f = 350; both images must teach the network one canonical depth.
    assert canonical_from_metric(700.0 * zoom / 100.0, 700.0 * zoom, 250.0) == pytest.approx(2.5)
    assert focal_from_hfov(640, 90.0) == pytest.approx(320.0)
