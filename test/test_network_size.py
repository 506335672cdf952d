"""The size the networks run at (EngineConfig.max_side, size_rule): wide, tall, tiny and odd
frames."""

import numpy as np
import pytest

from dehaze_ros.engine import (
    MIN_NETWORK_SIDE,
    SIZE_MULTIPLE,
    DehazeEngine,
    EngineConfig,
    network_size,
    pixel_budget_size,
    scaled_size,
)
from ros_helpers import write_tiny_checkpoint

BUDGET = 320 * 240


def test_a_4_3_frame_gets_the_same_size_under_both_rules():
    assert (
        network_size(480, 640, 320, "pixels") == network_size(480, 640, 320, "side") == (240, 320)
    )
    assert network_size(640, 480, 320, "pixels") == (320, 240)


@pytest.mark.parametrize(
    "height, width", [(375, 1242), (1242, 375), (1080, 1920), (309, 550), (100, 4000)]
)
def test_a_frame_wider_than_4_3_gets_the_budget_with_the_aspect_kept(height, width):
    small_h, small_w = network_size(height, width, 320, "pixels")
    longer, shorter = max(small_h, small_w), min(small_h, small_w)
    assert small_h * small_w <= BUDGET
    # Rounding to whole pixels moves the aspect by at most one pixel on the shorter side.
    assert abs(small_w / small_h - width / height) <= (width / height) / shorter
    assert shorter >= MIN_NETWORK_SIDE
    # The longer side on the networks' padding multiple; the next multiple would pass the budget.
    assert longer % SIZE_MULTIPLE == 0
    assert (longer + SIZE_MULTIPLE) * (longer + SIZE_MULTIPLE) * shorter / longer > BUDGET
    assert (
        small_h * small_w > scaled_size(height, width, 320)[0] * scaled_size(height, width, 320)[1]
    )


@pytest.mark.parametrize(
    "height, width", [(460, 620), (754, 1024), (412, 548), (563, 550), (2942, 2426)]
)
def test_frames_near_or_squarer_than_4_3_keep_the_side_rules_size(height, width):
    """SOTS (620x460), O-HAZE, RESIDE outdoor's 4:3, square and portrait photos run as before."""
    assert network_size(height, width, 320, "pixels") == scaled_size(height, width, 320)


def test_a_wide_camera_keeps_its_height():
    assert network_size(375, 1242, 320, "pixels") == (150, 496)
    assert network_size(375, 1242, 320, "side") == scaled_size(375, 1242, 320) == (97, 320)
    assert network_size(1242, 375, 320, "pixels") == (496, 150)  # the same camera on its side


def test_tiny_and_extreme_frames():
    assert network_size(20, 20, 320, "pixels") == (20, 20)  # never enlarged
    assert network_size(10, 4000, 320, "pixels") == (10, 4000)  # under the budget: untouched
    # Over the budget but already thinner than the networks' minimum: not made thinner still.
    assert network_size(20, 8000, 320, "pixels") == (20, 8000)
    # A sliver would be 6 px high at the budget: the shorter side stops at the minimum instead.
    small_h, small_w = pixel_budget_size(200, 4000, 32 * 24)
    assert small_h == MIN_NETWORK_SIDE and small_w == 640
    assert network_size(480, 640, 0, "pixels") == (480, 640)  # max_side 0: native
    with pytest.raises(ValueError, match="size_rule"):
        network_size(480, 640, 320, "area")
    with pytest.raises(ValueError, match="size_rule"):
        EngineConfig(size_rule="area").validate()


def test_the_engine_runs_the_networks_at_the_rules_size_and_returns_the_input_size(tmp_path):
    """A 1242x375-like frame through the real (tiny, random) networks at max_side 32: the pixel rule
    gives 32 x 106 (a 32 x 24 budget would make it 13 px high), the side rule 10 x 32."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    rgb = np.random.default_rng(0).integers(0, 256, (64, 212, 3), dtype=np.uint8)
    for rule, expected in (("pixels", (32, 106)), ("side", (10, 32))):
        engine = DehazeEngine(
            EngineConfig(
                checkpoint=str(checkpoint),
                max_side=32,
                size_rule=rule,
                depth_max_side=0,
                precision="fp32",
                warmup=0,
            )
        )
        result = engine.process(rgb, focal_px=200.0)
        assert result.transmission.shape == expected, rule
        assert result.dehazed.shape == rgb.shape and result.depth.shape == rgb.shape[:2]
        assert engine.describe()["size_rule"] == rule
        engine.close()
    dcp = DehazeEngine(
        EngineConfig(model="dcp", max_side=32, size_rule="pixels", warmup=0)
    ).process(rgb)
    # DCP's relative depth follows the dehazing size in the same pass under either rule.
    assert dcp.transmission.shape == (32, 106)
    assert not any(stage.startswith("depth_pass_") for stage in dcp.timings_ms)


def test_a_parameter_file_without_size_rule_keeps_the_longer_side_rule():
    """Every parameter file written before size_rule existed runs the networks at the sizes it
    always did: the default is the side rule (docs/dense_fog.md, "The size rule")."""
    from dehaze_ros.ros.node_config import SPECS

    assert EngineConfig().size_rule == SPECS["size_rule"].default == "side"
    assert network_size(375, 1242, 320, EngineConfig().size_rule) == (97, 320)
