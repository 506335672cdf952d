"""Visibility in fog from one frame: the scattering coefficient from transmission and depth.

The atmospheric scattering model ties the two: t = exp(-beta d), so every pixel with a known
depth d and a measurable transmission t gives -ln t / d = beta. The estimate is the median of
those per-pixel values (the Theil-Sen slope of -ln t against d through the origin), which a
minority of wrong pixels (a white wall read as haze, a depth edge, a lamp) cannot move, and

    V = 3.912 / beta

Koschmieder's visual range at a 2% contrast threshold, -ln(0.02) = 3.912, the convention of
training.data.common.KOSCHMIEDER and of the haze the project synthesises. The WMO's
meteorological optical range (MOR) uses a 5% threshold: MOR = 2.996 / beta = 0.766 V. (Issue
12 wrote "3.912 ... 5%": the number is the 2% one; we keep the number and name it correctly.)

Which pixels count:
* depth finite, positive and inside the model's range (sky is +inf, REP-117 values and NaN
  holes are left out);
* T_LOW < t < T_HIGH: near 1 the optical depth drowns in noise (t = 0.95 +- 0.01 is a 20%
  error on -ln t); near 0 only airlight arrives, and the DCP and the physics heads clamp t to
  0.1 (their t0), where -ln t says nothing about beta.
And when a frame says too little, there is no estimate rather than a guess:
* fewer than MIN_PIXELS usable pixels (all sky, no metric depth);
* the usable depths do not spread (90th / 10th percentile below MIN_DEPTH_SPREAD): a wall in
  front of the camera. From one image a grey surface and haze look alike; only the change of
  t with depth separates them.
Two more outcomes are measurements, not failures: most pixels with depth have t >= T_HIGH
(clear air: V beyond what this frame's depths can resolve) or t <= T_LOW (fog so dense that
even the nearest pixels are mostly airlight).

The uncertainty reported is the spread of the per-pixel beta (its interquartile range, mapped
to visibility): how much the pixels disagree, a conservative bound, since their errors are
spatially correlated and the median's own standard error would be far too optimistic.

Transmission: physics-structured heads (``asm``, ``asm_dcp``) and the DCP predict t. A
checkpoint with the paper's residual head predicts only the dehazed image; then t comes from
the Dark Channel Prior on the same downscaled frame the networks saw (dehaze_ros.dcp), and the
result says so. Depth must be metric: the DCP model's relative depth (beta d with beta
unknown) gives no visibility at all.

No ROS import: the sensor_msgs/Range message is built by dehaze_ros.ros.frame_outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

KOSCHMIEDER = 3.912  # -ln(0.02): visual range at a 2% contrast threshold (V = 3.912 / beta)
WMO_MOR = 2.996  # -ln(0.05): the WMO's meteorological optical range (5% threshold)
T_LOW = 0.11  # above the 0.1 floor (t0) that the DCP and the physics heads clamp t to
T_HIGH = 0.95  # below: -ln t >= 0.051, where noise of +-0.01 in t is a 20% error
MIN_PIXELS = 200  # usable pixels needed for an estimate
MIN_PIXEL_FRACTION = 0.005  # ... and at least this share of the frame
MIN_DEPTH_SPREAD = 1.3  # 90th / 10th percentile of their depths (a frontal wall: ~1.0)
MAJORITY = 0.5  # share of pixels with depth that must be clear (or opaque) to say so
IQR_TO_SIGMA = 1.349  # interquartile range of a normal distribution, in standard deviations

OK, CLEAR, DENSE, NONE = "ok", "clear", "dense", "none"


@dataclass(frozen=True)
class VisibilityEstimate:
    """One frame's visibility.

    ``status``:
      ok     ``visibility_m`` = 3.912 / ``beta_per_m``, ``interval_m`` the interquartile range;
      clear  most pixels with depth have t >= T_HIGH: V beyond ``interval_m[0]`` (+inf reported);
      dense  most pixels with depth have t <= T_LOW: V below ``interval_m[1]`` (-inf reported);
      none   no estimate (``reason`` says why): NaN.
    ``visibility_m`` carries those REP-117 values, so it can go on a Range message as it is.
    ``min_range_m``/``max_range_m``: the visibilities this frame's depths could resolve.
    """

    status: str
    visibility_m: float
    beta_per_m: float
    interval_m: tuple[float, float]
    pixels: int  # pixels the fit used
    depth_spread: float  # 90th / 10th percentile of the depths of usable pixels (NaN: none)
    min_range_m: float
    max_range_m: float
    reason: str = ""
    transmission_source: str = ""

    @property
    def valid(self) -> bool:
        return self.status == OK

    @property
    def variance_m2(self) -> float:
        """Variance of V for sensor_msgs/Range (Jazzy and later): the interquartile spread of the
        per-pixel estimates as a normal standard deviation, squared; 0 (= unknown) when not ok."""
        if not self.valid:
            return 0.0
        low, high = self.interval_m
        return float(((high - low) / IQR_TO_SIGMA) ** 2)

    def describe(self) -> str:
        """One line for logs, diagnostics and summaries."""
        if self.status == OK:
            low, high = self.interval_m
            return (
                f"{self.visibility_m:.0f} m (beta {self.beta_per_m:.4g} /m; interquartile "
                f"{low:.0f}-{high:.0f} m; {self.pixels} pixels)"
            )
        if self.status == CLEAR:
            return f"beyond {self.interval_m[0]:.0f} m (clear: the scene's depths show no haze)"
        if self.status == DENSE:
            return (
                f"below {self.interval_m[1]:.1f} m (dense: even the nearest pixels are mostly "
                "airlight)"
            )
        return f"no estimate: {self.reason}"


def _none(
    reason: str,
    min_range: float,
    max_range: float,
    source: str,
    pixels: int = 0,
    spread: float = math.nan,
) -> VisibilityEstimate:
    return VisibilityEstimate(
        NONE,
        math.nan,
        math.nan,
        (math.nan, math.nan),
        pixels,
        spread,
        min_range,
        max_range,
        reason,
        source,
    )


def resolvable_range(depths: np.ndarray) -> tuple[float, float]:
    """(min, max) visibility that pixels at these depths can resolve: a pixel at d measures beta
    while T_LOW < exp(-beta d) < T_HIGH. (5th and 95th percentile depths, robust to strays.)"""
    if depths.size == 0:
        return 0.0, 0.0
    near, far = np.percentile(depths, [5.0, 95.0])
    return (
        float(KOSCHMIEDER * near / -math.log(T_LOW)),
        float(KOSCHMIEDER * far / -math.log(T_HIGH)),
    )


def depth_at(depth_m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``depth_m`` at another resolution, nearest neighbour: an interpolated depth between a
    foreground and a background pixel belongs to neither."""
    if depth_m.shape == tuple(shape):
        return depth_m
    return cv2.resize(
        depth_m.astype(np.float32, copy=False),
        (shape[1], shape[0]),
        interpolation=cv2.INTER_NEAREST,
    )


def _without_measurable_transmission(
    t_known: np.ndarray,
    depths_known: np.ndarray,
    count: int,
    needed: int,
    min_range: float,
    max_range: float,
    transmission_source: str,
) -> VisibilityEstimate:
    """Too few pixels with a measurable transmission: CLEAR or DENSE when most pixels with depth
    (``t_known``, at ``depths_known``) say so over a spread of depths, else no estimate."""
    clear_share = float((t_known >= T_HIGH).mean())
    dense_share = float((t_known <= T_LOW).mean())
    spread_all = _spread(depths_known)
    if spread_all >= MIN_DEPTH_SPREAD and clear_share >= MAJORITY:
        return VisibilityEstimate(
            CLEAR,
            math.inf,
            math.nan,
            (max_range, math.inf),
            count,
            spread_all,
            min_range,
            max_range,
            f"{clear_share:.0%} of the pixels with depth have t >= {T_HIGH}",
            transmission_source,
        )
    if spread_all >= MIN_DEPTH_SPREAD and dense_share >= MAJORITY:
        return VisibilityEstimate(
            DENSE,
            -math.inf,
            math.nan,
            (0.0, min_range),
            count,
            spread_all,
            min_range,
            max_range,
            f"{dense_share:.0%} of the pixels with depth have t <= {T_LOW}",
            transmission_source,
        )
    return _none(
        f"{count} pixels with a measurable transmission ({T_LOW} < t < {T_HIGH}); {needed} needed",
        min_range,
        max_range,
        transmission_source,
        count,
    )


def estimate_visibility(
    transmission: np.ndarray,
    depth_m: np.ndarray,
    depth_range_m: tuple[float, float] = (0.0, math.inf),
    transmission_source: str = "",
) -> VisibilityEstimate:
    """Visibility from a transmission map and metric depth (any two resolutions: the depth is
    sampled at the transmission's, nearest neighbour). ``depth_range_m``: the depths the model
    can measure; others are left out like sky."""
    transmission = np.asarray(transmission, dtype=np.float32)
    if transmission.ndim != 2 or np.asarray(depth_m).ndim != 2:
        raise ValueError(
            f"transmission and depth must be H x W, got {transmission.shape} and "
            f"{np.asarray(depth_m).shape}"
        )
    depth = depth_at(np.asarray(depth_m, dtype=np.float32), transmission.shape)
    near, far = depth_range_m
    with np.errstate(invalid="ignore"):
        has_depth = (
            np.isfinite(depth)
            & (depth > max(near, 0.0))
            & (depth <= far)
            & np.isfinite(transmission)
        )
    depths_known = depth[has_depth]
    min_range, max_range = resolvable_range(depths_known)
    needed = max(MIN_PIXELS, int(MIN_PIXEL_FRACTION * transmission.size))
    if depths_known.size < needed:
        return _none(
            f"{depths_known.size} pixels with metric depth (sky or out of range elsewhere); "
            f"{needed} needed",
            min_range,
            max_range,
            transmission_source,
            depths_known.size,
        )
    t_known = transmission[has_depth]
    usable = (t_known > T_LOW) & (t_known < T_HIGH)
    count = int(usable.sum())
    if count < needed:
        return _without_measurable_transmission(
            t_known, depths_known, count, needed, min_range, max_range, transmission_source
        )
    depths = depths_known[usable]
    spread = _spread(depths)
    if spread < MIN_DEPTH_SPREAD:
        return _none(
            f"no depth spread (90th/10th percentile {spread:.2f} < {MIN_DEPTH_SPREAD}): a "
            "surface at one distance cannot tell haze from its own colour",
            min_range,
            max_range,
            transmission_source,
            count,
            spread,
        )
    betas = -np.log(t_known[usable]) / depths
    q25, median, q75 = (float(v) for v in np.percentile(betas, [25.0, 50.0, 75.0]))
    return VisibilityEstimate(
        OK,
        KOSCHMIEDER / median,
        median,
        (KOSCHMIEDER / q75, KOSCHMIEDER / q25 if q25 > 0 else math.inf),
        count,
        spread,
        min_range,
        max_range,
        "",
        transmission_source,
    )


def _spread(depths: np.ndarray) -> float:
    low, high = np.percentile(depths, [10.0, 90.0])
    return float(high / low) if low > 0 else math.inf


def transmission_for(result, rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, str]:
    """The transmission of an engine result and where it came from: the model's own (physics
    heads, DCP), else the DCP on the frame downscaled as the engine's networks saw it."""
    if result.transmission is not None:
        return result.transmission, "model"
    from dehaze_ros.dcp import dehaze_dcp
    from dehaze_ros.engine import scaled_size

    height, width = scaled_size(rgb.shape[0], rgb.shape[1], max_side)
    small = (
        rgb
        if (height, width) == rgb.shape[:2]
        else cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    )
    return dehaze_dcp(small).transmission, "dcp (the model predicts no transmission)"


def estimate_from_result(
    result, rgb: np.ndarray, max_side: int, depth_range_m: tuple[float, float] = (0.0, math.inf)
) -> VisibilityEstimate:
    """Visibility from a DehazeEngine result (run with want_depth) for the frame ``rgb``."""
    if result.depth is None or result.depth_units != "meters":
        units = result.depth_units if result.depth is not None else "none"
        return _none(
            f"depth is {units}, not metres (model dcp?): visibility needs metric depth",
            0.0,
            0.0,
            "",
        )
    transmission, source = transmission_for(result, rgb, max_side)
    return estimate_visibility(transmission, result.depth, depth_range_m, source)


def horizontal_fov_rad(focal_px: float, width: int) -> float:
    return 2.0 * math.atan(width / (2.0 * focal_px))
