"""The built-in renderer (dehaze_ros.sim.scenes) as a data source: infinite, seeded, exact depth.

Every training sample is a new random scene and pose rendered at the crop size, so there is
nothing to crop; sky keeps depth +inf (it becomes pure airlight in the haze, and is not a valid
depth target). Validation views come from a separate seed stream, so they are scenes training
never renders (with probability 1: 64-bit seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dehaze_ros.canonical_camera import focal_from_hfov
from dehaze_ros.haze import synthesize_haze
from dehaze_ros.sim.scenes import (
    outdoor_validation_view,
    render_random_outdoor_view,
    render_random_vehicle_window,
    render_random_view,
    vehicle_validation_view,
)
from training.config import HazeConfig, SourceConfig, require
from training.data.common import (
    KOSCHMIEDER,
    DataSource,
    Sample,
    hazed_sample,
    resize_whole,
    stable_seed,
    to_float,
)

VALIDATION_STREAM = "procedural-validation"
# A training crop stands for a window of a deployed frame, so its focal length must be a deployed
# frame's: frames 256-640 px wide (the node's max_side 320 up to native VGA) with a horizontal
# field of view of 45-100 degrees. Rendering the crop with its own full field of view instead
# (f = 91 px at 128 px and 70 degrees) teaches canonical depths 2.5x those of the same scene at
# deployment.
FRAME_WIDTH_RANGE_PX = (256.0, 640.0)
FRAME_HFOV_RANGE_DEG = (45.0, 100.0)


def crop_field_of_view(rng: np.random.Generator, crop: int) -> float:
    """The horizontal field of view (degrees) of a crop-wide window of a random deployed frame."""
    width = rng.uniform(*FRAME_WIDTH_RANGE_PX)
    focal = focal_from_hfov(int(round(width)), rng.uniform(*FRAME_HFOV_RANGE_DEG))
    return math.degrees(2.0 * math.atan(crop / 2.0 / focal))


OUTDOOR_NAME = "outdoor"  # outdoor validation views are reported as their own group


@dataclass
class ProceduralConfig(SourceConfig):
    """data.sources.<name> of kind procedural: reads no folder, has no scenes to split."""

    kind: str = "procedural"
    haze: HazeConfig = field(default_factory=HazeConfig)
    val_count: int = 8  # number of fixed validation views
    outdoor_share: float = 0.0  # share of vehicle-scale outdoor scenes in training
    outdoor_val_count: int = 0  # fixed outdoor validation views (besides val_count)
    # Share of the outdoor samples drawn as a window of a vehicle camera's frame instead
    # (render_random_vehicle_window: wide, 16:9 or 4:3 camera 1.2-2.0 m above the road, pitch
    # within +-5 degrees, the window of a deployed frame): depth fine-tunes for vehicles. A share
    # of the outdoor samples, so it needs outdoor_share > 0.
    vehicle_share: float = 0.0
    outdoor_haze: HazeConfig = field(
        default_factory=lambda: HazeConfig(
            visibility_range_m=[30.0, 5000.0], airlight_range=[0.6, 1.0]
        )
    )  # the outdoor scenes' haze

    def check(self, prefix: str) -> None:
        super().check(prefix)
        self.haze.check(f"{prefix}.haze")
        self.outdoor_haze.check(f"{prefix}.outdoor_haze")
        require(self.val_count >= 0, f"{prefix}.val_count must be >= 0, got {self.val_count}")
        require(
            self.outdoor_val_count >= 0,
            f"{prefix}.outdoor_val_count must be >= 0, got {self.outdoor_val_count}",
        )
        for key in ("outdoor_share", "vehicle_share"):
            value = getattr(self, key)
            require(0.0 <= value <= 1.0, f"{prefix}.{key} must lie in [0, 1], got {value}")
        require(
            self.vehicle_share == 0 or self.outdoor_share > 0,
            f"{prefix}.vehicle_share is a share of the outdoor samples: with outdoor_share 0 it "
            f"would draw none (set outdoor_share > 0)",
        )


class ProceduralSource(DataSource):
    kind = "procedural"
    has_depth = True

    def __init__(
        self,
        name: str,
        config: ProceduralConfig,
        split: str,
        root: Path | None = None,
        cache_items: int = 0,
    ):
        """``root`` and ``cache_items``: as every source takes them; the renderer needs neither."""
        super().__init__(name, config, split)
        held_out = split != "train"
        self.count = config.val_count if held_out else 0
        self.outdoor_count = config.outdoor_val_count if held_out else 0

    def scenes(self) -> list[str]:
        if self.split == "train":
            return ["random"]
        return [f"view{index}" for index in range(self.count)] + [
            f"{OUTDOOR_NAME}{index}" for index in range(self.outdoor_count)
        ]

    def __len__(self) -> int:
        return self.count + self.outdoor_count if self.split != "train" else 1

    def train_sample(self, rng: np.random.Generator, crop: int) -> Sample:
        outdoor = self.config.outdoor_share > 0 and rng.random() < self.config.outdoor_share
        if outdoor and self.config.vehicle_share > 0 and rng.random() < self.config.vehicle_share:
            frame = render_random_vehicle_window(rng, crop, FRAME_WIDTH_RANGE_PX)
        else:
            hfov = crop_field_of_view(rng, crop)
            frame = (render_random_outdoor_view if outdoor else render_random_view)(
                rng, crop, crop, hfov_deg=hfov
            )
        return hazed_sample(
            frame.rgb,
            frame.depth_m,
            self.config.outdoor_haze if outdoor else self.config.haze,
            rng,
            f"{self.name}/{OUTDOOR_NAME if outdoor else 'random'}",
            float(frame.K[0, 0]),
        )

    def eval_sample(self, index: int, max_side: int, seed: int = 0) -> Sample:
        if not 0 <= index < len(self) or self.split == "train":
            raise IndexError(f"procedural {self.split} view {index} of {len(self)}")
        width, height = max_side, max(16, (max_side * 3) // 4)
        rng = np.random.default_rng(stable_seed(VALIDATION_STREAM, self.split, seed, index))
        if index < self.count:
            frame, haze, name = (
                render_random_view(rng, width, height),
                self.config.haze,
                f"{self.name}/view{index}",
            )
        else:
            # The renderer's own fixed outdoor validation stream.
            outdoor_index = index - self.count
            frame = outdoor_validation_view(outdoor_index, width, height, seed)
            haze, name = self.config.outdoor_haze, f"{self.name}_{OUTDOOR_NAME}/view{outdoor_index}"
        sample = hazed_sample(frame.rgb, frame.depth_m, haze, rng, name, float(frame.K[0, 0]))
        sample.camera_height_m, sample.camera_pitch_deg = (
            frame.camera_height_m,
            frame.camera_pitch_deg,
        )
        return sample


# Fog of the vehicle validation views, cycled over the views (index % 5): from dense fog (50 m)
# to clear air (inf), the range of issue 26's gates.
VEHICLE_VISIBILITIES_M = (50.0, 100.0, 300.0, 1000.0, math.inf)


def vehicle_sample(index: int, max_side: int, seed: int = 0) -> Sample:
    """Vehicle validation view ``index`` (dehaze_ros.sim.scenes.vehicle_validation_view: a car's
    or truck's camera 1.2-2.0 m above the road, pitch within +-5 degrees, wide 1242 x 375, 16:9
    or 4:3) in fog of VEHICLE_VISIBILITIES_M[index % 5], the longer side at most ``max_side``.
    The haze is fixed and stated: neutral airlight 0.9, no noise or compression."""
    camera, frame = vehicle_validation_view(index, seed)
    visibility = VEHICLE_VISIBILITIES_M[index % len(VEHICLE_VISIBILITIES_M)]
    clear, depth, zoom = resize_whole(frame.rgb, frame.depth_m, max_side)
    clear = to_float(clear)
    beta = KOSCHMIEDER / visibility
    hazy, transmission = synthesize_haze(clear, depth, beta, np.float32(0.9))
    fog = f"fog{visibility:g}m" if math.isfinite(visibility) else "clear"
    return Sample(
        np.clip(hazy, 0.0, 1.0).astype(np.float32),
        clear,
        depth,
        True,
        f"vehicle/view{index}_{camera.replace(':', 'x')}_{fog}",
        focal_px=float(frame.K[0, 0]) * zoom,
        transmission=transmission.astype(np.float32),
        airlight=np.full(3, 0.9, np.float32),
        camera_height_m=frame.camera_height_m,
        camera_pitch_deg=frame.camera_pitch_deg,
    )
