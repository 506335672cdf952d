"""dehaze_node: a lifecycle node that dehazes a camera stream and estimates its metric depth.

Lifecycle (rclpy.lifecycle; `autostart` drives it to active by itself):
  configure   validate parameters, load the model and warm it up, create the publishers.
              A missing or bad checkpoint, or a bad parameter, returns FAILURE with a message
              naming the problem (log and /diagnostics); the process stays up. A bad value of
              a read-only start-up parameter (autostart, input_*, diagnostics_period) cannot be
              fixed at runtime, so it does not fail configure: the node logs an ERROR at
              construction and runs with the default, and /diagnostics keeps reporting it.
  activate    create the input subscriptions and start the processing thread.
  deactivate  destroy the subscriptions and stop the thread: nothing is published.
  cleanup     destroy the publishers and free the model (and the CUDA cache).
  shutdown    from any state: release everything; main() then ends the process with status 0.
SIGINT and SIGTERM end it the same clean way at every phase (main()).

Threading: the subscription callback only stores the newest message in a one-slot mailbox (a
frame it replaces unprocessed is counted as dropped) and returns, so the executor stays free
for lifecycle services, camera_info, parameters and diagnostics. One worker thread takes the
newest frame, runs the engine and publishes. A dedicated thread, rather than a timer in a
second callback group of a MultiThreadedExecutor, wakes the moment a frame arrives (no polling
period added to the latency), needs no executor change, and runs inference while the GIL is
released by torch/OpenCV. rclpy publishers are safe to use from that thread.

Relative depth (model dcp): its depth is an optical depth -ln(t) with no unit. depth/image is
a REP-118 topic whose consumers (costmaps, depth_image_proc) read metres, so by default the node
does NOT publish relative depth on depth/image nor build `points` from it; depth/colormap still
shows it (on its own fixed relative range). `publish_relative_depth:=true` publishes it anyway.
Diagnostics and a one-time warning say which case is in force.
"""
from __future__ import annotations

import signal
import sys
import threading

# Set by the first SIGINT or SIGTERM; main() and the start-up look at it at safe points.
STOP_REQUESTED = threading.Event()


def _request_stop(signum, frame) -> None:
    """SIGINT/SIGTERM handler: the first asks for a clean stop; a second one interrupts whatever
    runs (a model load that hangs, say) with KeyboardInterrupt."""
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt(signal.Signals(signum).name)
    STOP_REQUESTED.set()


if __name__ == "__main__":
    # `python -m dehaze_ros.dehaze_node`: a signal while the modules below load is remembered and
    # main() returns 0 at once, instead of Python's defaults (a KeyboardInterrupt traceback from
    # inside an import; death by SIGTERM).
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)

# The imports follow the guard on purpose: loading them is the phase it covers.
import statistics
import time
from collections import deque
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile,
                       QoSReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, Range

from dehaze_ros import frame_outputs, image_conversion, visibility
from dehaze_ros.camera import focal_from_hfov
from dehaze_ros.image_conversion import ImageConversionError
from dehaze_ros.node_config import (SPECS, ConfigError, NodeConfig, declare_node_parameters,
                                    integers_as_floats, read_node_config, resolve_model)
from dehaze_ros.pointcloud import IntrinsicsError, camera_info_for_image
from dehaze_ros.stats import percentile

NODE_NAME = "dehaze_node"
LATENCY_WINDOW = 200          # recent frames the latency statistics cover
LOG_THROTTLE_S = 5.0          # the same problem is logged at most this often
VISIBILITY_NEEDS_METRES = ("visibility is not published: it needs metric depth and the model's "
                           "depth is relative (model dcp); use a checkpoint")


def input_qos(reliability: str) -> QoSProfile:
    """Sensor-data QoS (best effort, keep last 1): a late frame is worth less than a new one."""
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST, depth=1,
        reliability=(QoSReliabilityPolicy.RELIABLE if reliability == "reliable"
                     else QoSReliabilityPolicy.BEST_EFFORT),
        durability=QoSDurabilityPolicy.VOLATILE)


# Reliable outputs: RViz and most tools subscribe reliable, and a reliable publisher also serves
# best-effort subscribers. Depth 2 keeps one frame in flight per slow subscriber, not a backlog.
OUTPUT_QOS = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=2,
                        reliability=QoSReliabilityPolicy.RELIABLE,
                        durability=QoSDurabilityPolicy.VOLATILE)


@dataclass
class PendingFrame:
    msg: Image | CompressedImage
    received_at: float  # time.monotonic() in the subscription callback


class LatestFrameSlot:
    """A one-frame mailbox between the subscription callback and the worker: newest wins."""

    def __init__(self):
        self._condition = threading.Condition()
        self._frame: PendingFrame | None = None
        self._closed = False

    def put(self, frame: PendingFrame) -> bool:
        """Store ``frame``; True when it replaced a frame the worker never took (a drop)."""
        with self._condition:
            replaced = self._frame is not None
            self._frame = frame
            self._condition.notify()
            return replaced

    def take(self, timeout: float) -> PendingFrame | None:
        with self._condition:
            if self._frame is None and not self._closed:
                self._condition.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._frame = None
            self._condition.notify_all()


class FrameStats:
    """Counters and latency samples, written by the callbacks and the worker under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = 0          # frames that reached the subscription callback
        self.processed = 0         # frames whose outputs were published
        self.with_depth = 0        # ... of which the depth network ran for (someone wanted depth)
        self.dropped = 0           # replaced by a newer frame before the worker took them
        self.invalid = 0           # bad data: wrong size, unknown encoding, corrupt JPEG, ...
        self.skipped = 0           # nobody subscribed to any output
        self.failed = 0            # the engine raised
        self.last_problem = ""
        self.focal_assumed: bool | None = None      # last depth frame: metres from default_hfov_deg
        self.with_visibility = 0   # frames whose visibility was estimated (someone subscribed)
        self.visibility = None     # the last VisibilityEstimate
        self.last_problem_at: float | None = None   # time.monotonic() of the last invalid/failed frame
        self.last_good_at: float | None = None      # ... of the last frame processed or skipped
        self.last_received_at: float | None = None
        self.processing_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)  # receive -> published
        self.stamp_age_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)   # header stamp -> published
        self.inference_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)   # engine.process


@dataclass(frozen=True)
class OutputDemand:
    """Which outputs someone is listening to (and are switched on) for the frame at hand."""
    dehazed: bool
    dehazed_info: bool
    depth: bool
    depth_info: bool
    colormap: bool
    points: bool
    visibility: bool = False

    @property
    def needs_engine(self) -> bool:
        return self.dehazed or self.depth or self.colormap or self.points or self.visibility

    @property
    def needs_depth(self) -> bool:
        # Visibility is -ln(t) / depth: it needs the depth network even when no depth topic
        # has a subscriber.
        return self.depth or self.colormap or self.points or self.visibility

    @property
    def needs_dehazed_pixels(self) -> bool:
        return self.dehazed or self.points  # the cloud is coloured with the dehazed image


class DehazeNode(LifecycleNode):

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        refused = declare_node_parameters(self)
        # A read-only value can never be corrected at runtime: failing configure over it would
        # leave the node stuck until a restart. It runs with the default instead, and says so
        # in the log and in every /diagnostics message.
        self._startup_refusals = [f"{value}; using the default {value.spec.default!r}"
                                  for value in refused if value.spec.stage == "startup"]
        for text in self._startup_refusals:
            self.get_logger().error(f"start-up parameter {text} (read-only: correct the launch "
                                    "arguments or params file and restart to change it)")
        # Configure-time and live values can be set while unconfigured: configure fails, naming
        # them, until they are.
        self._refused_parameters = {value.spec.name: str(value)
                                    for value in refused if value.spec.stage != "startup"}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        startup = read_node_config(self)
        self._autostart = startup.autostart
        self._config: NodeConfig | None = None   # set by configure, replaced on live changes
        self._engine = None
        self._engine_info: dict = {}
        self._configure_error = ""
        self._outputs: dict[str, object] = {}
        self._inputs: list = []
        self._camera_info: CameraInfo | None = None
        self._input_topic = ""
        self._slot = LatestFrameSlot()
        self._worker: threading.Thread | None = None
        self._stop_worker = threading.Event()
        self._stats = FrameStats()
        self._state_label = "unconfigured"
        self._active_since: float | None = None
        self._last_logged: dict[str, float] = {}
        self._log_lock = threading.Lock()
        self.finalized = threading.Event()  # set by the shutdown transition: main() then exits
        # Diagnostics run in every state, so /diagnostics also says *why* nothing is published.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_period = startup.diagnostics_period
        self._previous_counts = (0, 0, 0, time.monotonic())
        self._diagnostics_timer = self.create_timer(self._diagnostics_period, self._publish_diagnostics)

    # -- lifecycle ------------------------------------------------------------------------------

    def start_up(self, stop: threading.Event | None = None) -> None:
        """What `autostart` does: configure, then activate when configure succeeded and no stop
        was requested meanwhile (``stop``: configure loads the model, which takes seconds)."""
        if (self.trigger_configure() == TransitionCallbackReturn.SUCCESS
                and not (stop is not None and stop.is_set())):
            self.trigger_activate()

    @property
    def autostart(self) -> bool:
        return self._autostart

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = ""
        try:
            if self._refused_parameters:
                raise ConfigError("values given at start-up were refused (set them, then "
                                  "configure again): " + "; ".join(self._refused_parameters.values()))
            config = read_node_config(self)
            config.validate()
            choice = resolve_model(config)
            if choice.warning:
                self.get_logger().warning(choice.warning)
            # Imported here: torch loads in ~1 s, and a node that only declares parameters
            # (lifecycle managers, `--help`-like use) should not pay for it.
            from dehaze_ros.engine import DehazeEngine
            engine = DehazeEngine(config.engine_config(choice))
        except Exception as exc:  # noqa: BLE001 - any failure to set up must be FAILURE, not a crash
            self._configure_error = f"configure failed: {exc}"
            self.get_logger().error(self._configure_error)
            return TransitionCallbackReturn.FAILURE

        self._engine = engine
        self._engine_info = engine.describe()
        self._config = config
        self._stats = FrameStats()
        self._previous_counts = (0, 0, 0, time.monotonic())
        options = QoSOverridingOptions.with_default_policies()
        for topic, msg_type in (("dehazed/image", Image), ("dehazed/camera_info", CameraInfo),
                                ("depth/image", Image), ("depth/camera_info", CameraInfo),
                                ("depth/colormap", Image), ("points", PointCloud2),
                                ("visibility", Range)):
            self._outputs[topic] = self.create_lifecycle_publisher(
                msg_type, topic, OUTPUT_QOS, qos_overriding_options=options)
        info = self._engine_info
        self.get_logger().info(
            f"configured: model {info['model']} on {info['device']} ({info['precision']}), "
            f"depth in {info['depth_units']}"
            + (f", checkpoint {info['checkpoint']}" if info.get("checkpoint") else ""))
        if info["depth_units"] != "meters":
            self.get_logger().warning(self._relative_depth_note(config))
            if config.publish_visibility:
                self.get_logger().warning(VISIBILITY_NEEDS_METRES)
        self._state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        config = self._config
        qos = input_qos(config.input_reliability)
        options = QoSOverridingOptions.with_default_policies()
        if config.input_transport == "compressed":
            # image_transport's naming: the compressed stream lives under the (remapped) image topic.
            image_sub = self.create_subscription(
                CompressedImage, f"{self.resolve_topic_name('image')}/compressed", self._on_image,
                qos, qos_overriding_options=options)
        else:
            image_sub = self.create_subscription(Image, "image", self._on_image, qos,
                                                 qos_overriding_options=options)
        self._input_topic = image_sub.topic_name
        info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos,
                                            qos_overriding_options=options)
        self._inputs = [image_sub, info_sub]
        self._slot = LatestFrameSlot()
        self._stop_worker.clear()
        self._worker = threading.Thread(target=self._worker_loop, name="dehaze_worker", daemon=True)
        self._worker.start()
        self._active_since = time.monotonic()
        self._state_label = "active"
        self.get_logger().info(f"active: listening on {self._input_topic} "
                               f"({config.input_transport}, {config.input_reliability})")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._state_label = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_everything()
        self._state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        # From any primary state. Finalized is final (no transition leaves it), so nothing is
        # kept for later: outputs, worker, model, the diagnostics timer; main() sees `finalized`
        # and ends the process, as the ROS 2 lifecycle demos do.
        self._release_everything()
        self.destroy_timer(self._diagnostics_timer)
        self._state_label = "finalized"
        self.get_logger().info("shutdown: finalized, everything released; the process exits")
        self.finalized.set()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_everything()
        self._state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        self._stop_worker.set()
        self._slot.close()
        if self._worker is not None:
            self._worker.join()  # at most one inference: the worker checks the flag per frame
            self._worker = None
        self._active_since = None

    def _release_everything(self) -> None:
        self._stop_processing()
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        self._config = None
        self._camera_info = None

    def stop(self) -> None:
        """Stop the worker and free the model; for main()'s shutdown path."""
        self._release_everything()

    # -- parameters -----------------------------------------------------------------------------

    # The parameter services call set_parameters_atomically; both entry points are covered so
    # that an integer for a float parameter (`ros2 param set ... colormap_max_m 20`) is taken as
    # the number it means instead of failing rclpy's type check.
    def set_parameters(self, parameter_list):
        return super().set_parameters(integers_as_floats(parameter_list))

    def set_parameters_atomically(self, parameter_list):
        return super().set_parameters_atomically(integers_as_floats(parameter_list))

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        changes = {}
        for parameter in parameters:
            spec = SPECS.get(parameter.name)
            if spec is None:
                continue  # use_sim_time, qos_overrides.*: rclpy's own
            if spec.stage == "configure" and self._engine is not None:
                return SetParametersResult(successful=False, reason=(
                    f"{parameter.name} is applied at configure: change it while the node is "
                    "unconfigured (deactivate, cleanup, set it, configure)"))
            value = parameter.value
            if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            changes[parameter.name] = value
        if not changes:
            return SetParametersResult(successful=True)
        candidate = (self._config or read_node_config(self)).replace(**changes)
        try:
            candidate.validate()
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for name in changes:
            self._refused_parameters.pop(name, None)
        if self._config is not None:
            self._config = candidate  # live: the worker reads the new config with the next frame
        return SetParametersResult(successful=True)

    # -- input ----------------------------------------------------------------------------------

    def _on_image(self, msg) -> None:
        now = time.monotonic()
        replaced = self._slot.put(PendingFrame(msg, now))
        with self._stats.lock:
            self._stats.received += 1
            self._stats.last_received_at = now
            if replaced:
                self._stats.dropped += 1

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # -- processing (worker thread) -------------------------------------------------------------

    def _worker_loop(self) -> None:
        next_start = 0.0
        while not self._stop_worker.is_set():
            delay = next_start - time.monotonic()
            if delay > 0 and self._stop_worker.wait(delay):
                break
            frame = self._slot.take(timeout=0.25)
            # Read after the wait: a live parameter change applies to the very next frame.
            config = self._config
            if frame is None or config is None or self._stop_worker.is_set():
                continue
            started = time.monotonic()
            next_start = started + (1.0 / config.max_rate_hz if config.max_rate_hz > 0 else 0.0)
            try:
                self._process_frame(frame, config)
            except Exception as exc:  # noqa: BLE001 - a bad frame or engine error must not end the thread
                if not self.context.ok():
                    break  # Ctrl-C took the context away mid-frame: a normal exit, not an error
                with self._stats.lock:
                    self._stats.failed += 1
                    self._stats.last_problem = f"processing failed: {type(exc).__name__}: {exc}"
                    self._stats.last_problem_at = time.monotonic()
                self._log_throttled("error", f"failed:{type(exc).__name__}",
                                    f"processing a frame failed: {type(exc).__name__}: {exc}")

    def _subscribed(self, topic: str) -> bool:
        publisher = self._outputs.get(topic)
        return publisher is not None and publisher.get_subscription_count() > 0

    def _demand(self, config: NodeConfig, metric: bool) -> OutputDemand:
        depth_allowed = metric or config.publish_relative_depth
        have_info = self._camera_info is not None
        return OutputDemand(
            dehazed=config.publish_dehazed and self._subscribed("dehazed/image"),
            dehazed_info=config.publish_dehazed and have_info and self._subscribed("dehazed/camera_info"),
            depth=config.publish_depth and depth_allowed and self._subscribed("depth/image"),
            depth_info=(config.publish_depth and depth_allowed and have_info
                        and self._subscribed("depth/camera_info")),
            colormap=config.publish_colormap and self._subscribed("depth/colormap"),
            points=(config.publish_points and depth_allowed and have_info
                    and self._subscribed("points")),
            # Relative depth has no metres, so no visibility: nothing to compute or publish.
            visibility=config.publish_visibility and metric and self._subscribed("visibility"),
        )

    def _process_frame(self, frame: PendingFrame, config: NodeConfig) -> None:
        engine = self._engine
        metric = engine.depth_units == "meters"
        demand = self._demand(config, metric)
        camera_info = self._camera_info
        header = frame.msg.header
        try:
            # From the message's fields or the PNG/JPEG header: nothing decoded or copied yet.
            what, width, height = image_conversion.frame_size(frame.msg)
            image_conversion.check_pixel_limit(width, height, config.max_input_pixels, what)
        except ImageConversionError as exc:
            self._report_bad_frame(str(exc))
            return
        if not demand.needs_engine:
            if demand.dehazed_info or demand.depth_info:
                self._publish_camera_info(camera_info, header, demand, width, height)
            with self._stats.lock:
                self._stats.skipped += 1
                self._stats.last_good_at = time.monotonic()
            return
        try:
            image, encoding = frame_outputs.decode_frame(frame.msg, config.max_input_pixels)
            rgb = image_conversion.to_rgb8(image, encoding)
        except ImageConversionError as exc:
            self._report_bad_frame(str(exc))
            return

        focal_px = frame_outputs.focal_px_for_image(camera_info, rgb.shape[1], rgb.shape[0])
        result = engine.process(rgb, want_dehazed=demand.needs_dehazed_pixels,
                                want_depth=demand.needs_depth, focal_px=focal_px)

        if demand.dehazed:
            self._outputs["dehazed/image"].publish(
                frame_outputs.dehazed_message(result.dehazed, image, encoding, header))
        self._publish_camera_info(camera_info, header, demand, rgb.shape[1], rgb.shape[0])
        if demand.depth:
            self._outputs["depth/image"].publish(
                frame_outputs.depth_message(result.depth, header, config.depth_inf_as_nan))
        if demand.colormap:
            self._outputs["depth/colormap"].publish(frame_outputs.colormap_message(
                result.depth, header, metric, config.colormap_min_m, config.colormap_max_m,
                config.colormap_relative_max))
        if demand.points:
            self._publish_points(result, camera_info, header, config)
        estimate = None
        if demand.visibility:
            estimate = visibility.estimate_from_result(result, rgb, config.max_side, engine.depth_range)
            if focal_px is None:
                focal_px = focal_from_hfov(rgb.shape[1], config.default_hfov_deg)
            self._outputs["visibility"].publish(visibility.range_message(
                estimate, header, visibility.horizontal_fov_rad(focal_px, rgb.shape[1])))

        finished = time.monotonic()
        stamp_age_ms = None
        if header.stamp.sec or header.stamp.nanosec:
            stamp_age_ms = (self.get_clock().now() - Time.from_msg(header.stamp)).nanoseconds / 1e6
        with self._stats.lock:
            self._stats.processed += 1
            self._stats.last_good_at = finished
            if result.depth is not None:
                self._stats.with_depth += 1
                self._stats.focal_assumed = result.focal_assumed
            if estimate is not None:
                self._stats.with_visibility += 1
                self._stats.visibility = estimate
            self._stats.processing_ms.append((finished - frame.received_at) * 1e3)
            self._stats.inference_ms.append(result.timings_ms.get("total", 0.0))
            if stamp_age_ms is not None:
                self._stats.stamp_age_ms.append(stamp_age_ms)

    def _metric_scale_source(self, focal_assumed: bool | None, config: NodeConfig | None) -> str:
        if self._engine_info.get("depth_units") != "meters" or focal_assumed is None:
            return "n/a"
        if not self._engine_info.get("canonical_focal_px"):
            return "the checkpoint (no camera model: metres only near its training pixel scale)"
        if focal_assumed:
            hfov = f"{config.default_hfov_deg:g} deg" if config else "default_hfov_deg"
            return f"assumed field of view ({hfov}, no usable camera_info)"
        return "camera_info focal length"

    def _publish_camera_info(self, camera_info: CameraInfo | None, header, demand: OutputDemand,
                             width: int, height: int) -> None:
        if camera_info is None or not (demand.dehazed_info or demand.depth_info):
            return
        # The outputs have the input image's size, which need not be the calibrated one
        # (binning, a region of interest, a resized stream): describe the image published.
        matching = camera_info_for_image(camera_info, width, height, header)
        if demand.dehazed_info:
            self._outputs["dehazed/camera_info"].publish(matching)
        if demand.depth_info:
            self._outputs["depth/camera_info"].publish(matching)

    def _publish_points(self, result, camera_info: CameraInfo, header, config: NodeConfig) -> None:
        try:
            cloud = frame_outputs.points_message(result.depth, result.dehazed, camera_info, header,
                                                 config.point_decimation)
        except IntrinsicsError as exc:
            self._log_throttled("warning", "intrinsics", f"points not published: {exc}")
            return
        self._outputs["points"].publish(cloud)

    def _report_bad_frame(self, problem: str) -> None:
        with self._stats.lock:
            self._stats.invalid += 1
            self._stats.last_problem = f"bad frame: {problem}"
            self._stats.last_problem_at = time.monotonic()
        self._log_throttled("error", problem, f"dropped a frame from {self._input_topic}: {problem}")

    def _log_throttled(self, level: str, key: str, text: str) -> None:
        now = time.monotonic()
        with self._log_lock:
            last = self._last_logged.get(key)
            if last is not None and now - last < LOG_THROTTLE_S:
                return
            if len(self._last_logged) > 256:  # messages carry sizes: keep the table bounded
                self._last_logged.clear()
            self._last_logged[key] = now
        getattr(self.get_logger(), level)(text)

    # -- diagnostics ----------------------------------------------------------------------------

    def _relative_depth_note(self, config: NodeConfig) -> str:
        if config.publish_relative_depth:
            return ("depth is RELATIVE (model dcp): depth/image and points carry unitless optical "
                    "depth, not metres (publish_relative_depth is true)")
        return ("depth is RELATIVE (model dcp): depth/image and points are not published; "
                "depth/colormap shows it. Use a checkpoint for metric depth, or set "
                "publish_relative_depth:=true")

    def _visibility_values(self, estimate, config: NodeConfig | None) -> dict[str, str]:
        """The last visibility estimate, or why there is none, as diagnostics key-values."""
        if config is not None and not config.publish_visibility:
            note = "off (publish_visibility is false)"
        elif self._engine_info and self._engine_info.get("depth_units") != "meters":
            note = VISIBILITY_NEEDS_METRES
        elif estimate is None:
            note = "not computed yet (computed only while `visibility` has a subscriber)"
        else:
            low, high = estimate.interval_m
            return {"visibility (m)": f"{estimate.visibility_m:.1f}",
                    "visibility beta (1/m)": f"{estimate.beta_per_m:.5g}",
                    "visibility valid": str(estimate.valid).lower(),
                    "visibility status": estimate.status,
                    "visibility interquartile (m)": f"{low:.1f} .. {high:.1f}",
                    "visibility": estimate.describe(),
                    "visibility transmission from": estimate.transmission_source or "n/a"}
        return {"visibility (m)": "n/a", "visibility beta (1/m)": "n/a", "visibility valid": "false",
                "visibility status": "none", "visibility": note}

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        stats = self._stats
        with stats.lock:
            received, processed = stats.received, stats.processed
            counts = dict(received=stats.received, processed=stats.processed,
                          with_depth=stats.with_depth, dropped=stats.dropped,
                          invalid=stats.invalid, skipped=stats.skipped, failed=stats.failed)
            processing = list(stats.processing_ms)
            stamp_age = list(stats.stamp_age_ms)
            inference = list(stats.inference_ms)
            last_problem = stats.last_problem
            last_problem_at, last_good_at = stats.last_problem_at, stats.last_good_at
            last_received_at = stats.last_received_at
            focal_assumed = stats.focal_assumed
            with_visibility, estimate = stats.with_visibility, stats.visibility
        bad = counts["invalid"] + counts["failed"]
        previous_received, previous_processed, previous_bad, previous_time = self._previous_counts
        elapsed = max(now - previous_time, 1e-6)
        input_rate = max(0, received - previous_received) / elapsed
        output_rate = max(0, processed - previous_processed) / elapsed
        self._previous_counts = (received, processed, bad, now)
        # The level describes the recent window, the counters the whole run: one corrupt frame
        # warns in the period it arrived and for as long as no good frame has followed it.
        recent_bad = max(0, bad - previous_bad)
        problem_is_current = last_problem_at is not None and (
            recent_bad > 0 or last_good_at is None or last_good_at < last_problem_at)

        status = DiagnosticStatus()
        status.name = f"{self.get_fully_qualified_name()}: dehazing"
        status.hardware_id = str(self._engine_info.get("device", "none"))
        level, messages = DiagnosticStatus.OK, []
        config = self._config
        if self._state_label == "unconfigured":
            if self._configure_error:
                level, messages = DiagnosticStatus.ERROR, [self._configure_error]
            else:
                level, messages = DiagnosticStatus.WARN, ["unconfigured: waiting for configure"]
        elif self._state_label == "inactive":
            messages = ["inactive: not processing (activate to start)"]
        elif self._state_label == "active":
            silent_for = now - (last_received_at or self._active_since or now)
            no_input_after = max(2.0, 2.0 * self._diagnostics_period)
            if silent_for > no_input_after:
                level = DiagnosticStatus.WARN
                never = "no frame received" if last_received_at is None else "no new frame"
                messages.append(
                    f"NO INPUT: {never} on {self._input_topic} for {silent_for:.1f} s; check the "
                    "topic remapping, the publisher's QoS, and FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA "
                    "for large images")
            else:
                messages.append(f"processing {output_rate:.1f} Hz of {input_rate:.1f} Hz input")
            if self._camera_info is None:
                messages.append("no camera_info received: points and camera_info outputs are off")
            if problem_is_current:
                level = max(level, DiagnosticStatus.WARN)
                messages.append(
                    f"{recent_bad} bad frame(s) in the last {elapsed:.1f} s; last problem: {last_problem}"
                    if recent_bad else f"no good frame since the last problem: {last_problem}")
        if focal_assumed and config is not None:
            messages.append(f"metric depth assumes a {config.default_hfov_deg:g} degree field of view "
                            "(no usable camera_info)")
        if config is not None and self._engine_info.get("depth_units") not in (None, "meters"):
            level = max(level, DiagnosticStatus.WARN)
            messages.append(self._relative_depth_note(config))
        if self._startup_refusals:
            # ERROR although frames may flow: the node is not doing what it was told (a misspelt
            # input_transport listens on the wrong topic) until it is restarted.
            level = max(level, DiagnosticStatus.ERROR)
            messages.append("start-up parameters refused, running with defaults until restarted: "
                            + "; ".join(self._startup_refusals))
        status.level = level
        status.message = "; ".join(messages)

        def ms(samples, fraction):
            return f"{percentile(samples, fraction):.1f}" if samples else "n/a"

        values = {
            "state": self._state_label,
            "input topic": self._input_topic or "(not subscribed)",
            "input rate (Hz)": f"{input_rate:.2f}",
            "output rate (Hz)": f"{output_rate:.2f}",
            "frames received": str(counts["received"]),
            "frames processed": str(counts["processed"]),
            "frames processed with depth": str(counts["with_depth"]),
            "frames dropped (newer frame arrived)": str(counts["dropped"]),
            "frames invalid (bad data)": str(counts["invalid"]),
            "frames skipped (no subscribers)": str(counts["skipped"]),
            "frames failed (engine error)": str(counts["failed"]),
            "latency receive->publish median (ms)": ms(processing, 0.5),
            "latency receive->publish p95 (ms)": ms(processing, 0.95),
            "latency stamp->publish median (ms)": ms(stamp_age, 0.5),
            "latency stamp->publish p95 (ms)": ms(stamp_age, 0.95),
            "inference median (ms)": f"{statistics.median(inference):.1f}" if inference else "n/a",
            "last problem": last_problem or "none",
            "seconds since last problem": (f"{now - last_problem_at:.1f}" if last_problem_at is not None
                                           else "n/a"),
            "refused start-up parameters": "; ".join(self._startup_refusals) or "none",
            "metric scale from": self._metric_scale_source(focal_assumed, config),
            "frames with visibility": str(with_visibility),
        }
        values.update(self._visibility_values(estimate, config))
        for key in ("model", "device", "precision", "depth_units", "checkpoint", "max_side"):
            if key in self._engine_info:
                values[key.replace("_", " ")] = str(self._engine_info[key])
        status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diagnostics_pub.publish(array)


def main(args=None) -> int:
    """Run the node until SIGINT, SIGTERM or the lifecycle shutdown transition; 0 in each case.

    A signal only sets STOP_REQUESTED, which the start-up and the spin loop look at: nothing is
    cut off half-way, so SIGTERM (what launch, systemd and docker send) and Ctrl-C end the
    node the same clean way at every phase. rclpy's own handlers are not installed: they shut
    the context down from another thread at once, and a configure still loading the model then
    failed against the dead context ("Failed to complete transition", "Failed to publish log
    message to rosout"); an exception raised into torch's import could even abort the
    process. The price: a stop requested during configure waits for configure to return (about
    a second for the shipped model; a second signal interrupts it), and the spin loop wakes every
    0.1 s to look.
    """
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    if STOP_REQUESTED.is_set():
        return 0  # a signal while the modules loaded: nothing is set up yet
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    try:
        executor = SingleThreadedExecutor()
        node = DehazeNode()
        executor.add_node(node)
        if node.autostart and not STOP_REQUESTED.is_set():
            node.start_up(STOP_REQUESTED)
        while not STOP_REQUESTED.is_set() and not node.finalized.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        if node.finalized.is_set():
            # The reply to the shutdown request was handed to DDS in the callback that set the
            # flag; a moment more keeps the node (and its writer) alive while it is delivered.
            deadline = time.monotonic() + 0.3
            while rclpy.ok() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # a second signal, or the context shut down from elsewhere
    except Exception:
        # An error because the context was shut down underneath is part of a normal exit.
        # Anything else is a real failure.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if executor is not None:
            executor.shutdown()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
