"""Where the metres come from: scale sources for the learned metric depth, their stream state.

A monocular network's metres are only as good as its training cameras and scenes: on real vehicle
frames the shipped network's were 0.3x the truth while its relative shape was usable
(METHOD.md, section 5). A robot knows things about itself that fix the scale. This module turns
such knowledge into a *scale source*: per frame it proposes a ``ScaleEstimate`` (a factor that
multiplies the learned depth, how much to trust it, what it rests on) or refuses the frame, and a
per-stream ``StreamScale`` smooths the factors over time, holds the last good one for a while and
falls back to the learned scale. No rclpy, no torch: numpy, OpenCV and the camera maths only, so the
engine, ``process_bag`` and ``training.evaluate`` share it and it is tested alone.

Source here: the ground plane (``fit_ground``). A camera ``camera_height_m`` above the ground sees
the road or floor in the lower image; back-projecting the predicted depth there and fitting a
plane robustly gives the camera height in the network's units, and camera_height / fitted_height
is the scale (the classic scale recovery of monocular visual odometry on vehicles). Where the
plane explains the predicted depth, its exact depth replaces the network's; below the horizon
nothing visible lies beyond the ground, so the plane bounds every pixel's depth there.
Another source (sparse metric points: LiDAR, radar) plugs in as one more ``ScaleEstimate``
producer with its own name in ``SOURCE_PRIORITY``.

Frames: the camera's optical frame (REP-103: x right, y down, z forward); a plane is the points X
with ``normal . X = distance``, the normal pointing from the camera to the plane, so a level
camera sees the ground with normal (0, 1, 0). Pitch is the optical axis's tilt below the
horizontal (positive looks down, REP-103's pitch of a camera body): normal (0, cos p, sin p).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# ---------------------------------------------------------------------------------------------
# Scale estimates and their per-stream state (any source)

LEARNED = "learned"  # no source: the network's own metres (factor 1)
GROUND = "ground"
ANCHORS = "anchors"  # sparse metric points: a LiDAR, radar, stereo or ToF sensor (anchor_scale.py)
# The sources in the order they are trusted when several have a factor; the first with a live
# (fresh or held) factor is used: measured points before the ground's geometry.
SOURCE_PRIORITY = (ANCHORS, GROUND)


@dataclass(frozen=True)
class ScaleEstimate:
    """One frame's proposal of a scale source: metres = factor * the learned metres."""

    source: str  # GROUND, ... (never LEARNED: the learned scale needs no estimate)
    factor: float  # > 0, finite
    quality: float  # [0, 1]: how much of the frame supports it (ground: inlier share)
    details: dict = field(default_factory=dict)  # source-specific numbers, for reports


@dataclass(frozen=True)
class ScaleRefusal:
    """A source that had nothing to propose for this frame, and why: in words (``reason``, with
    the frame's numbers) and as one of a fixed set of kinds (``kind``, what /diagnostics counts:
    anchor_scale.REFUSAL_KINDS for the anchors)."""

    source: str
    reason: str
    kind: str = "other"


@dataclass(frozen=True)
class ScaleState:
    """The scale applied to one frame: what /diagnostics and the evaluation report."""

    source: str  # GROUND, ... or LEARNED (factor 1)
    factor: float  # what multiplied the learned depth
    held: bool = False  # the factor of an earlier frame: this frame's estimate was refused
    age_s: float = 0.0  # held: seconds since the factor was last measured (frames without stamps)
    age_in_frames: bool = False  # the frames carried no stamps: age_s counts frames
    quality: float = 0.0  # of the estimate the factor last followed
    measured: float = math.nan  # this frame's own estimate (NaN when refused)
    note: str = ""  # why this frame's estimate was refused, or why the source was dropped
    details: dict = field(default_factory=dict)  # this frame's estimate's (empty when held)
    refusals: dict = field(default_factory=dict)  # source -> why it refused this frame (any source)
    refusal_kinds: dict = field(default_factory=dict)  # source -> that refusal's kind

    @property
    def fell_back(self) -> bool:
        """The learned scale because a source had nothing (not because none is configured)."""
        return self.source == LEARNED and bool(self.note)

    def describe(self) -> str:
        """'ground plane (factor 1.73, inliers 64 %)', 'learned only', held and fallback states."""
        if self.source == LEARNED:
            return "learned only" + (f" ({self.note})" if self.note else "")
        name = SOURCE_NAMES.get(self.source, self.source)
        if self.held:
            age = f"{self.age_s:.0f} frames" if self.age_in_frames else f"{self.age_s:.1f} s"
            return (
                f"{name} held (factor {self.factor:.2f}, measured {age} ago; "
                f"this frame: {self.note})"
            )
        if self.source == GROUND:
            return f"{name} (factor {self.factor:.2f}, inliers {100 * self.quality:.0f} %)"
        if self.source == ANCHORS and "points" in self.details:
            return (
                f"{name} (factor {self.factor:.2f}, {self.details['points']} points, "
                f"residual {100 * self.details['residual']:.1f} %)"
            )
        return f"{name} (factor {self.factor:.2f})"


SOURCE_NAMES = {GROUND: "ground plane", ANCHORS: "anchors", LEARNED: "learned only"}


@dataclass(frozen=True)
class Smoothing:
    """How a source's factor is smoothed over a stream of frames.

    Factors are averaged in log space (a factor of 2 and one of 0.5 are equally wrong) with an
    exponential moving average whose weight follows the stamps: a frame dt seconds after the
    last moves the factor by 1 - exp(-dt / time_constant_s) of its difference, so the published
    metres change as slowly at 30 Hz as at 5 Hz. A frame whose factor differs from the smoothed
    one by more than ``outlier_ratio`` is not averaged in (a car filling the lower image, a
    kerb); ``outliers_to_restart`` such frames in a row that agree among themselves restart the
    smoothing there (the scale really changed). A gap of ``gap_reset_s`` without frames
    restarts it too (a new recording, a paused robot). A refused frame keeps the last factor
    for ``hold_s`` seconds of stamps, then the learned scale takes over.
    """

    time_constant_s: float = 1.0
    frame_weight: float = 0.2  # the EMA weight when frames carry no stamps
    outlier_ratio: float = 1.25
    outliers_to_restart: int = 5
    gap_reset_s: float = 5.0
    hold_s: float = 10.0
    hold_frames: int = 50  # the hold without stamps


class FactorSmoother:
    """The smoothed factor of one source over one stream of frames."""

    def __init__(self, smoothing: Smoothing = Smoothing()):
        self.smoothing = smoothing
        self.reset()

    def reset(self) -> None:
        self._log_factor: float | None = None
        self._quality = 0.0
        self._last_stamp: float | None = None
        self._measured_at: float | None = (
            None  # stamp (or frame count) of the last accepted estimate
        )
        self._frames = 0
        self._outliers: list[float] = []

    @property
    def factor(self) -> float | None:
        return None if self._log_factor is None else math.exp(self._log_factor)

    def update(
        self, estimate: ScaleEstimate | None, stamp_s: float | None
    ) -> tuple[float | None, float, str]:
        """Take this frame's estimate (None: refused); (the factor to apply or None, its age in
        seconds or frames, a note on what happened to the estimate)."""
        rules = self.smoothing
        self._frames += 1
        now = stamp_s if stamp_s is not None else float(self._frames)
        note = ""
        if self._last_stamp is not None and stamp_s is not None:
            gap = stamp_s - self._last_stamp
            if gap > rules.gap_reset_s or gap < 0:
                # A time jump (a bag looped, a camera restarted) or a long pause: what was
                # measured before says nothing reliable about now.
                note = f"restarted after a stamp gap of {gap:.1f} s"
                self.reset()
                self._frames = 1
        weight = rules.frame_weight
        if stamp_s is not None and self._last_stamp is not None:
            weight = 1.0 - math.exp(-max(stamp_s - self._last_stamp, 0.0) / rules.time_constant_s)
        self._last_stamp = stamp_s
        if estimate is not None:
            log_factor = math.log(estimate.factor)
            if self._log_factor is None:
                self._log_factor, self._quality, self._measured_at = (
                    log_factor,
                    estimate.quality,
                    now,
                )
                self._outliers = []
            elif abs(log_factor - self._log_factor) > math.log(rules.outlier_ratio):
                self._outliers.append(log_factor)
                recent = self._outliers[-rules.outliers_to_restart :]
                if len(recent) == rules.outliers_to_restart and max(recent) - min(
                    recent
                ) <= math.log(rules.outlier_ratio):
                    self._log_factor, self._outliers = float(np.median(recent)), []
                    self._quality, self._measured_at = estimate.quality, now
                    note = (
                        f"restarted: {rules.outliers_to_restart} frames in a row agreed on a new "
                        "factor"
                    )
                else:
                    note = (
                        f"outlier: this frame's factor {estimate.factor:.2f} is more than "
                        f"{rules.outlier_ratio:g}x from the smoothed {self.factor:.2f}"
                    )
            else:
                self._log_factor += weight * (log_factor - self._log_factor)
                self._quality, self._measured_at, self._outliers = estimate.quality, now, []
        if self._log_factor is None:
            return None, 0.0, note
        age = now - self._measured_at
        limit = rules.hold_s if stamp_s is not None else rules.hold_frames
        if age > limit:
            note = (
                f"no estimate for {age:.1f} {'s' if stamp_s is not None else 'frames'}, "
                f"beyond the hold of {limit:g}"
            )
            self.reset()
            self._last_stamp = stamp_s
            return None, age, note
        return self.factor, age, note

    @property
    def quality(self) -> float:
        return self._quality


class StreamScale:
    """The scale state of one stream of frames (a camera): a smoother per source. The engine
    owns one; ``reset()`` when the stream starts again (the node's activate and cleanup)."""

    def __init__(
        self, smoothing: Smoothing = Smoothing(), sources: tuple[str, ...] = SOURCE_PRIORITY
    ):
        self._smoothers = {source: FactorSmoother(smoothing) for source in sources}

    def reset(self) -> None:
        for smoother in self._smoothers.values():
            smoother.reset()

    def update(
        self, proposals: list[ScaleEstimate | ScaleRefusal], stamp_s: float | None
    ) -> ScaleState:
        """This frame's proposals (at most one per source) -> the scale to apply. Every source's
        smoother sees the frame, so each keeps its own hold and gap rules."""
        by_source = {proposal.source: proposal for proposal in proposals}
        unknown = set(by_source) - set(self._smoothers)
        if unknown:
            raise ValueError(
                f"unknown scale sources {sorted(unknown)}; known: {sorted(self._smoothers)}"
            )
        chosen: ScaleState | None = None
        notes = []
        for source, smoother in self._smoothers.items():
            proposal = by_source.get(source)
            if proposal is None:
                continue  # the source is off (no camera height): its state stays as it was
            estimate = proposal if isinstance(proposal, ScaleEstimate) else None
            factor, age, note = smoother.update(estimate, stamp_s)
            refused = proposal.reason if isinstance(proposal, ScaleRefusal) else note
            if factor is None:
                notes.append(f"{SOURCE_NAMES.get(source, source)}: {refused or note}")
                continue
            if chosen is None:
                held = estimate is None or note.startswith("outlier")
                chosen = ScaleState(
                    source,
                    factor,
                    held=held,
                    age_s=age if held else 0.0,
                    age_in_frames=stamp_s is None,
                    quality=smoother.quality,
                    measured=estimate.factor if estimate is not None else math.nan,
                    note=refused,
                    details={} if held else estimate.details,
                )
        refused = [p for p in proposals if isinstance(p, ScaleRefusal)]
        refusals = {p.source: p.reason for p in refused}
        kinds = {p.source: p.kind for p in refused}
        if chosen is None:
            return ScaleState(
                LEARNED, 1.0, note="; ".join(notes), refusals=refusals, refusal_kinds=kinds
            )
        return dataclasses.replace(chosen, refusals=refusals, refusal_kinds=kinds)


# ---------------------------------------------------------------------------------------------
# The ground plane


@dataclass(frozen=True)
class Mounting:
    """How the camera sits on the robot: what the ground source needs (EngineConfig's
    camera_height_m and camera_pitch_deg)."""

    height_m: float = 0.0  # above the ground; 0: unknown, no ground source
    pitch_deg: float = math.nan  # optical axis below the horizontal; NaN: unknown, estimated

    @property
    def pitch_known(self) -> bool:
        return math.isfinite(self.pitch_deg)

    def check(self) -> None:
        if not (math.isfinite(self.height_m) and self.height_m >= 0.0):
            raise ValueError(
                f"camera_height_m must be 0 (unknown) or a height in metres, got {self.height_m}"
            )
        if not (math.isnan(self.pitch_deg) or -MAX_PITCH_DEG <= self.pitch_deg <= MAX_PITCH_DEG):
            raise ValueError(
                f"camera_pitch_deg must be NaN (unknown) or within +-{MAX_PITCH_DEG:g} "
                f"degrees, got {self.pitch_deg}"
            )


# A camera pitched more than this sees too little ground ahead for the fit (and the ground's
# depth changes too fast with the row); also the limit of the parameter.
MAX_PITCH_DEG = 45.0


@dataclass(frozen=True)
class Pinhole:
    """Intrinsics of one image in pixels: pixel (u, v) looks along
    ((u - cx) / fx, (v - cy) / fy, 1)."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def centred(cls, width: int, height: int, focal_px: float) -> "Pinhole":
        """Square pixels, principal point at the image centre: a camera without calibration."""
        return cls(focal_px, focal_px, (width - 1) / 2.0, (height - 1) / 2.0)

    def resized(self, width: int, height: int, new_width: int, new_height: int) -> "Pinhole":
        """The same camera for the image resized from width x height to new_width x new_height
        (pixel centres at integer coordinates: u maps to (u + 0.5) * s - 0.5)."""
        sx, sy = new_width / width, new_height / height
        return Pinhole(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5
        )

    def ray_components(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """x / z of each column (1 x W) and y / z of each row (H x 1), float32: a plane's
        n . ray for every pixel is then one broadcast sum, without H x W x 3 arrays."""
        columns = (
            (np.arange(width, dtype=np.float32) - np.float32(self.cx)) / np.float32(self.fx)
        )[None, :]
        rows = ((np.arange(height, dtype=np.float32) - np.float32(self.cy)) / np.float32(self.fy))[
            :, None
        ]
        return columns, rows


@dataclass(frozen=True)
class GroundRules:
    """What counts as ground. Thresholds are relative to the fitted height, so a depth k times too
    long or short finds the same plane (the scale is what we look for). Defaults measured on the
    renderer's vehicle views (docs/depth.md)."""

    # Candidate pixels: at least this far below the horizon of the prior (degrees); nearer the
    # horizon the ground is far, the network's depth poor and a small pitch error large.
    min_below_horizon_deg: float = 2.0
    max_points: int = 2500  # the fit's subsampled grid (speed: a few ms a frame)
    hypotheses: int = 128  # RANSAC: 3-point planes tried
    scoring_points: int = 400  # ... each scored on this many points
    # |n . X - d| < band * d: for a point of the plane, a relative depth error e gives a
    # residual of e * d whatever its distance, so this is an 8 % depth error.
    inlier_band: float = 0.08
    min_band: float = 0.01  # the narrowest band (exact depth)
    # Depth counts as exact when the narrowest band holds this share of the wide band's points
    # (measured: about 0.2 for network depth, 0.6 and more for rendered depth).
    exact_share: float = 0.4
    min_inliers: int = 80
    min_inlier_share: float = 0.25  # of the candidate pixels
    # The normal's largest angle from the prior: a known pitch leaves slopes, roll and the
    # network's own tilt (up to 7 degrees measured); an unknown one the mounting range as well.
    max_tilt_known_deg: float = 10.0
    max_tilt_unknown_deg: float = 25.0
    min_depth_spread: float = 1.5  # inliers' 90th / 10th depth percentile: a plane, not a patch
    factor_range: tuple[float, float] = (0.1, 10.0)  # beyond: not the ground, whatever it fits


@dataclass(frozen=True)
class GroundPlane:
    """A plane fitted to back-projected depth, in the depth's units."""

    normal: np.ndarray  # unit, optical frame, from the camera to the ground
    distance: float  # camera to plane
    inliers: int
    candidates: int
    residual: float  # median |normal . X - distance| / distance of the inliers
    # With a known pitch: the median height of the inliers along the *prior* normal. The
    # network's plane is often tilted a few degrees (its depth errors grow with distance); the
    # camera height measured along the true vertical at the inliers' own distances is the
    # better scale (measured: delta<1.25 0.64 against 0.57 on the vehicle views).
    prior_height: float = math.nan
    band: float = 0.08  # the band the pixels on the plane lie in (relative to the distance)

    @property
    def inlier_share(self) -> float:
        return self.inliers / max(self.candidates, 1)

    @property
    def pitch_deg(self) -> float:
        """Tilt of the optical axis below the horizontal that this plane implies."""
        return math.degrees(math.atan2(self.normal[2], self.normal[1]))

    @property
    def roll_deg(self) -> float:
        return math.degrees(math.asin(float(np.clip(self.normal[0], -1.0, 1.0))))


def ground_normal(pitch_deg: float) -> np.ndarray:
    """The ground's normal in the optical frame of a camera pitched down by ``pitch_deg``."""
    pitch = math.radians(pitch_deg)
    return np.array([0.0, math.cos(pitch), math.sin(pitch)])


def _bands(rules: GroundRules) -> list[float]:
    """The inlier band, halved down to min_band: 8, 4, 2, 1 %."""
    bands = [rules.inlier_band]
    while bands[-1] / 2 >= rules.min_band * (1 - 1e-9):
        bands.append(bands[-1] / 2)
    return bands


def _ground_points(
    depth: np.ndarray, camera: Pinhole, prior: np.ndarray, rules: GroundRules
) -> tuple[np.ndarray, int]:
    """The pixels below the horizon that have depth, as 3-D points in the camera frame, and how
    many pixels of the subsampled grid lie below the horizon."""
    height, width = depth.shape
    # The subsampled grid: one step in rows and columns, about max_points pixels in the lower half.
    step = max(1, int(math.sqrt(height * width / 2 / rules.max_points)))
    vs, us = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    rays = np.stack(
        [(us - camera.cx) / camera.fx, (vs - camera.cy) / camera.fy, np.ones(us.shape)], axis=-1
    )
    below = rays @ prior / np.linalg.norm(rays, axis=-1) > math.sin(
        math.radians(rules.min_below_horizon_deg)
    )
    z = depth[vs, us].astype(np.float64)
    usable = below & np.isfinite(z) & (z > 0)
    candidates = int(below.sum())
    return rays[usable] * z[usable, None], candidates


def _ransac_plane(
    points: np.ndarray,
    prior: np.ndarray,
    max_tilt: float,
    bands: list[float],
    rules: GroundRules,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float, bool] | None:
    """The RANSAC plane (normal towards the ground, distance) and whether the depth looks
    exact; None when no hypothesis is ground-like."""
    # RANSAC: 3-point planes whose normal is ground-like, scored by how many points lie in the band.
    picks = rng.integers(0, len(points), size=(rules.hypotheses, 3))
    a, b, c = points[picks[:, 0]], points[picks[:, 1]], points[picks[:, 2]]
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1)
    ok = lengths > 1e-12
    normals[ok] /= lengths[ok, None]
    normals *= np.where(normals @ prior < 0, -1.0, 1.0)[:, None]  # towards the ground
    distances = np.einsum("ij,ij->i", normals, a)
    ok &= (distances > 0) & (normals @ prior >= math.cos(math.radians(max_tilt)))
    if not ok.any():
        return None
    normals, distances = normals[ok], distances[ok]
    # Hypotheses are scored on a random subset (enough to rank them; the refinement uses
    # every point): the full hypotheses x points matrix was most of the fit's time.
    scoring = points[rng.permutation(len(points))[: rules.scoring_points]].astype(np.float32)
    relative = np.abs(
        normals.astype(np.float32) @ scoring.T / distances.astype(np.float32)[:, None] - 1.0
    )
    # Network depth's errors are several per cent: the band that counts is the wide one. Depth
    # that is nearly exact (stereo, LiDAR-like, the renderer) shows itself by keeping many points
    # within the narrowest band; there a plane through the road and a sidewalk 15 cm above it can
    # win the wide band, and the road's own plane wins the narrow one. So with exact depth the
    # choice, and the refinement, go down the bands (8, 4, 2, 1 %) while each keeps at least
    # half of the last one's points. (Doing so on network depth measured worse: delta<1.25 0.49
    # against 0.55 with the pitch unknown on the vehicle views.)
    counts = [(relative < band).sum(axis=1) for band in bands]
    exact = counts[-1].max() >= rules.exact_share * counts[0].max()
    best, best_count = int(np.argmax(counts[0])), int(counts[0].max())
    for band_counts in counts[1:] if exact else ():
        if band_counts.max() < max(3, best_count // 2):
            break
        best, best_count = int(np.argmax(band_counts)), int(band_counts.max())
    return normals[best], float(distances[best]), exact


def _refine_plane(
    points: np.ndarray,
    normal: np.ndarray,
    distance: float,
    prior: np.ndarray,
    bands: list[float],
    exact: bool,
) -> tuple[np.ndarray, float]:
    """The plane refined by total least squares on its inliers."""
    # Refined by total least squares on the inliers (narrowing the band with exact depth, as above).
    previous = 0
    for band in bands if exact else bands[:1] * 2:
        inlier = np.abs(points @ normal - distance) < band * distance
        count = int(inlier.sum())
        if count < max(3, previous // 2):
            break
        previous = count
        centre = points[inlier].mean(axis=0)
        _, _, vt = np.linalg.svd(points[inlier] - centre, full_matrices=False)
        refined = vt[2] if vt[2] @ prior >= 0 else -vt[2]
        if refined @ centre <= 0:
            break
        normal, distance = refined, float(refined @ centre)
    return normal, distance


def _inlier_plane(
    points: np.ndarray,
    normal: np.ndarray,
    distance: float,
    prior: np.ndarray,
    known: bool,
    candidates: int,
    rules: GroundRules,
) -> tuple[GroundPlane, np.ndarray]:
    """The ground plane described by its inliers in the wide band, and that inlier mask."""
    # What counts as ground (gates, share, apply_ground) keeps the wide band: network depth's.
    inlier = np.abs(points @ normal - distance) < rules.inlier_band * distance
    count = int(inlier.sum())
    residual = (
        float(np.median(np.abs(points[inlier] @ normal - distance)) / distance)
        if count
        else math.inf
    )
    prior_height = float(np.median(points[inlier] @ prior)) if known and count else math.nan
    plane = GroundPlane(
        normal, distance, count, candidates, residual, prior_height, rules.inlier_band
    )
    return plane, inlier


def fit_ground(
    depth: np.ndarray,
    camera: Pinhole,
    pitch_deg: float = math.nan,
    rules: GroundRules = GroundRules(),
    seed: int = 0,
) -> tuple[GroundPlane | None, str]:
    """The ground plane in ``depth`` (H x W, any units; non-finite and <= 0 ignored) seen by
    ``camera``, or None and why not. ``pitch_deg`` NaN: unknown (level prior, wider tolerance).
    Deterministic: the RANSAC draws come from ``seed``."""
    known = math.isfinite(pitch_deg)
    prior = ground_normal(pitch_deg if known else 0.0)
    max_tilt = rules.max_tilt_known_deg if known else rules.max_tilt_unknown_deg
    points, candidates = _ground_points(depth, camera, prior, rules)
    if len(points) < rules.min_inliers:
        return None, (
            f"too few pixels with depth below the horizon ({len(points)} of {candidates} "
            f"candidates, need {rules.min_inliers})"
        )
    bands = _bands(rules)
    fitted = _ransac_plane(points, prior, max_tilt, bands, rules, np.random.default_rng(seed))
    if fitted is None:
        return None, (
            f"no plane within {max_tilt:g} deg of the ground's expected orientation "
            "(a wall or an object in front?)"
        )
    normal, distance, exact = fitted
    normal, distance = _refine_plane(points, normal, distance, prior, bands, exact)
    plane, inlier = _inlier_plane(points, normal, distance, prior, known, candidates, rules)

    tilt = math.degrees(math.acos(float(np.clip(normal @ prior, -1.0, 1.0))))
    if tilt > max_tilt:
        return (
            None,
            f"the plane is tilted {tilt:.0f} deg from the expected ground (limit {max_tilt:g})",
        )
    if plane.inliers < rules.min_inliers or plane.inlier_share < rules.min_inlier_share:
        return None, (
            f"too little ground: {plane.inliers} inliers, {100 * plane.inlier_share:.0f} % of "
            f"the lower image (need {rules.min_inliers} and {100 * rules.min_inlier_share:.0f} %)"
        )
    depths = points[inlier, 2]
    spread = float(np.percentile(depths, 90) / max(np.percentile(depths, 10), 1e-12))
    if spread < rules.min_depth_spread:
        return None, (
            f"the plane's inliers span too little depth ({spread:.2f}x, need "
            f"{rules.min_depth_spread:g}x): a patch, not the ground"
        )
    return plane, ""


def ground_estimate(
    depth: np.ndarray, camera: Pinhole, mounting: Mounting, rules: GroundRules = GroundRules()
) -> ScaleEstimate | ScaleRefusal:
    """The ground source's proposal for one frame of learned metric depth; a ScaleEstimate
    carries its plane in ``details["plane"]`` (in the units of ``depth``)."""
    plane, reason = fit_ground(depth, camera, mounting.pitch_deg, rules)
    if plane is None:
        return ScaleRefusal(GROUND, reason)
    fitted = plane.prior_height if mounting.pitch_known else plane.distance
    factor = mounting.height_m / fitted if fitted > 0 else math.inf
    low, high = rules.factor_range
    if not low <= factor <= high:
        return ScaleRefusal(
            GROUND,
            f"the plane gives a factor of {factor:.2f}, outside "
            f"[{low:g}, {high:g}]: not the ground",
        )
    return ScaleEstimate(
        GROUND,
        factor,
        plane.inlier_share,
        {
            "plane": plane,
            "fitted_height": fitted,
            "inliers": plane.inliers,
            "residual": plane.residual,
            "pitch_deg": plane.pitch_deg,
            "roll_deg": plane.roll_deg,
        },
    )


# ---------------------------------------------------------------------------------------------
# Depth from the plane, and what each pixel's depth rests on

# What a pixel's published depth rests on (EngineResult.depth_support), from most to least trusted.
SUPPORT_NONE = 0  # no finite depth: NaN, or beyond the range (+inf, -inf)
SUPPORT_LEARNED = 1  # the network's depth at the network's own scale
SUPPORT_SCALED = 2  # the network's depth, rescaled by a scale source
SUPPORT_BOUNDED = 3  # the network put it beyond the ground: the plane's depth bounds it
SUPPORT_PLANE = 4  # the ground plane's depth (the network's depth lies on the fitted plane)
SUPPORT_ANCHORED = 5  # corrected by this frame's metric points nearby (anchor_scale.apply_anchors)

# depth/confidence per support class: the share of such pixels within 25 % of the truth
# (delta < 1.25) on the renderer's vehicle views of seed 1, which no gate uses (15 views, fog from
# 50 m to clear, native size, max_side 320), with the shipped checkpoint:
#   python -m training.evaluate --checkpoint dehaze_ros/checkpoints/default.pt --data vehicle:15 \
#       --seed 1 --max-side 2048 --engine-max-side 320 --scale-sources learned,ground \
#       --max-depth-m 80
# (its table "What each pixel's depth rests on"). A calibrated rate for pixels of that kind, not a
# per-pixel error bar; another checkpoint should be measured again.
CONFIDENCE = {
    SUPPORT_NONE: 0.0,
    SUPPORT_LEARNED: 0.28,
    SUPPORT_SCALED: 0.47,
    SUPPORT_BOUNDED: 0.91,
    SUPPORT_PLANE: 0.88,
    SUPPORT_ANCHORED: 0.94,
}
# SUPPORT_ANCHORED: the same views and seed with --scale-sources learned,anchors (a synthetic
# 32-beam LiDAR, returns up to 30 m); there the pixels scaled by the anchors' factor alone (far
# from every point) were within 25 % in 38 % of cases, below the ground's 47 % kept for SCALED.


def confidence_map(support: np.ndarray) -> np.ndarray:
    """depth/confidence: float32 in [0, 1] per pixel from its support class (CONFIDENCE)."""
    table = np.zeros(256, dtype=np.float32)
    for code, value in CONFIDENCE.items():
        table[code] = value
    return table[support]


def apply_ground(
    depth_small: np.ndarray,
    width: int,
    height: int,
    camera: Pinhole,
    factor: float,
    plane: GroundPlane | None,
    mounting: Mounting,
) -> tuple[np.ndarray, np.ndarray]:
    """The learned metres ``depth_small`` (the network's own pixels) rescaled by ``factor`` and
    brought to width x height (nearest neighbour, as the engine upsamples depth) for the image
    ``camera`` describes; with a known pitch and this frame's ``plane`` (fitted to
    ``depth_small``, its units), the ground's own depth where the learned depth lies on the
    plane, and every pixel below the horizon bounded by the ground's depth. Returns (depth
    float32, support uint8), both height x width.

    The ground's depth uses the known pitch and camera height (exact where the ground is flat),
    not the fitted normal: a plane fitted to network depth is often tilted a few degrees, and far
    rows magnify that. Without a known pitch only the scale is applied (measured: the ground's
    depth from the fitted orientation did not help, and its bound hurt). With no roll, that
    depth is a function of the row alone: one value per row, broadcast.
    """
    small_height, small_width = depth_small.shape
    # What each pixel rests on is decided on the network's own pixels and brought to full size
    # like the depth itself: the same answer for a quarter of the work or less.
    scaled_small = depth_small * np.float32(factor)
    support = np.isfinite(scaled_small).view(np.uint8) * np.uint8(
        SUPPORT_SCALED
    )  # else SUPPORT_NONE (0)
    depth = resize_nearest(scaled_small, width, height)
    if plane is None or not mounting.pitch_known:
        return depth, resize_nearest(support, width, height)
    columns, rows = camera.resized(width, height, small_width, small_height).ray_components(
        small_width, small_height
    )
    prior = ground_normal(mounting.pitch_deg)
    # Without roll the horizon is a row and everything below it one block of rows: the work is
    # done on that block alone (the sky half of a vehicle's view costs nothing).
    first = _first_row_below(prior, rows)
    if first is None:
        return depth, resize_nearest(support, width, height)
    normal = plane.normal.astype(np.float32)
    below_small = depth_small[first:]
    with np.errstate(invalid="ignore", over="ignore"):
        # The pixels the plane explains: on the network's own plane, in its units.
        on_plane = np.abs(
            below_small * (normal[0] * columns + normal[1] * rows[first:] + normal[2])
            - np.float32(plane.distance)
        ) < np.float32(plane.band * plane.distance)
        # Nothing visible lies beyond the ground below the horizon (NaN compares False: stays NaN).
        ground_small = _ground_depth(prior, rows[first:], mounting.height_m)
        np.copyto(
            support[first:], np.uint8(SUPPORT_BOUNDED), where=scaled_small[first:] > ground_small
        )
        np.copyto(support[first:], np.uint8(SUPPORT_PLANE), where=on_plane)
    support = resize_nearest(support, width, height)
    # The depth itself at full size: the ground's depth per full-size row (exact, not blocky).
    _, rows = camera.ray_components(width, height)
    first = _first_row_below(prior, rows)
    if first is not None:
        ground = _ground_depth(prior, rows[first:], mounting.height_m)
        lower = depth[first:]
        # np.minimum keeps NaN: unknown stays unknown.
        np.minimum(lower, ground, out=lower)
        np.copyto(
            lower, np.broadcast_to(ground, lower.shape), where=support[first:] == SUPPORT_PLANE
        )
    return depth, support


def _first_row_below(normal: np.ndarray, rows: np.ndarray) -> int | None:
    """The first row whose rays meet the ground (``normal`` without roll, rows' y / z, H x 1),
    or None when none does. n . ray grows with the row, so those rows are one block."""
    below = np.flatnonzero(normal[1] * rows[:, 0] + normal[2] > 0)
    return int(below[0]) if below.size else None


def _ground_depth(normal: np.ndarray, rows: np.ndarray, height_m: float) -> np.ndarray:
    """The ground's depth (H x 1) for the rows whose rays meet it (y / z below the horizon)."""
    return (np.float32(height_m) / (normal[1] * rows + normal[2])).astype(np.float32)


def resize_nearest(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """``values`` (depth or support codes) at width x height by nearest neighbour, as the engine
    upsamples depth (dehaze_ros.upsampling.upsample_depth); a new array, also at the same size."""
    if values.shape == (height, width):
        return values.copy()
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_NEAREST)
