"""The networks' memory-layout work (models.blocks.cat_channels) changes where bytes go, not values."""

from __future__ import annotations

import pytest
import torch

from dehaze_ros.checkpoint import build_models, load_checkpoint
from dehaze_ros.engine import DEFAULT_CHECKPOINT
from dehaze_ros.models import blocks, dehazer as dehazer_module, depth_net as depth_net_module, unet
from dehaze_ros.models.blocks import cat_channels

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def test_cat_channels_is_cat_and_channels_last():
    torch.manual_seed(0)
    nchw = torch.randn(1, 5, 7, 9)
    nhwc = torch.randn(1, 4, 7, 9).contiguous(memory_format=torch.channels_last)
    one_channel = torch.randn(1, 1, 7, 9)  # NCHW and NHWC at once: what made torch.cat pick NCHW
    joined = cat_channels([nhwc, nchw, one_channel])
    assert torch.equal(joined, torch.cat([nhwc, nchw, one_channel], dim=1))
    assert joined.is_contiguous(memory_format=torch.channels_last)


def test_shipped_networks_match_plain_cat(monkeypatch):
    """The shipped checkpoint's D and E on a fixed frame, against the same networks with torch.cat
    everywhere (the code before cat_channels). The cat itself is a copy; the convolutions may pick
    other kernels for the other input layout, hence a float32 rounding tolerance, not equality."""
    dehazer, depth_net = build_models(load_checkpoint(DEFAULT_CHECKPOINT))
    torch.manual_seed(0)
    hazy = torch.rand(1, 3, 120, 160)

    def run():
        with torch.inference_mode():
            out = dehazer.forward_physics(hazy)
            return (
                out.dehazed,
                out.transmission,
                out.airlight,
                depth_net(out.dehazed.clamp(0, 1), out.transmission),
            )

    new = run()
    plain = lambda tensors: torch.cat(tensors, dim=1)  # noqa: E731
    for module in (blocks, dehazer_module, depth_net_module, unet):
        monkeypatch.setattr(module, "cat_channels", plain)
    old = run()
    for name, a, b in zip(("dehazed", "transmission", "airlight", "depth"), new, old):
        assert (a - b).abs().max().item() < 1e-4 * max(1.0, b.abs().max().item()), name
