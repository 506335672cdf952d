"""ModelConfig: every hyper-parameter of the dehazer D and the depth network E, as plain Python.

A checkpoint stores ``ModelConfig.to_dict()`` and the networks are rebuilt from it alone, so the
config holds only ints, floats, strings and tuples (lists in the dict form), is frozen, and
checks itself on construction: a wrong type or an impossible shape fails here with the field's
name, not later as a cryptic tensor-shape error deep inside ``forward``.

Presets (parameters D / E; GMACs D + E at 640 x 480):

* ``diacmpn-s``  the paper's "Indoor" configuration: 17.06 M / 1.98 M, 368 GMACs.
* ``diacmpn-t``  the same family for real time on a GPU: half the backbone blocks, a 16-wide
  structure UNet instead of the 64-wide one that holds 13.4 of the paper's 17 M parameters,
  a slimmer depth network: 2.37 M / 0.56 M, 79 GMACs at 640x480 (about 21 ms D + E on an
  H100, timed in an earlier development session).
* ``diacmpn-rt`` the same family for real time on a 2-core CPU with the engine's
  ``max_side=320`` (320 x 240 inside for 640 x 480 frames: 2.5 GMACs, 72.5 ms median for the
  whole engine call in fp32 on 2 threads: docs/performance.md, benchmark): one block per stage, 16 channels
  at full resolution (the full-resolution stages dominate CPU time), no window attention (one attention block at 1/4 resolution
  added about 17 ms here, a third of the budget),
  1x1 scale fusion, an 8-wide UNet and a small depth network: 0.41 M / 0.09 M.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

BACKBONE_STAGES = 5  # encoder full, 1/2, 1/4 resolution; decoder 1/2, full
# The dehazer's output head (dehaze_ros.models.dehazer):
#   residual  the paper's J = I + f(I);
#   asm       the network predicts transmission t and airlight A, J = (I - A) / max(t, t0) + A;
#   asm_dcp   asm, with the Dark Channel Prior's t and A as input and starting point: the network
#             corrects them, and untrained it reproduces the DCP.
HEADS = ("residual", "asm", "asm_dcp")
# What the depth network E reads besides the (dehazed) image:
#   image               the paper's E(J);
#   image_transmission  also the optical depth -ln t of a physics head's transmission: in haze
#                       -ln t = beta * d is a depth cue of its own, which E(J) alone throws away.
# Ordered: each entry reads everything the one before it reads, plus more, so a depth network
# trained on an earlier entry can be fine-tuned as a later one (depth_inputs_widen).
DEPTH_INPUTS = ("image", "image_transmission")
# Fields a fine-tune (training's train.init_from) may set differently from the checkpoint it
# starts from: the name, airlight_chroma (no weights of its own) and depth_inputs, but only
# widened (depth_inputs_widen: the new input channels start with zero weights).
FINE_TUNE_MAY_CHANGE = ("name", "airlight_chroma", "depth_inputs")
# The canonical camera of the real-time presets: the focal length of a 320 px wide image of a
# 65-degree camera (a 70-degree one, the node's default_hfov_deg, gives 228.5 px: canonical
# depth is then 1.09x metres). Any value works if training and inference agree; the checkpoint
# records it.
CANONICAL_FOCAL_PX = 250.0


def depth_inputs_widen(start: str, target: str) -> bool:
    """Whether ``target`` reads everything ``start`` reads, plus more (a widening fine-tune)."""
    return DEPTH_INPUTS.index(target) > DEPTH_INPUTS.index(start)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "diacmpn-s"
    # Backbone (DehazeFormer-style U-net): per stage enc1, enc2, enc3, dec2, dec1.
    stage_depths: tuple[int, ...] = (8, 8, 8, 4, 4)
    stage_channels: tuple[int, ...] = (24, 48, 96, 48, 24)
    mlp_ratios: tuple[float, ...] = (2.0, 4.0, 4.0, 2.0, 2.0)
    num_heads: tuple[int, ...] = (2, 4, 6, 1, 1)  # used where attn_ratios > 0
    attn_ratios: tuple[float, ...] = (
        0.25,
        0.5,
        0.75,
        0.0,
        0.0,
    )  # share of a stage's last blocks with attention
    window_size: int = 8
    # Structure branch: UNet with widths base, 2, 4, 8, 8 x base.
    unet_base_channels: int = 64
    # Attention-weighted fusion of the three encoder scales.
    fusion_hidden_channels: int = 128
    fusion_kernel_size: int = 3
    # Depth network E (and the dehazer's depth branch, same architecture).
    depth_net_channels: tuple[int, ...] = (24, 48, 96, 128)  # one strided conv per entry
    depth_net_growth: int = 32
    depth_net_dense_layers: int = 5
    depth_refine_growth: int = 32  # dense block refining the branch's depth map inside D
    depth_scale_m: float = 10.0  # depth (m) when the log-depth head outputs 0
    head: str = "residual"  # one of HEADS
    # Metric depth in a canonical camera (Metric3D): the depth networks predict the depth an image
    # would have if its focal length were this many pixels; metres = output * f / f_c, with f the
    # focal length in pixels of the image the network ran on. 0 = plain metres (no camera model).
    canonical_focal_px: float = 0.0
    depth_inputs: str = "image"  # one of DEPTH_INPUTS
    # How much of the airlight's colour a physics head keeps: A = m + airlight_chroma * (A - m),
    # m the mean of A's channels. 1 = the RGB value the network predicts; 0 = grey. Fog and haze
    # scatter all visible wavelengths nearly alike, and a tinted A tints everything in thick haze
    # and turns a bright sky purple or blue (J = (I - A) / t + A amplifies I - A wherever t is
    # small): docs/results.md, "Grey airlight".
    airlight_chroma: float = 1.0

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            object.__setattr__(
                self, item.name, _checked(item.name, getattr(self, item.name), hints[item.name])
            )
        self._check_values()

    def _check_values(self) -> None:
        problems = []
        for name in ("stage_depths", "stage_channels", "mlp_ratios", "num_heads", "attn_ratios"):
            if len(getattr(self, name)) != BACKBONE_STAGES:
                problems.append(
                    f"{name} needs {BACKBONE_STAGES} entries (enc1, enc2, enc3, dec2, dec1), "
                    f"got {len(getattr(self, name))}"
                )
        if not problems:
            channels = self.stage_channels
            if channels[1] != channels[3] or channels[0] != channels[4]:
                problems.append(
                    f"stage_channels must mirror (c0, c1, c2, c1, c0) for the skips, got {channels}"
                )
            for stage, (width, heads, ratio) in enumerate(
                zip(channels, self.num_heads, self.attn_ratios)
            ):
                if ratio > 0 and heads >= 1 and width % heads:
                    problems.append(
                        f"stage {stage}: {width} channels do not split into {heads} heads"
                    )
            if any(not 0.0 <= ratio <= 1.0 for ratio in self.attn_ratios):
                problems.append(f"attn_ratios must lie in [0, 1], got {self.attn_ratios}")
            if any(depth < 1 for depth in self.stage_depths):
                problems.append(f"stage_depths must be >= 1, got {self.stage_depths}")
            if any(ratio <= 0 for ratio in self.mlp_ratios):
                problems.append(f"mlp_ratios must be > 0, got {self.mlp_ratios}")
        if not self.depth_net_channels:
            problems.append("depth_net_channels needs at least one entry")
        positive = (
            "window_size",
            "unet_base_channels",
            "fusion_hidden_channels",
            "depth_net_growth",
            "depth_net_dense_layers",
            "depth_refine_growth",
        )
        positive_tuples = ("stage_channels", "num_heads", "depth_net_channels")
        problems += [
            f"{name} must be >= 1, got {getattr(self, name)}"
            for name in positive
            if getattr(self, name) < 1
        ]
        problems += [
            f"{name} entries must be >= 1, got {getattr(self, name)}"
            for name in positive_tuples
            if any(value < 1 for value in getattr(self, name))
        ]
        if self.fusion_kernel_size < 1 or self.fusion_kernel_size % 2 == 0:
            problems.append(
                f"fusion_kernel_size must be odd and >= 1, got {self.fusion_kernel_size}"
            )
        if self.head not in HEADS:
            problems.append(f"head must be one of {HEADS}, got {self.head!r}")
        if self.depth_inputs not in DEPTH_INPUTS:
            problems.append(
                f"depth_inputs must be one of {DEPTH_INPUTS}, got {self.depth_inputs!r}"
            )
        elif self.depth_inputs == "image_transmission" and self.head == "residual":
            problems.append(
                "depth_inputs image_transmission needs a head that predicts a transmission "
                "(asm or asm_dcp), not residual"
            )
        if not self.canonical_focal_px >= 0:
            problems.append(
                f"canonical_focal_px must be >= 0 pixels (0 = plain metres), got {self.canonical_focal_px}"
            )
        if not 0.0 <= self.airlight_chroma <= 1.0:
            problems.append(
                f"airlight_chroma must lie in [0, 1] (1 = the predicted colour, 0 = grey), "
                f"got {self.airlight_chroma}"
            )
        if not self.depth_scale_m > 0:
            problems.append(f"depth_scale_m must be > 0 metres, got {self.depth_scale_m}")
        if problems:
            raise ValueError(f"invalid ModelConfig {self.name!r}: " + "; ".join(problems))

    @property
    def depth_reads_transmission(self) -> bool:
        return self.depth_inputs == "image_transmission"

    @property
    def uses_attention(self) -> bool:
        return any(ratio > 0 for ratio in self.attn_ratios)

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists) for checkpoints, YAML and JSON."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Inverse of ``to_dict``. Unknown keys are an error (a typo must not silently fall back to
        a default); missing keys take the field defaults (those of ``diacmpn-s``), so configs
        saved before a field existed still load."""
        if not isinstance(values, dict):
            raise TypeError(f"ModelConfig.from_dict needs a dict, got {type(values).__name__}")
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def _checked(name: str, value, hint):
    """``value`` converted to the field type ``hint``, or TypeError naming the field."""
    if typing.get_origin(hint) is tuple:
        element_hint = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise TypeError(
                f"ModelConfig.{name} must be a list of {element_hint.__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
        return tuple(
            _checked(f"{name}[{index}]", element, element_hint)
            for index, element in enumerate(value)
        )
    # bool is an int subclass, but True as a channel count is always a mistake.
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    raise TypeError(
        f"ModelConfig.{name} must be {hint.__name__}, got {type(value).__name__} {value!r}"
    )


PRESETS: dict[str, ModelConfig] = {
    config.name: config
    for config in (
        ModelConfig(name="diacmpn-s"),
        ModelConfig(
            name="diacmpn-t",
            stage_depths=(4, 4, 4, 2, 2),
            unet_base_channels=16,
            fusion_hidden_channels=64,
            depth_net_channels=(16, 32, 64, 96),
            depth_net_growth=16,
            depth_net_dense_layers=4,
            depth_refine_growth=16,
            head="asm_dcp",
            canonical_focal_px=CANONICAL_FOCAL_PX,
            airlight_chroma=0.0,
        ),
        ModelConfig(
            name="diacmpn-rt",
            stage_depths=(1, 1, 1, 1, 1),
            stage_channels=(16, 32, 64, 32, 16),
            mlp_ratios=(2.0, 2.0, 2.0, 2.0, 2.0),
            num_heads=(1, 2, 4, 1, 1),
            attn_ratios=(0.0, 0.0, 0.0, 0.0, 0.0),
            unet_base_channels=8,
            fusion_hidden_channels=32,
            fusion_kernel_size=1,
            depth_net_channels=(8, 16, 32, 48),
            depth_net_growth=8,
            depth_net_dense_layers=2,
            depth_refine_growth=4,
            head="asm_dcp",
            canonical_focal_px=CANONICAL_FOCAL_PX,
            airlight_chroma=0.0,
        ),
    )
}


def get_model_config(name: str) -> ModelConfig:
    """The preset called ``name`` (frozen, so sharing the instance is safe)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; presets: {sorted(PRESETS)}") from None
