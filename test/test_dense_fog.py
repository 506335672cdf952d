"""The dense-fog blend (dehaze_ros.dense_fog): the network where haze is light, halfway to the
DCP where it is dense."""

import numpy as np
import pytest

from dehaze_ros import dense_fog
from dehaze_ros.backends.base import Backend, BackendOutput
from dehaze_ros.dcp import T_MIN, dehaze_dcp
from dehaze_ros.engine import DehazeEngine, EngineConfig
from dehaze_ros.haze import recover_scene, synthesize_haze


def hazy_scene(beta):
    """A textured scene 5-40 m deep under grey fog of scattering coefficient beta (1/m)."""
    rng = np.random.default_rng(0)
    clear = rng.uniform(0.05, 0.8, (48, 64, 3)).astype(np.float32)
    depth = np.tile(np.linspace(5.0, 40.0, 64, dtype=np.float32), (48, 1))
    return synthesize_haze(clear, depth, beta, 0.9)[0]


class FixedHaze(Backend):
    """A physics head that sees a fixed fog: t everywhere the same, A grey 0.93."""

    name = "fixed-haze"

    def __init__(self, transmission):
        self.transmission = transmission

    def run(self, rgb, want_dehazed, want_depth):
        t = np.full(rgb.shape[:2], self.transmission, np.float32)
        airlight = np.full(3, 0.93, np.float32)
        return BackendOutput(
            recover_scene(rgb, t, airlight, T_MIN),
            t,
            airlight,
            np.full(rgb.shape[:2], 10.0, np.float32) if want_depth else None,
        )

    def describe(self):
        return {"model": self.name, "backend": "test", "device": "cpu", "precision": "fp32"}


def test_the_weight_follows_the_median_optical_depth():
    assert dense_fog.dcp_weight(np.full((4, 4), 0.9, np.float32)) == 0.0
    assert (
        dense_fog.dcp_weight(np.full((4, 4), np.exp(-dense_fog.START_OPTICAL_DEPTH), np.float32))
        == 0.0
    )
    halfway = 0.5 * (dense_fog.START_OPTICAL_DEPTH + dense_fog.FULL_OPTICAL_DEPTH)
    assert dense_fog.dcp_weight(np.full((4, 4), np.exp(-halfway), np.float32)) == pytest.approx(
        dense_fog.MAX_WEIGHT / 2, abs=1e-6
    )
    assert (
        dense_fog.dcp_weight(np.zeros((4, 4), np.float32)) == dense_fog.MAX_WEIGHT
    )  # no division by zero
    # The median, not the mean: a third of the frame in airlight (sky) does not make light haze
    # dense.
    sky_and_street = np.full((3, 4), 0.8, np.float32)
    sky_and_street[0] = 0.01
    assert dense_fog.dcp_weight(sky_and_street) == 0.0


def test_light_haze_is_the_network_untouched():
    hazy = hazy_scene(0.01)
    t, airlight = np.full(hazy.shape[:2], 0.8, np.float32), np.full(3, 0.93, np.float32)
    dehazed = recover_scene(hazy, t, airlight)
    out = dense_fog.blend(hazy, t, airlight, dehazed)
    assert out[0] is dehazed and out[1] is t and out[2] is airlight and out[3] == 0.0


def test_dense_fog_is_halfway_to_the_dcp():
    hazy = hazy_scene(0.2)
    t, airlight = np.full(hazy.shape[:2], 0.15, np.float32), np.full(3, 0.93, np.float32)
    dehazed, mixed_t, mixed_a, weight = dense_fog.blend(
        hazy, t, airlight, recover_scene(hazy, t, airlight)
    )
    prior = dehaze_dcp(hazy)
    assert weight == dense_fog.MAX_WEIGHT == 0.5
    np.testing.assert_allclose(mixed_t, 0.5 * (t + prior.transmission), atol=1e-6)
    np.testing.assert_allclose(mixed_a, 0.5 * (airlight + prior.airlight), atol=1e-6)
    np.testing.assert_allclose(dehazed, recover_scene(hazy, mixed_t, mixed_a, T_MIN), atol=1e-6)


@pytest.mark.parametrize("max_side", [0, 32])
def test_the_engine_blends_only_in_dense_fog_and_keeps_the_models_t_for_visibility(max_side):
    rgb = (hazy_scene(0.2) * 255 + 0.5).astype(np.uint8)

    def run(transmission, mode):
        engine = DehazeEngine(
            EngineConfig(max_side=max_side, dense_fog=mode, depth_max_side=0, warmup=0),
            backend=FixedHaze(transmission),
        )
        return engine, engine.process(rgb, focal_px=50.0)

    _, light_on = run(0.8, "blend")
    _, light_off = run(0.8, "off")
    np.testing.assert_array_equal(light_on.dehazed, light_off.dehazed)
    assert light_on.dense_fog_weight == 0.0
    engine, dense_on = run(0.15, "blend")
    _, dense_off = run(0.15, "off")
    assert dense_on.dense_fog_weight == 0.5 and engine.describe()["dense_fog"] == "blend"
    assert np.abs(dense_on.dehazed.astype(int) - dense_off.dehazed).mean() > 1.0
    np.testing.assert_array_equal(dense_on.transmission, dense_off.transmission)  # the model's own
    dcp = DehazeEngine(EngineConfig(model="dcp", max_side=max_side, warmup=0))
    assert dcp.describe()["dense_fog"] == "off" and dcp.process(rgb).dense_fog_weight == 0.0
    with pytest.raises(ValueError, match="dense_fog"):
        EngineConfig(dense_fog="on").validate()
