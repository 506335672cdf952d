"""Metres from sparse metric points: a LiDAR, a radar, a stereo or ToF sensor (issue 26, item 2).

A robot that carries a range sensor knows the true distance of a few thousand points per frame.
Projected into the image they fix the learned depth's scale (one factor for the frame, smoothed
per stream like the ground's: ``metric_scale.StreamScale``) and, where they are dense enough,
its shape: the residual log ratio truth / prediction at the anchors, spread over the image by
normalised convolution (a Gaussian of ``AnchorRules.spread_deg``), corrects the network locally
and fades to the global factor away from the anchors. In fog a LiDAR loses its far returns; the
fit needs none of them (the factor comes from whatever range the returns cover).

Every way a cloud can be useless is a counted, reported refusal (``ScaleRefusal`` with the counts
in words), never an exception and never a silent wrong scale: no points, NaN points, all behind
the camera, outside the image, too few left, a cloud too old or too new for the frame.

Frames: points are in the camera's optical frame (REP-103: x right, y down, z forward), metres.
Transforming a sensor's cloud into it is the caller's (the node: tf2 or a static extrinsic,
``extrinsic_matrix``). No rclpy, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from dehaze_ros.metric_scale import ANCHORS, Pinhole, ScaleEstimate, ScaleRefusal

FITS = ("scale", "scale_shift")

# Why a frame had no anchor factor, as /diagnostics counts it ("frames refused: KIND"): a fixed
# set of keys whatever the reasons' numbers. Each refusal names its kind where it is made.
STALE = "stale"
TOO_FEW = "too few anchors"
DISAGREE = "the anchors disagree"
NO_TRANSFORM = "no transform"
FRAME_MISMATCH = "frame mismatch"
NO_CLOUD = "no readable cloud"
EMPTY = "empty cloud"
UNCALIBRATED = "no calibrated camera_info"
OTHER = "other"
REFUSAL_KINDS = (
    STALE,
    TOO_FEW,
    DISAGREE,
    NO_TRANSFORM,
    FRAME_MISMATCH,
    NO_CLOUD,
    EMPTY,
    UNCALIBRATED,
    OTHER,
)


@dataclass(frozen=True)
class AnchorCloud:
    """Metric points for one frame: N x 3 (x, y, z) in the camera optical frame, metres. NaN and
    inf rows are allowed (a LiDAR's missing returns): they are counted and dropped."""

    points: np.ndarray
    stamp_s: float | None = None  # the cloud's time (header stamp); None: taken as the frame's
    problem: str = ""  # why this frame has no usable cloud (the input's words)
    problem_kind: str = OTHER  # that problem's kind (REFUSAL_KINDS)

    @classmethod
    def refused(cls, problem: str, kind: str = OTHER) -> "AnchorCloud":
        """No points for this frame, and why (no transform, no readable cloud yet)."""
        if kind not in REFUSAL_KINDS:
            raise ValueError(f"refusal kind must be one of {REFUSAL_KINDS}, got {kind!r}")
        return cls(np.zeros((0, 3), dtype=np.float32), None, problem, kind)

    @classmethod
    def of(cls, points, stamp_s: float | None = None) -> "AnchorCloud":
        array = np.asarray(points, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != 3:
            raise ValueError(f"anchor points must be N x 3 (x, y, z), got shape {array.shape}")
        return cls(array, stamp_s)


@dataclass(frozen=True)
class AnchorRules:
    """How anchors are used. Defaults measured on the renderer's vehicle views and RGB-D frames
    with synthetic LiDAR (docs/depth.md), tuned on the development seed only."""

    min_points: int = 20  # anchors with a finite prediction needed for a factor
    max_age_s: float = 0.15  # |frame stamp - cloud stamp| beyond this: stale, refused
    near_m: float = 0.1  # closer points are the sensor's own body or noise
    # Robust fit: log ratios further than this many MADs (at least min_band) from the median are
    # outliers (a point seen by the sensor but hidden from the camera, a moving object).
    mad_band: float = 3.0
    min_band: float = math.log(1.1)
    fit: str = "scale"  # scale | scale_shift (affine in inverse depth; measured)
    # The local correction: residual log ratios spread by a Gaussian this wide (degrees of view),
    # weighted against the global factor by ``prior_weight`` (anchor-equivalents per pixel area).
    refine: bool = True
    spread_deg: float = 0.8
    prior_weight: float = 0.05
    # Edge-aware spreading: an anchor corrects pixels whose predicted depth is near its own
    # (a bilateral grid of layers this far apart in log depth; 0 = the image plane only), so a
    # near object's points do not bend the background beside it.
    layer_step: float = 0.0
    # The error's trend with distance, for pixels beyond the anchors' reach (fog): the slope of
    # log(truth / prediction) against log prediction, fitted on the anchors (clipped to
    # max_slope in size), carries the correction on past their far end (95th percentile).
    trend: bool = True
    max_slope: float = 0.5

    def check(self) -> None:
        if self.min_points < 3:
            raise ValueError(f"anchor min_points must be at least 3, got {self.min_points}")
        if not (math.isfinite(self.max_age_s) and self.max_age_s >= 0):
            raise ValueError(f"anchor max_age_s must be a finite number >= 0, got {self.max_age_s}")
        if self.fit not in FITS:
            raise ValueError(f"anchor fit must be one of {FITS}, got {self.fit!r}")
        if not self.spread_deg > 0:
            raise ValueError(f"anchor spread_deg must be > 0, got {self.spread_deg}")
        for name in ("near_m", "prior_weight", "layer_step", "max_slope"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"anchor {name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class Projected:
    """The anchors that land on the depth image: pixel indices, their true depth z (metres),
    the prediction there, and what was dropped on the way (counts by reason)."""

    rows: np.ndarray
    cols: np.ndarray
    z: np.ndarray
    predicted: np.ndarray
    counts: dict


def extrinsic_matrix(values) -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] (the sensor frame's pose in the camera optical frame, as a tf2
    static transform gives it) -> 4 x 4 matrix taking sensor points to camera points."""
    values = [float(v) for v in values]
    if len(values) != 7 or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"an extrinsic is 7 finite numbers [x, y, z, qx, qy, qz, qw], got {values}"
        )
    x, y, z, qx, qy, qz, qw = values
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not 0.9 < norm < 1.1:
        raise ValueError(f"the extrinsic's quaternion must have unit length, got length {norm:.3f}")
    qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
    ]
    matrix[:3, 3] = [x, y, z]
    return matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """N x 3 points through a 4 x 4 rigid transform (float32; NaN rows stay NaN)."""
    return (points @ matrix[:3, :3].T.astype(np.float32) + matrix[:3, 3].astype(np.float32)).astype(
        np.float32
    )


def project(depth: np.ndarray, camera: Pinhole, cloud: AnchorCloud, near_m: float) -> Projected:
    """The cloud's points on ``depth`` (the network's pixels; ``camera`` describes that image).
    Where several points share a pixel the nearest is kept (the one the camera sees)."""
    height, width = depth.shape
    points = cloud.points
    finite = np.isfinite(points).all(axis=1)
    in_front = finite & (points[:, 2] > near_m)
    kept = points[in_front]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(kept[:, 0] / kept[:, 2] * camera.fx + camera.cx)
        v = np.rint(kept[:, 1] / kept[:, 2] * camera.fy + camera.cy)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    rows, cols, z = v[inside].astype(np.int64), u[inside].astype(np.int64), kept[inside, 2]
    # The nearest point per pixel (the one the camera sees).
    nearest = np.full(height * width, np.inf, dtype=np.float32)
    np.minimum.at(nearest, rows * width + cols, z)
    pixels = np.flatnonzero(np.isfinite(nearest))
    z_px = nearest[pixels]
    rows, cols = pixels // width, pixels % width
    predicted = depth[rows, cols]
    usable = np.isfinite(predicted) & (predicted > 0)
    counts = {
        "points": int(points.shape[0]),
        "not finite": int((~finite).sum()),
        "behind or too near": int((finite & ~in_front).sum()),
        "outside the image": int((~inside).sum()),
        "hidden behind nearer points": int(inside.sum() - pixels.size),
        "no prediction there": int((~usable).sum()),
        "used": int(usable.sum()),
    }
    return Projected(rows[usable], cols[usable], z_px[usable], predicted[usable], counts)


def _counts_text(counts: dict) -> str:
    dropped = ", ".join(
        f"{n} {reason}" for reason, n in counts.items() if reason not in ("points", "used") and n
    )
    return f"{counts['points']} points" + (f" ({dropped})" if dropped else "")


def _cloud_refusal(
    cloud: AnchorCloud | None, frame_stamp_s: float | None, rules: AnchorRules
) -> ScaleRefusal | None:
    """Why this frame's cloud cannot give a scale before any projection (None: it may)."""
    if cloud is None:
        return ScaleRefusal(ANCHORS, "no anchor cloud for this frame", NO_CLOUD)
    if cloud.problem:
        return ScaleRefusal(ANCHORS, cloud.problem, cloud.problem_kind)
    if cloud.stamp_s is not None and frame_stamp_s is not None:
        age = frame_stamp_s - cloud.stamp_s
        if abs(age) > rules.max_age_s:
            when = "older" if age > 0 else "newer"
            return ScaleRefusal(
                ANCHORS,
                f"stale: the cloud is {abs(age):.2f} s {when} than the frame "
                f"(anchor_max_age_s {rules.max_age_s:g})",
                STALE,
            )
    if cloud.points.shape[0] == 0:
        return ScaleRefusal(ANCHORS, "the anchor cloud has no points", EMPTY)
    return None


def _trend(
    projected, inliers: np.ndarray, log_ratio: np.ndarray, log_factor: float, rules: AnchorRules
) -> tuple[np.ndarray, float, float]:
    """The factor's trend with predicted depth (rules.trend): the fitted log ratio per point, the
    slope and the log of the anchors' far end beyond which it applies."""
    slope = 0.0
    log_pred = np.log(projected.predicted[inliers].astype(np.float64))
    centre_log = float(log_pred.mean())
    spread = log_pred - centre_log
    if float(np.mean(spread**2)) > 1e-6:
        slope = float(
            np.clip(
                np.mean(spread * (log_ratio[inliers] - log_factor)) / np.mean(spread**2),
                -rules.max_slope,
                rules.max_slope,
            )
        )
    # Applied only beyond the anchors' far end (their 95th percentile of predicted depth):
    # inside it the points themselves correct the depth (refine).
    far_log = float(np.percentile(log_pred, 95))
    fitted = log_factor + slope * np.maximum(
        np.log(projected.predicted.astype(np.float64)) - far_log, 0.0
    )
    return fitted, slope, far_log


def anchor_estimate(
    depth: np.ndarray,
    camera: Pinhole,
    cloud: AnchorCloud | None,
    frame_stamp_s: float | None,
    rules: AnchorRules = AnchorRules(),
) -> ScaleEstimate | ScaleRefusal:
    """This frame's scale from the anchors (``depth``: the network's metres at its own size,
    ``camera`` for that size): a ``ScaleEstimate`` whose factor multiplies the learned depth and
    whose details carry what ``apply_anchors`` needs, or a ``ScaleRefusal`` saying why not."""
    refusal = _cloud_refusal(cloud, frame_stamp_s, rules)
    if refusal is not None:
        return refusal
    projected = project(depth, camera, cloud, rules.near_m)
    counts = projected.counts
    if counts["used"] < rules.min_points:
        if counts["not finite"] == counts["points"]:
            why = "no finite point"
        elif counts["behind or too near"] + counts["not finite"] == counts["points"]:
            why = "every point behind the camera"
        else:
            why = f"{counts['used']} usable, {rules.min_points} needed"
        return ScaleRefusal(ANCHORS, f"too few anchors: {why}; {_counts_text(counts)}", TOO_FEW)
    log_ratio = np.log(projected.z.astype(np.float64) / projected.predicted.astype(np.float64))
    centre = float(np.median(log_ratio))
    mad = 1.4826 * float(np.median(np.abs(log_ratio - centre)))
    inliers = np.abs(log_ratio - centre) <= max(rules.mad_band * mad, rules.min_band)
    if inliers.sum() < rules.min_points:
        return ScaleRefusal(
            ANCHORS,
            f"the anchors disagree: {int(inliers.sum())} of {log_ratio.size} "
            f"consistent, {rules.min_points} needed",
            DISAGREE,
        )
    log_factor = float(np.mean(log_ratio[inliers]))
    fitted = np.full(log_ratio.shape, log_factor)
    slope = 0.0
    if rules.trend:
        fitted, slope, far_log = _trend(projected, inliers, log_ratio, log_factor, rules)
    shift = None
    if rules.fit == "scale_shift":
        shift = _inverse_shift(projected, inliers, math.exp(log_factor))
        if shift is not None:
            # The shift replaces the trend: the model is 1 / (a / (factor d) + b).
            slope = 0.0
            model = _shifted(math.exp(log_factor) * projected.predicted.astype(np.float64), *shift)
            fitted = np.log(model / projected.predicted.astype(np.float64))
    residual = float(np.median(np.abs(log_ratio[inliers] - fitted[inliers])))
    details = {
        "points": int(inliers.sum()),
        "seen": counts["points"],
        "counts": counts,
        "residual": math.expm1(residual),
        "fit": rules.fit,
        # This frame's own factor: the residuals below are relative to it, and apply_anchors
        # moves them onto the smoothed factor it is given.
        "log_factor": log_factor,
    }
    if shift is not None:
        details["inverse_shift"] = shift
    if slope:
        details["trend"] = (slope, math.exp(far_log))
    if rules.refine:
        details["residual_log"] = (
            projected.rows[inliers],
            projected.cols[inliers],
            (log_ratio[inliers] - fitted[inliers]).astype(np.float32),
        )
    return ScaleEstimate(ANCHORS, math.exp(log_factor), float(inliers.mean()), details)


def _inverse_shift(
    projected: Projected, inliers: np.ndarray, factor: float
) -> tuple[float, float] | None:
    """1 / z = a / (factor d) + b by least squares on the inliers (``scale_shift``): (a, b), or
    None when the fit would turn some anchors' depth negative (a <= 0)."""
    inverse_pred = 1.0 / (factor * projected.predicted[inliers].astype(np.float64))
    inverse_true = 1.0 / projected.z[inliers].astype(np.float64)
    design = np.stack([inverse_pred, np.ones_like(inverse_pred)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, inverse_true, rcond=None)
    if not (math.isfinite(a) and math.isfinite(b) and a > 0):
        return None
    return float(a), float(b)


def _shifted(scaled: np.ndarray, a: float, b: float) -> np.ndarray:
    """1 / (a / scaled + b); where that is not a positive depth (a negative b past the
    anchors' reach), the scaled depth itself rather than a made-up +inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = a / scaled + b
        return np.where(inverse > 0, 1.0 / inverse, scaled)


def apply_anchors(
    depth_small: np.ndarray,
    camera_small: Pinhole,
    factor: float,
    details: dict | None,
    rules: AnchorRules = AnchorRules(),
) -> tuple[np.ndarray, np.ndarray]:
    """The learned metres (the network's own pixels) times ``factor``, corrected by this frame's
    anchors when ``details`` are this frame's (None for a held factor). Returns (depth, weight):
    weight is the anchors' share in each pixel's correction, in [0, 1] (0: the factor alone)."""
    depth = depth_small * np.float32(factor)
    weight = np.zeros(depth.shape, dtype=np.float32)
    if details is None:
        return depth, weight
    # The shape of this frame's model at its own factor, then brought to ``factor`` (the
    # smoothed one): the corrections near the points are moved by the same ratio, so that there
    # the depth is the points' whatever the smoothing did.
    frame_factor = math.exp(details.get("log_factor", math.log(factor)))
    to_applied = np.float32(factor / frame_factor)
    depth = depth_small * np.float32(frame_factor)
    trend = details.get("trend")
    if trend is not None:
        slope, centre = trend
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = depth * np.maximum(
                depth_small / np.float32(centre), np.float32(1.0)
            ) ** np.float32(slope)
    shift = details.get("inverse_shift")
    if shift is not None:
        depth = _shifted(depth, *shift).astype(np.float32)
    depth = depth * to_applied
    residual = details.get("residual_log")
    if residual is None or not rules.refine:
        return depth, weight
    rows, cols, values = residual
    values = values - np.float32(math.log(to_applied))
    sigma = max(0.5, math.radians(rules.spread_deg) * camera_small.fx)
    # Normalised convolution with a prior of zero correction (the global factor) of weight
    # prior_weight per pixel, in units of a Gaussian-spread anchor's peak (1 / (2 pi sigma^2)).
    prior = np.float32(rules.prior_weight / (2.0 * math.pi * sigma * sigma))
    if rules.layer_step > 0:
        spread_sums, spread_counts = _spread_layered(
            depth, rows, cols, values, sigma, rules.layer_step
        )
    else:
        spread_sums, spread_counts = _spread(
            depth.shape, rows, cols, values, np.ones_like(values), sigma
        )
    correction = spread_sums / (spread_counts + prior)
    weight = spread_counts / (spread_counts + prior)
    depth = depth * np.exp(correction)
    return depth.astype(np.float32), weight.astype(np.float32)


def _spread(
    shape: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-spread sums of weights x values and of weights, splatted at (rows, cols)."""
    sums = np.zeros(shape, dtype=np.float32)
    counts = np.zeros(shape, dtype=np.float32)
    np.add.at(sums, (rows, cols), values * weights)
    np.add.at(counts, (rows, cols), weights)
    return (
        cv2.GaussianBlur(sums, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE),
        cv2.GaussianBlur(counts, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE),
    )


MAX_LAYERS = 24


def _spread_layered(
    depth: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    sigma: float,
    step: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``_spread`` in a bilateral grid over log depth: each anchor splats into the two layers
    around its predicted log depth, each layer is spread in the image, and every pixel reads the
    layers around its own log depth (linear in between)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_depth = np.log(depth)
    anchor_log = log_depth[rows, cols]
    finite = np.isfinite(anchor_log)
    rows, cols, values, anchor_log = rows[finite], cols[finite], values[finite], anchor_log[finite]
    if anchor_log.size == 0:
        return np.zeros(depth.shape, np.float32), np.zeros(depth.shape, np.float32)
    low, high = float(anchor_log.min()), float(anchor_log.max())
    step = max(step, (high - low) / (MAX_LAYERS - 1))
    layers = int(math.floor((high - low) / step)) + 2
    position = (anchor_log - low) / step
    below = np.floor(position).astype(np.int64)
    upper_share = (position - below).astype(np.float32)
    pixel_position = np.clip((log_depth - low) / step, 0.0, layers - 1.0)
    pixel_position = np.where(np.isfinite(pixel_position), pixel_position, 0.0)
    sums = np.zeros(depth.shape, dtype=np.float32)
    counts = np.zeros(depth.shape, dtype=np.float32)
    for layer in range(layers):
        share = np.where(below == layer, 1.0 - upper_share, 0.0) + np.where(
            below + 1 == layer, upper_share, 0.0
        )
        if not share.any():
            continue
        layer_sums, layer_counts = _spread(
            depth.shape, rows, cols, values, share.astype(np.float32), sigma
        )
        read = np.clip(1.0 - np.abs(pixel_position - layer), 0.0, 1.0).astype(np.float32)
        sums += read * layer_sums
        counts += read * layer_counts
    return sums, counts
