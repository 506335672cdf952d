"""The node's frame counters and its /diagnostics content, as plain Python (no rclpy).

FrameStats is written by the node's callbacks and worker under one lock; ``snapshot()`` copies it.
``diagnose(current, previous, node)`` turns two snapshots (the rates are counted between them)
and what the node is doing into the level, message and key-values of its diagnostics status:
a pure function, tested without DDS. The demo reads the same keys (KEY_*), and percentile is the
one latency statistic of both.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dehaze_ros.metric_scale import LEARNED

LATENCY_WINDOW = 200  # recent frames the latency statistics cover
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels

# Keys of the diagnostics key-values that programs read (the demo, tests, monitoring): the text
# is what people see in rqt_runtime_monitor; readers use these names, never a copy of the text.
KEY_STATE = "state"
KEY_RECEIVED = "frames received"
KEY_PROCESSED = "frames processed"
KEY_DROPPED = "frames dropped (newer frame arrived)"
KEY_INVALID = "frames invalid (bad data)"
KEY_MODEL = "model"
KEY_DEVICE = "device"
KEY_DEVICE_WARNING = "device warning"
# The metric scale of the last frame with depth (metric_scale.ScaleState): its source
# ("ground", "learned"; "n/a" before any) and the factor that multiplied the network's metres.
KEY_SCALE_SOURCE = "depth scale source"
KEY_SCALE_FACTOR = "depth scale factor"
# Where a processed frame's time went, medians over the latency window: "wait 12.0, decode 1.1,
# preprocess 0.6, dehaze 31.2, depth 9.8, postprocess 7.5, publish 14.3" (ms). wait: in the
# node's one-frame slot until the worker took it; the middle ones are the engine's stages.
KEY_STAGES = "time per frame median (ms)"

VISIBILITY_NEEDS_METRES = (
    "visibility is not published: it needs metric depth and the model's "
    "depth is relative (model dcp); use a checkpoint"
)


def percentile(samples: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in [0, 1]) of a non-empty set of samples.

    Nearest rank rather than interpolation: a reported p95 is then a latency that a frame
    really had, and the same rule gives the same number in diagnostics and in the demo.
    """
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("percentile of no samples")
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@dataclass(frozen=True)
class StatsSnapshot:
    """FrameStats at one moment (``taken_at``, time.monotonic())."""

    taken_at: float
    received: int = 0  # frames that reached the subscription callback
    processed: int = 0  # frames whose outputs were published
    with_depth: int = 0  # ... of which the depth network ran for (someone wanted depth)
    dropped: int = 0  # replaced by a newer frame before the worker took them
    invalid: int = 0  # bad data: wrong size, unknown encoding, corrupt JPEG, ...
    skipped: int = 0  # nobody subscribed to any output
    failed: int = 0  # the engine raised
    worker_restarts: int = 0  # the processing thread died and the watchdog restarted it
    last_worker_failure: str = ""
    with_visibility: int = 0  # frames whose visibility was estimated (someone subscribed)
    visibility: object = None  # the last VisibilityEstimate
    focal_assumed: bool | None = None  # last depth frame: metres from default_hfov_deg
    scale: object = None  # last depth frame: its metric_scale.ScaleState
    scale_held: int = 0  # depth frames whose scale was held (no ground seen)
    scale_learned: int = 0  # ... that fell back to the network's own metres
    last_problem: str = ""
    last_problem_at: float | None = None  # time.monotonic() of the last invalid/failed frame
    last_good_at: float | None = None  # ... of the last frame processed or skipped
    last_received_at: float | None = None
    processing_ms: tuple[float, ...] = ()  # receive -> published
    stamp_age_ms: tuple[float, ...] = ()  # header stamp -> published
    inference_ms: tuple[float, ...] = ()  # engine.process
    stages_ms: tuple[dict, ...] = ()  # per frame: {stage: ms}, see KEY_STAGES

    @property
    def bad(self) -> int:
        return self.invalid + self.failed


class FrameStats:
    """Counters and latency samples, written by the callbacks and the worker under one lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = dict(
            received=0,
            processed=0,
            with_depth=0,
            dropped=0,
            invalid=0,
            skipped=0,
            failed=0,
            with_visibility=0,
            worker_restarts=0,
            scale_held=0,
            scale_learned=0,
        )
        self._last = dict(
            visibility=None,
            focal_assumed=None,
            scale=None,
            last_problem="",
            last_problem_at=None,
            last_good_at=None,
            last_received_at=None,
            last_worker_failure="",
        )
        self._samples = {
            name: deque(maxlen=LATENCY_WINDOW)
            for name in ("processing_ms", "stamp_age_ms", "inference_ms", "stages_ms")
        }

    def received(self, now: float, replaced_unprocessed: bool) -> None:
        with self._lock:
            self._counts["received"] += 1
            self._counts["dropped"] += int(replaced_unprocessed)
            self._last["last_received_at"] = now

    def problem(self, counter: str, text: str, now: float) -> None:
        """A frame that could not be used: ``counter`` "invalid" (its data) or "failed" (engine)."""
        with self._lock:
            self._counts[counter] += 1
            self._last.update(last_problem=text, last_problem_at=now)

    def worker_died(self, text: str, now: float) -> None:
        """The processing thread ended while it should run (the node restarts it)."""
        with self._lock:
            self._counts["worker_restarts"] += 1
            self._last.update(last_worker_failure=text, last_problem=text, last_problem_at=now)

    def skipped(self, now: float) -> None:
        with self._lock:
            self._counts["skipped"] += 1
            self._last["last_good_at"] = now

    def processed(
        self,
        now: float,
        received_at: float,
        inference_ms: float,
        focal_assumed: bool | None,
        estimate,
        stamp_age_ms: float | None,
        stages_ms: dict | None = None,
        scale=None,
    ) -> None:
        """A frame whose outputs were published; ``focal_assumed`` None: no depth was computed,
        ``estimate`` None: no visibility; ``stages_ms``: where its time went (KEY_STAGES);
        ``scale``: its metric_scale.ScaleState (None: no metric depth)."""
        with self._lock:
            self._counts["processed"] += 1
            self._last["last_good_at"] = now
            if focal_assumed is not None:
                self._counts["with_depth"] += 1
                self._last["focal_assumed"] = focal_assumed
            if scale is not None:
                self._last["scale"] = scale
                self._counts["scale_held"] += int(scale.held)
                self._counts["scale_learned"] += int(scale.fell_back)
            if estimate is not None:
                self._counts["with_visibility"] += 1
                self._last["visibility"] = estimate
            self._samples["processing_ms"].append((now - received_at) * 1e3)
            self._samples["inference_ms"].append(inference_ms)
            if stamp_age_ms is not None:
                self._samples["stamp_age_ms"].append(stamp_age_ms)
            if stages_ms:
                self._samples["stages_ms"].append(dict(stages_ms))

    def snapshot(self, now: float) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                taken_at=now,
                **self._counts,
                **self._last,
                **{name: tuple(values) for name, values in self._samples.items()},
            )


@dataclass(frozen=True)
class NodeView:
    """What the node is doing, besides its frame counts: the rest of the diagnostics' input."""

    state: str  # unconfigured | inactive | active | finalized
    configure_error: str = ""
    input_topic: str = ""
    have_camera_info: bool = False
    camera_info_problem: str = ""  # why the held camera_info cannot project pixels
    active_since: float | None = None
    diagnostics_period: float = 1.0
    startup_refusals: tuple[str, ...] = ()
    engine_info: Mapping[str, object] = field(default_factory=dict)  # engine.describe()
    config: object = None  # NodeConfig while configured
    anchors: Mapping[str, int] = field(default_factory=dict)  # anchor_input.AnchorInput.counts
    anchor_problem: str = ""  # its last problem in words


@dataclass(frozen=True)
class Diagnosis:
    level: int  # OK, WARN or ERROR
    message: str
    values: dict[str, str]


def relative_depth_note(publish_relative_depth: bool) -> str:
    if publish_relative_depth:
        return (
            "depth is RELATIVE (model dcp): depth/image and points carry unitless optical "
            "depth, not metres (publish_relative_depth is true)"
        )
    return (
        "depth is RELATIVE (model dcp): depth/image and points are not published; "
        "depth/colormap shows it. Use a checkpoint for metric depth, or set "
        "publish_relative_depth:=true"
    )


def _metric_scale_source(focal_assumed: bool | None, scale, node: NodeView) -> str:
    """Where the last depth frame's metres came from, in words: the scale source (ground plane,
    held, fallen back) and, for the network's own metres, the focal length they rest on."""
    if node.engine_info.get("depth_units") != "meters" or focal_assumed is None:
        return "n/a"
    if not node.engine_info.get("canonical_focal_px"):
        focal = "the checkpoint (no camera model: metres only near its training pixel scale)"
    elif focal_assumed:
        hfov = f"{node.config.default_hfov_deg:g} deg" if node.config else "default_hfov_deg"
        focal = f"assumed field of view ({hfov}, no usable camera_info)"
    else:
        focal = "camera_info focal length"
    if scale is None or (scale.source == LEARNED and not scale.fell_back):
        # No scale source configured: the network's metres, through the focal length.
        return focal if focal_assumed else f"learned only ({focal})"
    text = scale.describe()
    return f"{text}; {focal}" if focal_assumed else text


def _scale_values(current: StatsSnapshot, node: NodeView) -> dict[str, str]:
    scale = current.scale
    if scale is None or node.engine_info.get("depth_units") != "meters":
        return {KEY_SCALE_SOURCE: "n/a", KEY_SCALE_FACTOR: "n/a"}
    return {
        KEY_SCALE_SOURCE: scale.source + (" (held)" if scale.held else ""),
        KEY_SCALE_FACTOR: f"{scale.factor:.3f}",
        "frames with the scale held (no estimate)": str(current.scale_held),
        "frames at the learned scale after a source failed": str(current.scale_learned),
    }


def _visibility_values(estimate, node: NodeView) -> dict[str, str]:
    """The last visibility estimate, or why there is none, as diagnostics key-values."""
    if node.config is not None and not node.config.publish_visibility:
        note = "off (publish_visibility is false)"
    elif node.engine_info and node.engine_info.get("depth_units") != "meters":
        note = VISIBILITY_NEEDS_METRES
    elif estimate is None:
        note = "not computed yet (computed only while `visibility` has a subscriber)"
    else:
        low, high = estimate.interval_m
        return {
            "visibility (m)": f"{estimate.visibility_m:.1f}",
            "visibility beta (1/m)": f"{estimate.beta_per_m:.5g}",
            "visibility valid": str(estimate.valid).lower(),
            "visibility status": estimate.status,
            "visibility interquartile (m)": f"{low:.1f} .. {high:.1f}",
            "visibility": estimate.describe(),
            "visibility transmission from": estimate.transmission_source or "n/a",
        }
    return {
        "visibility (m)": "n/a",
        "visibility beta (1/m)": "n/a",
        "visibility valid": "false",
        "visibility status": "none",
        "visibility": note,
    }


def stage_medians(samples: tuple[dict, ...]) -> str:
    """'stage ms, ...' in the order the stages happen: the median of each over ``samples``."""
    names = list(dict.fromkeys(name for sample in samples for name in sample))
    if not names:
        return "n/a"
    return ", ".join(
        f"{name} {statistics.median(s[name] for s in samples if name in s):.1f}" for name in names
    )


def _state_status(
    current: StatsSnapshot,
    previous: StatsSnapshot,
    node: NodeView,
    elapsed: float,
    input_rate: float,
    output_rate: float,
) -> tuple[int, list[str]]:
    """The level and messages of the node's lifecycle state: configure errors, no input, the
    rates, camera_info and recent bad frames."""
    now = current.taken_at
    # The level describes the recent window, the counters the whole run: one corrupt frame
    # warns in the period it arrived and for as long as no good frame has followed it.
    recent_bad = max(0, current.bad - previous.bad)
    problem_is_current = current.last_problem_at is not None and (
        recent_bad > 0
        or current.last_good_at is None
        or current.last_good_at < current.last_problem_at
    )

    level, messages = OK, []
    if node.state == "unconfigured":
        if node.configure_error:
            level, messages = ERROR, [node.configure_error]
        else:
            level, messages = WARN, ["unconfigured: waiting for configure"]
    elif node.state == "inactive":
        messages = ["inactive: not processing (activate to start)"]
    elif node.state == "active":
        silent_for = now - (current.last_received_at or node.active_since or now)
        if silent_for > max(2.0, 2.0 * node.diagnostics_period):
            level = WARN
            never = "no frame received" if current.last_received_at is None else "no new frame"
            messages.append(
                f"NO INPUT: {never} on {node.input_topic} for {silent_for:.1f} s; check the "
                "topic remapping, the publisher's QoS, and FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA "
                "for large images"
            )
        else:
            messages.append(f"processing {output_rate:.1f} Hz of {input_rate:.1f} Hz input")
        if not node.have_camera_info:
            messages.append("no camera_info received: points and camera_info outputs are off")
        elif node.camera_info_problem:
            messages.append(f"{node.camera_info_problem}: points are off")
        if problem_is_current:
            level = max(level, WARN)
            messages.append(
                f"{recent_bad} bad frame(s) in the last {elapsed:.1f} s; last problem: "
                f"{current.last_problem}"
                if recent_bad
                else f"no good frame since the last problem: {current.last_problem}"
            )
    return level, messages


def _status(
    current: StatsSnapshot,
    previous: StatsSnapshot,
    node: NodeView,
    elapsed: float,
    input_rate: float,
    output_rate: float,
) -> tuple[int, list[str]]:
    """The diagnostics level and its messages: the state's, then the processing thread, the
    metric depth, the device and the refused start-up parameters."""
    level, messages = _state_status(current, previous, node, elapsed, input_rate, output_rate)
    config = node.config
    recent_restarts = current.worker_restarts - previous.worker_restarts
    if recent_restarts > 0:
        # The output stopped: whatever else is true, this period is an error.
        level = ERROR
        messages.insert(
            0,
            f"{current.last_worker_failure} ({current.worker_restarts} restart(s) since configure)",
        )
    if current.focal_assumed and config is not None:
        messages.append(
            f"metric depth assumes a {config.default_hfov_deg:g} degree field of view "
            "(no usable camera_info)"
        )
    if config is not None and node.engine_info.get("depth_units") not in (None, "meters"):
        level = max(level, WARN)
        messages.append(relative_depth_note(config.publish_relative_depth))
    device_warning = node.engine_info.get("device_warning")
    if device_warning:
        # WARN for as long as it holds: a GPU machine running on its CPU works, 10-50x slower.
        level = max(level, WARN)
        messages.append(str(device_warning))
    if node.startup_refusals:
        # ERROR although frames may flow: the node is not doing what it was told (a misspelt
        # input_transport listens on the wrong topic) until it is restarted.
        level = max(level, ERROR)
        messages.append(
            "start-up parameters refused, running with defaults until restarted: "
            + "; ".join(node.startup_refusals)
        )
    return level, messages


def _values(
    current: StatsSnapshot, node: NodeView, input_rate: float, output_rate: float
) -> dict[str, str]:
    """The diagnostics key/value pairs: counters, rates, latencies, scale, anchors, visibility
    and the engine's description."""
    now = current.taken_at
    device_warning = node.engine_info.get("device_warning")

    def ms(samples, fraction):
        return f"{percentile(samples, fraction):.1f}" if samples else "n/a"

    values = {
        KEY_STATE: node.state,
        KEY_STAGES: stage_medians(current.stages_ms),
        "input topic": node.input_topic or "(not subscribed)",
        "input rate (Hz)": f"{input_rate:.2f}",
        "output rate (Hz)": f"{output_rate:.2f}",
        KEY_RECEIVED: str(current.received),
        KEY_PROCESSED: str(current.processed),
        "frames processed with depth": str(current.with_depth),
        KEY_DROPPED: str(current.dropped),
        KEY_INVALID: str(current.invalid),
        "frames skipped (no subscribers)": str(current.skipped),
        "frames failed (engine error)": str(current.failed),
        "processing thread restarts": str(current.worker_restarts),
        "last processing thread failure": current.last_worker_failure or "none",
        "latency receive->publish median (ms)": ms(current.processing_ms, 0.5),
        "latency receive->publish p95 (ms)": ms(current.processing_ms, 0.95),
        "latency stamp->publish median (ms)": ms(current.stamp_age_ms, 0.5),
        "latency stamp->publish p95 (ms)": ms(current.stamp_age_ms, 0.95),
        "inference median (ms)": (
            f"{statistics.median(current.inference_ms):.1f}" if current.inference_ms else "n/a"
        ),
        "last problem": current.last_problem or "none",
        "seconds since last problem": (
            f"{now - current.last_problem_at:.1f}" if current.last_problem_at is not None else "n/a"
        ),
        "refused start-up parameters": "; ".join(node.startup_refusals) or "none",
        KEY_DEVICE_WARNING: str(device_warning or "none"),
        "metric scale from": _metric_scale_source(current.focal_assumed, current.scale, node),
        **_scale_values(current, node),
        **{f"anchor {key}": str(count) for key, count in node.anchors.items()},
        "anchor last problem": node.anchor_problem or "none",
        "frames with visibility": str(current.with_visibility),
    }
    values.update(_visibility_values(current.visibility, node))
    for key in (
        KEY_MODEL,
        KEY_DEVICE,
        "precision",
        "backend",
        "backend_choice",
        "depth_units",
        "checkpoint",
        "max_side",
    ):
        if key in node.engine_info:
            values[key.replace("_", " ")] = str(node.engine_info[key])
    return values


def diagnose(current: StatsSnapshot, previous: StatsSnapshot, node: NodeView) -> Diagnosis:
    """The diagnostics status for ``current``; rates and "recent" problems count from ``previous``
    (the snapshot of the last diagnostics message)."""
    now = current.taken_at
    elapsed = max(now - previous.taken_at, 1e-6)
    input_rate = max(0, current.received - previous.received) / elapsed
    output_rate = max(0, current.processed - previous.processed) / elapsed
    level, messages = _status(current, previous, node, elapsed, input_rate, output_rate)
    values = _values(current, node, input_rate, output_rate)
    return Diagnosis(level, "; ".join(messages), values)
