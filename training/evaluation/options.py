"""EvaluateOptions: every setting of one evaluation, built once (from the command line by
training/evaluation/arguments.py) and handed to each part of it; ``check`` refuses an evaluation
with nothing to run or a setting it does not know."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from dehaze_ros.dense_fog import DEFAULT as DENSE_FOG_DEFAULT
from dehaze_ros.engine import (
    DEFAULT_BACKEND,
    DEFAULT_DEPTH_MAX_SIDE,
    DEFAULT_SIZE_RULE,
    DEFAULT_UPSAMPLING,
    DEPTH_FROM_HAZE,
    EngineConfig,
)
from dehaze_ros.metric_scale import Mounting
from dehaze_ros.sim.lidar import LidarModel
from training.evaluation.scale_sources import SCALE_SOURCES

# --depth-from-haze: the engine's settings, or both of them plus the model's -ln t, side by side.
DEPTH_FROM_HAZE_CHOICES = (*DEPTH_FROM_HAZE, "ablation")


@dataclass
class EvaluateOptions:
    """What to evaluate, on which sets, how the engines run and how depth is scored; each field is
    the command-line option of the same name (``python -m training.evaluate --help``), the
    defaults are the command line's."""

    checkpoint: str | None  # --checkpoint: deployable, or a run's best.pt / last.pt
    specs: list[str]  # --data: [KIND:]PATH of every set
    out_dir: Path  # --out
    baseline: str | None = None  # "dcp": the Dark Channel Prior beside the model
    max_side: int = 1024  # longer side of the images scored (px)
    grids: int = 4  # image grids per set
    seed: int = 0
    # The sets: which views, how the synthetic ones are hazed.
    scenes: list[str] = field(default_factory=list)
    haze_t: float = 0.4
    items: list[str] = field(default_factory=list)
    depth_scales: dict | None = None
    focal_px: dict | None = None
    visibility_m: float = 300.0
    exclude: list[str] = field(default_factory=list)
    source_options: list[str] = field(default_factory=list)
    visibilities: list[float] = field(default_factory=list)
    aspects: list[str] = field(default_factory=list)
    # The engines: as a node with the same parameters runs.
    engine_max_side: int = 0
    device: str = "auto"
    upsampling: str = DEFAULT_UPSAMPLING
    precision: str = "auto"
    engine_depth_max_side: int = DEFAULT_DEPTH_MAX_SIDE
    backend: str = DEFAULT_BACKEND
    engine_size_rule: str = DEFAULT_SIZE_RULE
    engine_dense_fog: str = DENSE_FOG_DEFAULT
    onnx_model: str = (
        ""  # a given exported graph (onnxruntime, openvino, auto) instead of the export
    )
    # The model's depth, its metric scale sources and the depths scored.
    depth_from_haze: str = EngineConfig.depth_from_haze
    scale_sources: list[str] = field(default_factory=lambda: ["learned"])
    camera_height_m: float = math.nan
    camera_pitch_deg: float = math.nan
    max_depth_m: float = math.inf
    anchor_range_m: float = LidarModel.max_range_m

    @property
    def ablation(self) -> bool:
        """--depth-from-haze ablation: the fused model plus its depth-only rows."""
        return self.depth_from_haze == "ablation"

    def check(self) -> None:
        """Refuse an evaluation that has nothing to run or an option it does not know."""
        if not self.checkpoint and not self.baseline:
            raise ValueError("nothing to evaluate: give --checkpoint and/or --baseline dcp")
        if self.depth_from_haze not in DEPTH_FROM_HAZE_CHOICES:
            raise ValueError(
                f"depth_from_haze must be one of {DEPTH_FROM_HAZE_CHOICES}, "
                f"got {self.depth_from_haze!r}"
            )
        unknown = sorted(set(self.scale_sources) - set(SCALE_SOURCES))
        if unknown or not self.scale_sources:
            raise ValueError(
                f"scale sources must be some of {', '.join(SCALE_SOURCES)}, "
                f"got {list(self.scale_sources)}"
            )
        height = self.camera_height_m
        Mounting(0.0 if math.isnan(height) else height, self.camera_pitch_deg).check()
