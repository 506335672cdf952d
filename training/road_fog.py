"""Fog at the visibilities a vehicle drives in: the sets ``training.evaluate --visibilities`` makes.

Road sets, rendered by ``dehaze_ros.sim.scenes`` at the frame shapes of real cameras
(``ROAD_FRAMES``: 4:3, 16:9 and the 1242 x 375 of KITTI's), with exact metric depth and the sky
at +inf:

* ``outdoor``: the renderer's fixed vehicle-scale validation views (the scenes and poses of the
  evaluator's ``outdoor`` set: the draws do not depend on the image size);
* ``drive``: one scene with the camera driving down its road (``SceneRenderer(vehicle_scale=True)``)
  at ``DRIVE_SPEED_MPS``, a frame every ``DRIVE_FRAME_GAP_S`` seconds.

Fog of visibility V: beta = 3.912 / V (Koschmieder, 2 % contrast), a grey airlight of 0.9 and no
noise or JPEG (the evaluator's fixed haze). ``clear`` is no fog at all: the sky keeps its blue
(any finite V turns the +inf sky into airlight), so its rows say what a dehazer does to a frame
that needs nothing.

RGB-D sets (Middlebury, the RGB-D frames, the renderer's indoor views) are hazed "at the same
optical depths": their transmission at their median depth is the road frames' at theirs,
exp(-3.912 * ROAD_MEDIAN_DEPTH_M / V). Much of a road frame is road a few metres from the camera,
so that median is short (10 m) and these sets stay lighter than the road's far field.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from dehaze_ros.haze import synthesize_haze
from dehaze_ros.sim.scenes import RenderedFrame, SceneRenderer, outdoor_validation_view
from training.data.common import KOSCHMIEDER, Sample, to_float

ROAD_KINDS = ("outdoor", "drive")
CLEAR = math.inf
DEFAULT_VISIBILITIES_M = (30.0, 50.0, 100.0, 150.0, 300.0, CLEAR)
# Natural frame sizes (width, height) by name; any WxH is accepted as well. The evaluator caps the
# longer side at its --max-side, keeping the shape.
ROAD_FRAMES = {"4:3": (640, 480), "16:9": (960, 540), "1242x375": (1242, 375)}
AIRLIGHT = 0.9
# The road frames' median finite depth, rounded: the median over outdoor:8 of each view's is 4.6 m
# (low robot cameras see mostly ground), over drive:8 15.6 m (a truck's cab); 11.5 m over all 16
# (4:3 frames at 320 x 240, 2026-12-07). RGB-D sets then get t 0.27 at V = 30 m, 0.68 at 100 m.
ROAD_MEDIAN_DEPTH_M = 10.0
DRIVE_SPEED_MPS = 10.0
DRIVE_FRAME_GAP_S = 3.0
# The renderer's scene of this seed (plus the evaluator's --seed): seed 2 is an urban street with
# parked cars seen from a truck's cab 2.3 m up, the KITTI-like case; seeds 0 and 1 put the camera
# on a rural road and on a sidewalk.
DRIVE_SCENE_SEED = 2


def parse_visibilities(text: str) -> list[float]:
    """``30,50,clear`` -> [30.0, 50.0, inf]; metres > 0, or ``clear``."""
    values = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        if part in ("clear", "inf"):
            values.append(CLEAR)
            continue
        try:
            value = float(part.removesuffix("m"))
        except ValueError:
            value = -1.0
        if not value > 0.0:
            raise ValueError(f"--visibilities: expected metres > 0 or 'clear', got {part!r}")
        values.append(value)
    if not values:
        raise ValueError("--visibilities: no visibility given")
    return values


def visibility_label(visibility_m: float) -> str:
    return "clear" if math.isinf(visibility_m) else f"V={visibility_m:g}m"


def parse_aspects(text: str) -> list[str]:
    """Frame shapes by name (``ROAD_FRAMES``) or as WIDTHxHEIGHT."""
    aspects = [part.strip() for part in text.split(",") if part.strip()]
    for aspect in aspects:
        natural_size(aspect)
    if not aspects:
        raise ValueError("--aspects: no frame shape given")
    return aspects


def natural_size(aspect: str) -> tuple[int, int]:
    if aspect in ROAD_FRAMES:
        return ROAD_FRAMES[aspect]
    width, sep, height = aspect.partition("x")
    if sep and width.isdigit() and height.isdigit() and int(width) >= 16 and int(height) >= 16:
        return int(width), int(height)
    raise ValueError(
        f"--aspects: {aspect!r} is neither one of {', '.join(ROAD_FRAMES)} nor WIDTHxHEIGHT "
        "(each at least 16)"
    )


def frame_size(aspect: str, max_side: int) -> tuple[int, int]:
    """(width, height) of a road frame: the aspect's natural size, the longer side at most
    max_side."""
    width, height = natural_size(aspect)
    scale = min(1.0, max_side / max(width, height))
    return max(16, round(width * scale)), max(16, round(height * scale))


def median_transmission(visibility_m: float) -> float:
    """The transmission at the median depth that puts an RGB-D scene at the road's optical depth."""
    return math.exp(-KOSCHMIEDER * ROAD_MEDIAN_DEPTH_M / visibility_m)


def describe(visibilities: list[float], aspects: list[str]) -> str:
    """summary.md's line on the fog, for whoever reads the table later."""
    shown = ", ".join(visibility_label(v) for v in visibilities) or "the --visibility-m above"
    return (
        f"- fog (training.road_fog): {shown}; road frames {', '.join(aspects or ['4:3'])} "
        f"(natural sizes {ROAD_FRAMES}, capped at the resolution above), "
        f"beta = {KOSCHMIEDER} / V, airlight {AIRLIGHT}, "
        f"clear = no fog; RGB-D sets at the road's optical depth at the median depth "
        f"(t = exp(-{KOSCHMIEDER} x {ROAD_MEDIAN_DEPTH_M:g} m / V))"
    )


def render_road(
    kind: str, count: int, width: int, height: int, seed: int = 0
) -> list[RenderedFrame]:
    """The clear frames of a road set (rendered once; fog is laid over them per visibility)."""
    if kind == "outdoor":
        return [outdoor_validation_view(index, width, height, seed) for index in range(count)]
    if kind != "drive":
        raise ValueError(f"road set kind must be one of {ROAD_KINDS}, got {kind!r}")
    # Long enough a clear road for the whole drive; the scene depends on the seed only.
    loop_s = DRIVE_FRAME_GAP_S * count + DRIVE_FRAME_GAP_S
    renderer = SceneRenderer(
        width,
        height,
        seed=DRIVE_SCENE_SEED + seed,
        vehicle_scale=True,
        speed_mps=DRIVE_SPEED_MPS,
        loop_s=loop_s,
    )
    return [renderer.render(index * DRIVE_FRAME_GAP_S) for index in range(count)]


def fogged(frame: RenderedFrame, visibility_m: float, name: str) -> Sample:
    """``frame`` in fog of visibility ``visibility_m`` (inf: clear, untouched)."""
    clear = to_float(frame.rgb)
    # beta 0 keeps the sky (+inf depth) clear: 0 * inf is taken as no fog by the haze model.
    beta = 0.0 if math.isinf(visibility_m) else KOSCHMIEDER / visibility_m
    hazy, transmission = synthesize_haze(clear, frame.depth_m, beta, AIRLIGHT)
    return Sample(
        hazy,
        clear,
        frame.depth_m,
        True,
        name,
        focal_px=float(frame.K[0, 0]),
        transmission=transmission,
        airlight=np.full(3, AIRLIGHT, np.float32),
        camera_height_m=frame.camera_height_m,
        camera_pitch_deg=frame.camera_pitch_deg,
    )


def road_samples(frames: list[RenderedFrame], visibility_m: float) -> Iterator[Sample]:
    for index, frame in enumerate(frames):
        yield fogged(frame, visibility_m, f"view{index}")
