"""How well the visibility estimate recovers known haze: the table of docs/visibility.md.

    python -m dehaze_ros.tools.visibility_check [--checkpoint P] [--middlebury DIR] [--views 6]

Scenes with exact metric depth are hazed with the scattering model at a known visibility V
(beta = 3.912 / V, grey airlight 0.85) and the estimate is made three ways, so that the
estimator's own error is told apart from the networks':

  exact t + true depth    the scattering model's own transmission: the estimator alone;
  DCP t + true depth      the transmission of the engine's DCP model (what a checkpoint without
                          a physics head falls back to), with the true depth;
  checkpoint end to end   the engine with a checkpoint (default: the shipped one) at the node's
                          max_side (its default), its depth and transmission (or the DCP fallback), the
                          focal length of the view passed as the node takes it from CameraInfo.

Scene sets: procedural vehicle-scale outdoor views (depth 2 m to ~3 km, sky +inf), procedural
rooms (1.5-13 m) and the Middlebury 2014 scenes of ``--middlebury`` (1.5-5 m, holes NaN), all
at 320 px wide. Each cell: how many of the views gave an estimate (ok), the median relative
error of V over those, and the other outcomes (clear: V beyond what the view's depths resolve,
correct when the truth is beyond the stated bound; dense; none).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dehaze_ros import visibility
from dehaze_ros.engine import DEFAULT_CHECKPOINT, DehazeEngine, EngineConfig
from dehaze_ros.haze import synthesize_haze
from dehaze_ros.node_config import SPECS
from dehaze_ros.sim.scenes import SceneRenderer, outdoor_validation_view

AIRLIGHT = 0.85
WIDTH = 320
SOURCES = ("exact t + true depth", "DCP t + true depth", "checkpoint end to end")


@dataclass
class View:
    rgb: np.ndarray  # clear, uint8
    depth_m: np.ndarray  # exact metres, +inf sky, NaN unknown
    focal_px: float


@dataclass
class Cell:
    errors: list[float] = field(default_factory=list)  # V_est / V - 1 of the ok estimates
    outcomes: dict[str, int] = field(default_factory=dict)
    clear_correct: int = 0

    def add(self, estimate, true_visibility: float) -> None:
        self.outcomes[estimate.status] = self.outcomes.get(estimate.status, 0) + 1
        if estimate.valid:
            self.errors.append(estimate.visibility_m / true_visibility - 1.0)
        elif estimate.status == visibility.CLEAR and estimate.interval_m[0] <= true_visibility:
            self.clear_correct += 1

    def text(self) -> str:
        total = sum(self.outcomes.values())
        parts = [f"{len(self.errors)}/{total} ok"]
        if self.errors:
            median_abs = statistics.median(abs(e) for e in self.errors)
            bias = statistics.median(self.errors)
            parts[0] += f": {100 * median_abs:.0f}% ({100 * bias:+.0f}%)"
        if self.outcomes.get(visibility.CLEAR):
            parts.append(f"clear {self.outcomes[visibility.CLEAR]} ({self.clear_correct} correct)")
        for status in (visibility.DENSE, visibility.NONE):
            if self.outcomes.get(status):
                parts.append(f"{status} {self.outcomes[status]}")
        return "; ".join(parts)


def resized(rgb: np.ndarray, depth: np.ndarray, focal_px: float) -> View:
    scale = WIDTH / rgb.shape[1]
    size = (WIDTH, round(rgb.shape[0] * scale))
    return View(
        cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
        cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST),
        focal_px * scale,
    )


def outdoor_views(count: int) -> list[View]:
    views = []
    for index in range(count):
        frame = outdoor_validation_view(index, WIDTH, 240)
        views.append(View(frame.rgb, frame.depth_m, float(frame.K[0, 0])))
    return views


def indoor_views(count: int) -> list[View]:
    views = []
    for seed in range(count):
        frame = SceneRenderer(WIDTH, 240, seed=seed, indoor=True).render(0.0)
        views.append(View(frame.rgb, frame.depth_m, float(frame.K[0, 0])))
    return views


def middlebury_views(root: Path) -> list[View]:
    from training.config import SourceConfig
    from training.data.rgbd import load_rgbd_item, scan_rgbd_folder

    items, _ = scan_rgbd_folder(root, SourceConfig(kind="rgbd"), "middlebury")
    views, seen = [], set()
    for item in sorted(items, key=lambda item: item.name):
        if item.calib is None or item.scene in seen:  # one variant per scene (PianoL is Piano)
            continue
        seen.add(item.scene)
        rgb, depth = load_rgbd_item(item)
        views.append(resized(rgb, depth, item.focal_px))
    return views


def describe_checkpoint(engine: DehazeEngine, path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    config = engine.checkpoint.model_config
    provenance = engine.checkpoint.provenance or {}
    return (
        f"{path} (sha256 {digest}): {config.get('name', 'custom')}, head {config.get('head', 'residual')}, "
        f"canonical_focal_px {config.get('canonical_focal_px', 0)}, depth range "
        f"{engine.depth_range[0]:g}-{engine.depth_range[1]:g} m, trained until "
        f"{provenance.get('trained_until', '?')}"
    )


def evaluate(
    views: list[View], visibilities: list[float], dcp: DehazeEngine, model: DehazeEngine | None
) -> dict[float, list[Cell]]:
    table = {}
    for true_visibility in visibilities:
        cells = [Cell() for _ in SOURCES]
        for view in views:
            hazy, transmission = synthesize_haze(
                view.rgb, view.depth_m, visibility.KOSCHMIEDER / true_visibility, AIRLIGHT
            )
            hazy_u8 = (hazy * 255.0 + 0.5).astype(np.uint8)
            cells[0].add(
                visibility.estimate_visibility(transmission, view.depth_m), true_visibility
            )
            dcp_t = dcp.process(hazy_u8, want_dehazed=False, want_depth=False).transmission
            cells[1].add(visibility.estimate_visibility(dcp_t, view.depth_m), true_visibility)
            if model is not None:
                result = model.process(
                    hazy_u8, want_dehazed=False, want_depth=True, focal_px=view.focal_px
                )
                cells[2].add(
                    visibility.estimate_from_result(
                        result, hazy_u8, model.config.max_side, model.depth_range
                    ),
                    true_visibility,
                )
        table[true_visibility] = cells
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help="checkpoint for the end-to-end column ('' skips it)",
    )
    parser.add_argument(
        "--middlebury", type=Path, default=Path("../shared/data/rgbd/middlebury2014")
    )
    parser.add_argument("--views", type=int, default=6, help="procedural outdoor views (rooms: 4)")
    parser.add_argument(
        "--max-side",
        type=int,
        default=SPECS["max_side"].default,
        help="engine max_side (default: the node's)",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    dcp = DehazeEngine(EngineConfig(model="dcp", max_side=args.max_side, warmup=0))
    model = None
    if str(args.checkpoint) and args.checkpoint.is_file():
        model = DehazeEngine(
            EngineConfig(checkpoint=str(args.checkpoint), max_side=args.max_side, device="cpu")
        )
        print(f"checkpoint: {describe_checkpoint(model, args.checkpoint)}")
    else:
        print(f"checkpoint: none at {args.checkpoint}: the end-to-end column is left empty")
    sets = [
        (
            "outdoor (procedural, vehicle scale)",
            outdoor_views(args.views),
            [30.0, 100.0, 300.0, 1000.0, 3000.0, 5000.0],
        ),
        ("rooms (procedural, 1.5-13 m)", indoor_views(4), [30.0, 100.0, 300.0, 1000.0]),
    ]
    if args.middlebury.is_dir():
        sets.append(
            (
                "Middlebury 2014 (hazed, 1.5-5 m)",
                middlebury_views(args.middlebury),
                [30.0, 100.0, 300.0, 1000.0],
            )
        )
    else:
        print(f"no Middlebury scenes at {args.middlebury}: that set is left out")

    print(
        f"\ncells: views with an estimate, median |V_est / V - 1| (median signed), other outcomes; "
        f"airlight {AIRLIGHT}, {WIDTH} px wide, engine max_side {args.max_side}\n"
    )
    print("| scenes | true V | " + " | ".join(SOURCES) + " |")
    print("|---|---:|" + "---|" * len(SOURCES))
    for name, views, visibilities in sets:
        for true_visibility, cells in evaluate(views, visibilities, dcp, model).items():
            texts = [cell.text() if cell.outcomes else "-" for cell in cells]
            print(
                f"| {name} ({len(views)}) | {true_visibility:g} m | " + " | ".join(texts) + " |",
                flush=True,
            )
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
