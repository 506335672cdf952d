"""Build the networks from a ModelConfig, and size them (parameters, multiply-accumulates)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dehaze_ros.models.config import ModelConfig
from dehaze_ros.models.dehazer import Dehazer
from dehaze_ros.models.depth_net import DepthNet


def build_dehazer(config: ModelConfig) -> Dehazer:
    return Dehazer(config)


def build_depth_net(config: ModelConfig) -> DepthNet:
    return DepthNet(
        config.depth_net_channels,
        config.depth_net_growth,
        config.depth_net_dense_layers,
        config.depth_scale_m,
        transmission_input=config.depth_reads_transmission,
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one ``module(x)`` call on a random input of ``input_shape``.

    Counted by torch's FlopCounterMode (matmuls, convolutions, attention; elementwise work is not
    counted, as in the papers' tables), MACs = FLOPs / 2. Runs on the module's device and dtype,
    in eval mode (so batch-norm statistics are left as they were), and restores the mode.
    """
    reference = next(module.parameters())
    image = torch.rand(input_shape, device=reference.device, dtype=reference.dtype)
    counter = FlopCounterMode(display=False)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), counter:
            module(image)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2
