"""The built-in renderer (dehaze_ros.scenes) as a data source: infinite, seeded, exact depth.

Every training sample is a new random scene and pose rendered at the crop size, so there is
nothing to crop; sky keeps depth +inf (it becomes pure airlight in the haze, and is not a valid
depth target). Validation views come from a separate seed stream, so they are scenes training
never renders (with probability 1: 64-bit seeds).
"""
from __future__ import annotations

import numpy as np

from dehaze_ros.scenes import render_random_view
from training.config import SourceConfig
from training.data.common import DataSource, Sample, stable_seed, synthesize_random_haze, to_float

VALIDATION_STREAM = "procedural-validation"


class ProceduralSource(DataSource):
    kind = "procedural"
    has_depth = True

    def __init__(self, name: str, config: SourceConfig, split: str):
        super().__init__(name, config, split)
        self.count = config.val_count if split != "train" else 0

    def scenes(self) -> list[str]:
        return [f"view{index}" for index in range(self.count)] if self.split != "train" else ["random"]

    def __len__(self) -> int:
        return self.count if self.split != "train" else 1

    def train_sample(self, rng: np.random.Generator, crop: int) -> Sample:
        frame = render_random_view(rng, crop, crop)
        clear = to_float(frame.rgb)
        hazy = synthesize_random_haze(clear, frame.depth_m, self.config.haze, rng)
        return Sample(hazy, clear, frame.depth_m, True, f"{self.name}/random", focal_px=float(frame.K[0, 0]))

    def eval_sample(self, index: int, max_side: int, seed: int = 0) -> Sample:
        if not 0 <= index < self.count:
            raise IndexError(f"procedural {self.split} view {index} of {self.count}")
        rng = np.random.default_rng(stable_seed(VALIDATION_STREAM, self.split, seed, index))
        width, height = max_side, max(16, (max_side * 3) // 4)
        frame = render_random_view(rng, width, height)
        clear = to_float(frame.rgb)
        hazy = synthesize_random_haze(clear, frame.depth_m, self.config.haze, rng)
        return Sample(hazy, clear, frame.depth_m, True, f"{self.name}/view{index}", focal_px=float(frame.K[0, 0]))
