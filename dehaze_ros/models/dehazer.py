"""The dehazing network D of DIACMPN (Zhang, Zhou, Li, CVPR 2024).

A DehazeFormer-style U-net over three scales (full, 1/2, 1/4 resolution) with three additions
that all read the hazy image:

* depth branch: a ``DepthNet`` (same architecture as E) predicts log-depth; a dilated residual
  dense block refines it and it joins the stem features, so D sees where the scene is far
  (thick haze) and near (thin haze). ``forward_with_depth`` returns the branch's depth in
  metres so that training can supervise it (the public code never does);
* structure branch: a UNet whose 1/4, 1/2 and full resolution outputs are concatenated (after a
  1x1 projection) into the encoder and decoder stage of the same scale;
* scale fusion: the three encoder outputs, weighted by an attention computed from their pooled
  features, are merged at 1/4 and 1/2 resolution and feed the decoder there.

Conventions (ARCHITECTURE.md): input hazy RGB in [0, 1], B x 3 x H x W, any H and W; inside,
the image is mapped to [-1, 1] (the range the paper's and DehazeFormer's networks use), padded
by reflection to a multiple of ``size_multiple`` (4 x window for the attention windows at 1/4
resolution, and 16 for the UNet's and the depth branch's down-sampling), and cropped back.
Output heads (``ModelConfig.head``), all giving a dehazed image in [0, 1] units, not clamped:

* ``residual`` (the paper's): ``hazy + f(hazy)``. The output projection starts at zero, so an
  untrained D returns its input exactly. Nothing keeps J physical where the data never went:
  over sky it learns to subtract "haze" and paints dark bands.
* ``asm``: the decoder predicts the transmission t (per pixel, through a sigmoid) and a pooled
  head the airlight A (one RGB value per image), and J = (I - A) / max(t, t0) + A, the inverse
  of the atmospheric scattering model. Where I is close to A (sky, dense haze), J stays close to
  A instead of going dark.
* ``asm_dcp``: as ``asm``, but the Dark Channel Prior's t and A (``models.dcp_prior``) are an
  input (t joins the stem) and the starting point: the network predicts a correction of
  logit(t_dcp) and of A_dcp, both zero-initialised, so an untrained D *is* the DCP and training
  starts from its quality. ``forward_physics`` returns t and A too (the engine applies them at
  full resolution). t and A are trained only through the reconstruction of J, and, with
  ``depth_inputs: image_transmission``, through the depth network that reads -ln t (= beta * d
  in the scattering model).

Memory layout: weights and activations are channels-last (NHWC). The networks are narrow (8 to
96 channels), and oneDNN runs such convolutions much faster on NHWC than on NCHW: on this
project's 2-core CPU a 16-channel 1x1 conv at 320 x 240 ran about 10x faster, the whole rt
dehazer about 1.5x; on an H100 the layout made no clear difference. Callers may pass any layout;
outputs are channels-last views.

Fixes against the public code: the bottleneck decoder reads the third encoder stage's output
(the public code passes the pre-stage features and uses the stage output only through the
fusion); the full-resolution fusion conv that was computed and discarded is gone; fusion maps
are formed at their target scale (pooling / upsampling) instead of upsampling everything to full
resolution and striding back down; the fusion weights are a softmax over the scales; instance
norms have the right channel counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from dehaze_ros import dcp
from dehaze_ros.models.blocks import (
    DehazeStage,
    PatchMerge,
    PatchSplit,
    SelectiveKernelFusion,
    cat_channels,
    pad_to_multiple,
)
from dehaze_ros.models.config import ModelConfig
from dehaze_ros.models.dcp_prior import dcp_prior
from dehaze_ros.models.depth_net import DepthNet, DilatedResidualDenseBlock
from dehaze_ros.models.unet import LEVELS as UNET_LEVELS
from dehaze_ros.models.unet import StructureUNet


def resample(features: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Average-pool down by the (integer) size ratio, or bilinearly upsample, to ``size``."""
    if features.shape[-2:] == size:
        return features
    if features.shape[-1] > size[-1]:
        return F.avg_pool2d(features, features.shape[-1] // size[-1])
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


class ScaleFusion(nn.Module):
    """Attention-weighted fusion of the encoder's full, 1/2 and 1/4 resolution outputs.

    One weight per scale and image (softmax over the scales, from the pooled features of all
    three) says how much each scale contributes; the weighted maps are resampled to each target
    scale, concatenated and mixed by conv + instance norm + ReLU into that scale's width.
    """

    def __init__(
        self,
        scale_channels: tuple[int, ...],
        hidden: int,
        kernel_size: int,
        targets: tuple[int, ...],
    ):
        super().__init__()
        total = sum(scale_channels)
        self.targets = targets
        self.scale_attention = nn.Sequential(
            nn.Conv2d(total, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, len(scale_channels), 1),
        )
        self.mixers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    total,
                    scale_channels[target],
                    kernel_size,
                    padding=kernel_size // 2,
                    padding_mode="reflect",
                ),
                # Instance norm; as GroupNorm with one group per channel it keeps channels-last.
                nn.GroupNorm(scale_channels[target], scale_channels[target]),
                nn.ReLU(inplace=True),
            )
            for target in targets
        )

    def forward(self, scales: list[torch.Tensor]) -> list[torch.Tensor]:
        """``scales`` (finest first) -> one fused map per target scale index, in ``targets`` order."""
        pooled = torch.cat([features.mean(dim=(2, 3), keepdim=True) for features in scales], dim=1)
        weights = self.scale_attention(pooled).softmax(dim=1)
        fused = []
        for target, mixer in zip(self.targets, self.mixers):
            size = scales[target].shape[-2:]
            # The weights are per image and scale, so they commute with resampling: weigh the
            # smaller (resampled) map.
            resampled = [
                resample(features, size) * weights[:, index : index + 1]
                for index, features in enumerate(scales)
            ]
            fused.append(mixer(cat_channels(resampled)))
        return fused


T_MIN = dcp.T_MIN  # the inverse ASM's floor of t (the DCP's t0)
PRIOR_T_MAX = 0.99  # logit(t_dcp) stays finite where the DCP says "no haze"
# The asm head without the DCP starts from a plain guess: half transmission, light grey airlight.
START_TRANSMISSION, START_AIRLIGHT = 0.5, 0.85


def logit(values: torch.Tensor) -> torch.Tensor:
    return torch.log(values) - torch.log1p(-values)


@dataclass
class DehazerOutput:
    dehazed: torch.Tensor  # B x 3 x H x W, [0, 1] units, not clamped
    branch_log_depth: torch.Tensor  # B x 1 x H x W, the depth branch's log depth
    transmission: torch.Tensor | None = None  # B x 1 x H x W in (0, 1) (physics heads)
    airlight: torch.Tensor | None = None  # B x 3 x 1 x 1 (physics heads)


class Dehazer(nn.Module):
    """DIACMPN's D: ``forward(hazy) -> dehazed``; ``forward_with_depth(hazy) -> (dehazed, depth_m)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        full, half, quarter = config.stage_channels[:3]
        depths, network_depth = config.stage_depths, sum(config.stage_depths)
        depth_levels = len(config.depth_net_channels)
        attention_multiple = 4 * config.window_size if config.uses_attention else 4
        self.size_multiple = math.lcm(attention_multiple, 2**UNET_LEVELS, 2**depth_levels)

        def stage(index: int) -> DehazeStage:
            return DehazeStage(
                config.stage_channels[index],
                depths[index],
                config.mlp_ratios[index],
                config.num_heads[index],
                config.attn_ratios[index],
                config.window_size,
                network_depth,
            )

        base = config.unet_base_channels
        self.structure_branch = StructureUNet(base)
        self.structure_to_full = nn.Conv2d(3, full, 1)
        self.structure_to_half = nn.Conv2d(base, half, 1)
        self.structure_to_quarter = nn.Conv2d(2 * base, quarter, 1)

        self.depth_branch = DepthNet(
            config.depth_net_channels,
            config.depth_net_growth,
            config.depth_net_dense_layers,
            config.depth_scale_m,
        )
        self.depth_refine = DilatedResidualDenseBlock(
            1, config.depth_refine_growth, config.depth_net_dense_layers
        )

        self.head = config.head
        self.airlight_chroma = config.airlight_chroma
        # asm_dcp: the stem also reads the DCP's transmission (as 2t - 1, the image's range).
        stem_inputs = 4 if self.head == "asm_dcp" else 3
        self.stem = nn.Conv2d(stem_inputs, full, 3, padding=1, padding_mode="reflect")
        self.encoder_full_input = nn.Conv2d(2 * full + 1, full, 1)  # stem + structure + depth
        self.encoder_full = stage(0)
        self.merge_to_half = PatchMerge(full, half)
        self.encoder_half_input = nn.Conv2d(2 * half, half, 1)
        self.encoder_half = stage(1)
        self.merge_to_quarter = PatchMerge(half, quarter)
        self.encoder_quarter_input = nn.Conv2d(2 * quarter, quarter, 1)
        self.encoder_quarter = stage(2)

        self.scale_fusion = ScaleFusion(
            (full, half, quarter),
            config.fusion_hidden_channels,
            config.fusion_kernel_size,
            targets=(2, 1),
        )
        self.bottleneck_input = nn.Conv2d(2 * quarter, quarter, 1)  # encoder out + fused 1/4
        self.split_to_half = PatchSplit(quarter, half)
        self.skip_half = nn.Conv2d(half, half, 1)
        self.skip_fusion_half = SelectiveKernelFusion(half)
        self.decoder_half_input = nn.Conv2d(2 * half, half, 1)  # + structure
        self.decoder_half = stage(3)
        self.decoder_half_output = nn.Conv2d(2 * half, half, 1)  # + fused 1/2
        self.split_to_full = PatchSplit(half, full)
        self.skip_full = nn.Conv2d(full, full, 1)
        self.skip_fusion_full = SelectiveKernelFusion(full)
        self.decoder_full_input = nn.Conv2d(2 * full, full, 1)  # + structure
        self.decoder_full = stage(4)
        # residual: 3 channels of f(I); physics heads: 1 channel, the logit of t (or its correction).
        self.output_projection = nn.Conv2d(
            full, 3 if self.head == "residual" else 1, 3, padding=1, padding_mode="reflect"
        )
        nn.init.zeros_(self.output_projection.weight)
        nn.init.zeros_(self.output_projection.bias)
        if self.head != "residual":
            # Airlight from the pooled deepest features (A is global), as a correction of the
            # start value (the DCP's A, or START_AIRLIGHT): zero-initialised.
            self.airlight_head = nn.Linear(quarter, 3)
            nn.init.zeros_(self.airlight_head.weight)
            nn.init.zeros_(self.airlight_head.bias)
        self.to(memory_format=torch.channels_last)  # see the module docstring, "Memory layout"

    def forward(self, hazy: torch.Tensor) -> torch.Tensor:
        return self.forward_physics(hazy).dehazed

    def forward_with_depth(self, hazy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dehazed, depth from the internal depth branch), both at the input size. The depth is
        in the units the depth networks are trained in (metres, or canonical-camera metres)."""
        out = self.forward_physics(hazy)
        return out.dehazed, self.depth_branch.metres_from_log_depth(out.branch_log_depth)

    def forward_physics(self, hazy: torch.Tensor) -> DehazerOutput:
        """Everything the head computes, cropped to the input size."""
        if hazy.dim() != 4 or hazy.shape[1] != 3:
            raise ValueError(
                f"Dehazer expects a B x 3 x H x W RGB batch, got shape {tuple(hazy.shape)}"
            )
        height, width = hazy.shape[-2:]
        padded = pad_to_multiple(hazy, self.size_multiple).contiguous(
            memory_format=torch.channels_last
        )
        signed = padded * 2.0 - 1.0
        # The prior of the image itself (padding would move its airlight and guided filter), padded.
        prior = dcp_prior(hazy) if self.head == "asm_dcp" else None
        prior_transmission = (
            None if prior is None else pad_to_multiple(prior.transmission, self.size_multiple)
        )

        structure_quarter, structure_half, structure_full = self.structure_branch(signed)
        structure_full = self.structure_to_full(structure_full)
        structure_half = self.structure_to_half(structure_half)
        structure_quarter = self.structure_to_quarter(structure_quarter)
        branch_log_depth = self.depth_branch.log_depth(padded)
        depth_features = self.depth_refine(branch_log_depth)

        stem_input = (
            signed
            if prior is None
            else cat_channels([signed, prior_transmission.to(signed.dtype) * 2.0 - 1.0])
        )
        features = self.stem(stem_input)
        encoded_full = self.encoder_full(
            self.encoder_full_input(cat_channels([features, structure_full, depth_features]))
        )
        features = self.merge_to_half(encoded_full)
        encoded_half = self.encoder_half(
            self.encoder_half_input(cat_channels([features, structure_half]))
        )
        features = self.merge_to_quarter(encoded_half)
        encoded_quarter = self.encoder_quarter(
            self.encoder_quarter_input(cat_channels([features, structure_quarter]))
        )
        fused_quarter, fused_half = self.scale_fusion([encoded_full, encoded_half, encoded_quarter])

        features = self.bottleneck_input(cat_channels([encoded_quarter, fused_quarter]))
        features = self.split_to_half(features)
        features = self.skip_fusion_half(features, self.skip_half(encoded_half)) + features
        features = self.decoder_half(
            self.decoder_half_input(cat_channels([features, structure_half]))
        )
        features = self.decoder_half_output(cat_channels([features, fused_half]))
        features = self.split_to_full(features)
        features = self.skip_fusion_full(features, self.skip_full(encoded_full)) + features
        features = self.decoder_full(
            self.decoder_full_input(cat_channels([features, structure_full]))
        )
        head_output = self.output_projection(features)
        crop = (..., slice(0, height), slice(0, width))
        if self.head == "residual":
            # J = I + f(I) in [-1, 1] units is I + f(I) / 2 in [0, 1] units.
            return DehazerOutput((padded + head_output / 2.0)[crop], branch_log_depth[crop])
        airlight_correction = self.airlight_head(encoded_quarter.mean(dim=(2, 3))).float()[
            :, :, None, None
        ]
        if prior is None:
            start_logit = math.log(START_TRANSMISSION / (1.0 - START_TRANSMISSION))
            transmission = torch.sigmoid(head_output.float() + start_logit)
            airlight = START_AIRLIGHT + airlight_correction
        else:
            prior_logit = logit(prior_transmission.clamp(T_MIN, PRIOR_T_MAX))
            transmission = torch.sigmoid(prior_logit + head_output.float())
            airlight = prior.airlight + airlight_correction
        airlight = airlight.clamp(0.05, 1.0)
        if (
            self.airlight_chroma < 1.0
        ):  # a convex blend with the grey of the same mean: stays in range
            grey = airlight.mean(dim=1, keepdim=True)
            airlight = grey + self.airlight_chroma * (airlight - grey)
        transmission, image = transmission[crop], padded[crop].float()
        dehazed = recover_scene(image, transmission, airlight)
        return DehazerOutput(dehazed, branch_log_depth[crop], transmission, airlight)


def recover_scene(
    hazy: torch.Tensor, transmission: torch.Tensor, airlight: torch.Tensor, t_min: float = T_MIN
) -> torch.Tensor:
    """The inverse atmospheric scattering model, J = (I - A) / max(t, t_min) + A, in torch."""
    return (hazy - airlight) / transmission.clamp_min(t_min) + airlight
