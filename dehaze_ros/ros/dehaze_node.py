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

Outputs: one row each in frame_outputs.OUTPUTS (topic, type, switch, what it needs, builder);
the node creates their publishers, computes what the rows with a subscriber need and publishes
them from the table. /diagnostics: stats.diagnose, a pure function of the frame counters.

Relative depth (model dcp): its depth is an optical depth -ln(t) with no unit. depth/image is
a REP-118 topic whose consumers (costmaps, depth_image_proc) read metres, so by default the node
does NOT publish relative depth on depth/image nor build `points` from it; depth/colormap still
shows it (on its own fixed relative range). `publish_relative_depth:=true` publishes it anyway.
Diagnostics and a one-time warning say which case is in force.
"""

from __future__ import annotations

import sys
import threading

from dehaze_ros.ros import stop_signal

if __name__ == "__main__":
    # `python -m dehaze_ros.ros.dehaze_node`: a signal while the modules below load is remembered
    # and main() returns 0 at once (the console script: dehaze_ros.ros.entry_points).
    stop_signal.install()

# The imports follow the guard on purpose: loading them is the phase it covers.
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dehaze_ros.anchor_scale import extrinsic_matrix
from dehaze_ros.engine import DehazeEngine, slow_setup_notice
from dehaze_ros.ros import frame_outputs, image_conversion, stats
from dehaze_ros.ros.anchor_input import AnchorInput
from dehaze_ros.ros.frame_outputs import OUTPUTS, FrameProducts
from dehaze_ros.ros.image_conversion import ImageConversionError
from dehaze_ros.ros.node_config import (
    SPECS,
    ConfigError,
    NodeConfig,
    declare_node_parameters,
    integers_as_floats,
    parse_extrinsic,
    read_node_config,
    resolve_model,
)
from dehaze_ros.ros.pointcloud import UNCALIBRATED, intrinsics_problem

NODE_NAME = "dehaze_node"
WORKER_NAME = "dehaze_worker"  # the processing thread, named in logs and /diagnostics
LOG_THROTTLE_S = 5.0  # the same problem is logged at most this often
# What an unusable CameraInfo (uncalibrated, NaN, infinite) means for the outputs; one text
# whichever output meets it first.
UNCALIBRATED_CONSEQUENCES = (
    "points are not published, the camera_info outputs carry zero K "
    "and P, metric depth and visibility assume default_hfov_deg"
)


def input_qos(reliability: str) -> QoSProfile:
    """Sensor-data QoS (best effort, keep last 1): a late frame is worth less than a new one."""
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=(
            QoSReliabilityPolicy.RELIABLE
            if reliability == "reliable"
            else QoSReliabilityPolicy.BEST_EFFORT
        ),
        durability=QoSDurabilityPolicy.VOLATILE,
    )


# Reliable outputs: RViz and most tools subscribe reliable, and a reliable publisher also serves
# best-effort subscribers. Depth 2 keeps one frame in flight per slow subscriber, not a backlog.
OUTPUT_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=2,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)


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


class DehazeNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        refused = declare_node_parameters(self)
        # A read-only value can never be corrected at runtime: failing configure over it would
        # leave the node stuck until a restart. It runs with the default instead, and says so
        # in the log and in every /diagnostics message.
        self._startup_refusals = tuple(
            f"{value}; using the default {value.spec.default!r}"
            for value in refused
            if value.spec.stage == "startup"
        )
        for text in self._startup_refusals:
            self.get_logger().error(
                f"start-up parameter {text} (read-only: correct the launch "
                "arguments or params file and restart to change it)"
            )
        # Configure-time and live values can be set while unconfigured: configure fails, naming
        # them, until they are.
        self._refused_parameters = {
            value.spec.name: str(value) for value in refused if value.spec.stage != "startup"
        }
        self.add_on_set_parameters_callback(self._on_set_parameters)
        startup = read_node_config(self)
        self._autostart = startup.autostart
        self._config: NodeConfig | None = None  # set by configure, replaced on live changes
        self._engine = None
        self._engine_info: dict = {}
        self._configure_error = ""
        self._outputs: dict[str, object] = {}  # topic -> lifecycle publisher
        self._inputs: list = []
        self._camera_info: CameraInfo | None = None
        self._anchors = AnchorInput()  # anchor_points (set up at configure)
        self._anchor_lock = threading.Lock()  # the executor adds clouds, the worker reads them
        self._tf_buffer = None  # tf2 for anchor clouds in other frames, if installed
        self._input_topic = ""
        self._slot = LatestFrameSlot()
        self._worker: threading.Thread | None = None
        self._worker_exit = ""  # why the worker ended, for the watchdog
        self._stop_worker = threading.Event()
        self._stats = stats.FrameStats()
        self._previous = stats.StatsSnapshot(taken_at=time.monotonic())  # of the last diagnostics
        self._state_label = "unconfigured"
        self._active_since: float | None = None
        self._last_logged: dict[str, float] = {}
        self._log_lock = threading.Lock()
        self.finalized = threading.Event()  # set by the shutdown transition: main() then exits
        # Diagnostics run in every state, so /diagnostics also says *why* nothing is published.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_period = startup.diagnostics_period
        # A steady clock, not the node's: with use_sim_time a paused or looping bag stops or
        # rewinds ROS time, and /diagnostics (with the worker's watchdog in it) must keep saying
        # what the node is doing exactly then. rclpy has taken `clock` since Foxy.
        self._diagnostics_timer = self.create_timer(
            self._diagnostics_period,
            self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start_up(self, stop: threading.Event | stop_signal.StopRequest | None = None) -> None:
        """What `autostart` does: configure, then activate when configure succeeded and no stop
        was requested meanwhile (``stop``: configure loads the model, which takes seconds)."""
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS and not (
            stop is not None and stop.is_set()
        ):
            self.trigger_activate()

    @property
    def autostart(self) -> bool:
        return self._autostart

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = ""
        try:
            if self._refused_parameters:
                raise ConfigError(
                    "values given at start-up were refused (set them, then "
                    "configure again): " + "; ".join(self._refused_parameters.values())
                )
            config = read_node_config(self)
            config.validate()
            choice = resolve_model(config)
            if choice.warning:
                self.get_logger().warning(choice.warning)
            engine_config = config.engine_config(choice)
            notice = slow_setup_notice(engine_config)
            if notice:
                # Said before the wait, not after: configure holds the executor until it is done.
                self.get_logger().info(
                    f"configure: {notice}; the node answers again when this is done"
                )
            engine = DehazeEngine(engine_config)
        except Exception as exc:  # noqa: BLE001 - any failure to set up is FAILURE, not a crash
            self._configure_error = f"configure failed: {exc}"
            self.get_logger().error(self._configure_error)
            return TransitionCallbackReturn.FAILURE

        self._engine = engine
        self._engine_info = engine.describe()
        self._config = config
        self._anchors = AnchorInput(
            max_age_s=config.anchor_max_age_s,
            extrinsic=parse_extrinsic(config.anchor_extrinsic)
            if config.anchor_extrinsic.strip()
            else None,
            lookup=self._tf_lookup_function(),
        )
        self._stats = stats.FrameStats()
        self._previous = stats.StatsSnapshot(taken_at=time.monotonic())
        options = QoSOverridingOptions.with_default_policies()
        for output in OUTPUTS:
            self._outputs[output.topic] = self.create_lifecycle_publisher(
                frame_outputs.message_class(output.message_type),
                output.topic,
                OUTPUT_QOS,
                qos_overriding_options=options,
            )
        info = self._engine_info
        self.get_logger().info(
            f"configured: model {info['model']} on {info['device']} ({info['precision']}), "
            f"backend {info.get('backend', 'torch')}"
            + (f" ({info['backend_choice']})" if info.get("backend_choice") else "")
            + f", depth in {info['depth_units']}"
            + (f", checkpoint {info['checkpoint']}" if info.get("checkpoint") else "")
        )
        if info.get("device_warning"):
            self.get_logger().warning(str(info["device_warning"]))
        if info["depth_units"] != "meters":
            self.get_logger().warning(stats.relative_depth_note(config.publish_relative_depth))
            if config.publish_visibility:
                self.get_logger().warning(stats.VISIBILITY_NEEDS_METRES)
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
            # image_transport's naming: the compressed stream is under the (remapped) image topic.
            image_sub = self.create_subscription(
                CompressedImage,
                f"{self.resolve_topic_name('image')}/compressed",
                self._on_image,
                qos,
                qos_overriding_options=options,
            )
        else:
            image_sub = self.create_subscription(
                Image, "image", self._on_image, qos, qos_overriding_options=options
            )
        self._input_topic = image_sub.topic_name
        info_sub = self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, qos, qos_overriding_options=options
        )
        anchor_sub = self.create_subscription(
            PointCloud2,
            "anchor_points",
            self._on_anchor_points,
            qos,
            qos_overriding_options=options,
        )
        self._inputs = [image_sub, info_sub, anchor_sub]
        self._slot = LatestFrameSlot()
        # A new stream: a scale smoothed before a deactivate may belong to another camera or place.
        self._engine.reset_scale()
        with self._anchor_lock:
            self._anchors.reset()
        self._stop_worker.clear()
        self._start_worker()
        self._active_since = time.monotonic()
        self._state_label = "active"
        self.get_logger().info(
            f"active: listening on {self._input_topic} "
            f"({config.input_transport}, {config.input_reliability})"
        )
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
        # An exception here would reach rclpy's parameter service and end the executor's spin.
        try:
            return self._check_parameters(parameters)
        except Exception as exc:  # noqa: BLE001 - a value nobody foresaw is refused, not fatal
            return SetParametersResult(
                successful=False,
                reason=(f"refused: checking the new values failed ({type(exc).__name__}: {exc})"),
            )

    def _check_parameters(self, parameters) -> SetParametersResult:
        changes = {}
        for parameter in parameters:
            spec = SPECS.get(parameter.name)
            if spec is None:
                continue  # use_sim_time, qos_overrides.*: rclpy's own
            if spec.stage == "configure" and self._engine is not None:
                return SetParametersResult(
                    successful=False,
                    reason=(
                        f"{parameter.name} is applied at configure: change it while the node is "
                        "unconfigured (deactivate, cleanup, set it, configure)"
                    ),
                )
            value = parameter.value
            if (
                isinstance(spec.default, float)
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
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
        self._stats.received(now, replaced_unprocessed=self._slot.put(PendingFrame(msg, now)))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_anchor_points(self, msg: PointCloud2) -> None:
        with self._anchor_lock:
            problem = self._anchors.add(msg, frame_outputs.stamp_seconds(msg.header))
        if problem:
            self._warn_throttled("anchor cloud", problem)

    def _tf_lookup_function(self):
        """tf2's transform at a stamp as a 4 x 4 matrix, where tf2_ros is installed (else None:
        anchor clouds in another frame need anchor_extrinsic). The buffer and listener (one a
        node) start with the first cloud in another frame than the image's, so a node without
        such a sensor does not deserialise /tf; that first frame is refused (no transform yet)."""
        try:
            import tf2_ros
        except ImportError:
            return None

        def lookup(target: str, source: str, stamp_s: float | None):
            if self._tf_buffer is None:
                self._tf_buffer = tf2_ros.Buffer()
                self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)
            when = Time(nanoseconds=int(stamp_s * 1e9)) if stamp_s is not None else Time()
            transform = self._tf_buffer.lookup_transform(target, source, when).transform
            t, q = transform.translation, transform.rotation
            return extrinsic_matrix([t.x, t.y, t.z, q.x, q.y, q.z, q.w])

        return lookup

    # -- processing (worker thread) -------------------------------------------------------------

    def _start_worker(self) -> None:
        self._worker_exit = ""
        self._worker = threading.Thread(target=self._worker_main, name=WORKER_NAME, daemon=True)
        self._worker.start()

    def _worker_main(self) -> None:
        """The worker thread's body. The loop catches every Exception per frame; what still ends
        it (a BaseException such as SystemExit, or a bug outside the per-frame guard) is kept in
        ``_worker_exit`` for the watchdog (``_check_worker``), which reports it and restarts the
        worker, instead of going to threading's excepthook and leaving the node silent."""
        try:
            self._worker_loop()
        except BaseException as exc:  # noqa: BLE001 - recorded; the watchdog reports it, restarts
            self._worker_exit = f"{type(exc).__name__}: {exc}"
        else:
            if not self._stop_worker.is_set():
                self._worker_exit = "its loop returned without a stop request"

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
            except Exception as exc:  # noqa: BLE001 - no frame or engine error ends the thread
                if not self.context.ok():
                    break  # Ctrl-C took the context away mid-frame: a normal exit, not an error
                self._report_failed_frame(exc)

    def _report_failed_frame(self, exc: Exception) -> None:
        """Count a frame the engine or a builder failed on, and log it (throttled). Never raises:
        it runs in the worker's exception handler, where a second exception would end the thread."""
        try:
            problem = f"processing failed: {type(exc).__name__}: {exc}"
            self._stats.problem("failed", problem, time.monotonic())
            self._error_throttled(
                f"failed:{type(exc).__name__}",
                f"processing a frame failed, frame dropped: {type(exc).__name__}: {exc}",
            )
        except Exception:  # noqa: BLE001 - nothing left to report it with
            pass

    def _check_worker(self) -> None:
        """Watchdog, run with every diagnostics message: a worker that ended while the node is
        active is reported (ERROR in /diagnostics, naming the thread and the cause) and restarted,
        so one unforeseen failure never stops the output for good."""
        worker = self._worker
        if worker is None or worker.is_alive() or self._stop_worker.is_set():
            return
        cause = self._worker_exit or "it ended without a recorded cause"
        self._stats.worker_died(
            f"processing thread {WORKER_NAME} died ({cause}) and was restarted", time.monotonic()
        )
        self._error_throttled(
            "worker", f"processing thread {WORKER_NAME} died ({cause}); restarting it"
        )
        self._start_worker()

    def _subscribed(self, topic: str) -> bool:
        publisher = self._outputs.get(topic)
        return publisher is not None and publisher.get_subscription_count() > 0

    def _process_frame(self, frame: PendingFrame, config: NodeConfig) -> None:
        started = time.monotonic()
        engine = self._engine
        camera_info = self._camera_info
        header = frame.msg.header
        metric = engine.depth_units == "meters"
        wanted = frame_outputs.wanted_outputs(
            config, self._subscribed, metric, camera_info is not None
        )
        try:
            # From the message's fields or the PNG/JPEG header: nothing decoded or copied yet.
            what, width, height = image_conversion.frame_size(frame.msg)
            image_conversion.check_pixel_limit(width, height, config.max_input_pixels, what)
        except ImageConversionError as exc:
            self._report_bad_frame(str(exc))
            return
        products = FrameProducts(
            header, width, height, config, camera_info, metric, engine.depth_range
        )
        if not any(output.uses_engine for output in wanted):
            self._publish(wanted, products)  # camera_info only, or nothing at all
            self._stats.skipped(time.monotonic())
            return
        try:
            products.image, products.encoding = frame_outputs.decode_frame(
                frame.msg, config.max_input_pixels
            )
            products.rgb = image_conversion.to_rgb8(products.image, products.encoding)
        except ImageConversionError as exc:
            self._report_bad_frame(str(exc))
            return
        products.height, products.width = products.rgb.shape[:2]
        products.read_camera()
        with self._anchor_lock:
            products.anchors = self._anchors.for_frame(header.frame_id, products.stamp_s)
        if camera_info is not None and products.focal_px is None:
            self._warn_throttled(
                "intrinsics",
                f"{intrinsics_problem(camera_info) or UNCALIBRATED}; " + UNCALIBRATED_CONSEQUENCES,
            )
        decoded = time.monotonic()
        result = frame_outputs.run_engine(engine, wanted, products)
        if products.anchors is not None:
            with self._anchor_lock:
                self._anchors.note_result(result.scale)
        inferred = time.monotonic()
        published = self._publish(wanted, products)

        finished = time.monotonic()
        stages_ms = {
            "wait": (started - frame.received_at) * 1e3,
            "decode": (decoded - started) * 1e3,
            **{name: ms for name, ms in result.timings_ms.items() if name != "total"},
            "publish": (finished - inferred) * 1e3,
        }
        stamp_age_ms = None
        if header.stamp.sec or header.stamp.nanosec:
            stamp_age_ms = (self.get_clock().now() - Time.from_msg(header.stamp)).nanoseconds / 1e6
        self._stats.processed(
            finished,
            frame.received_at,
            result.timings_ms.get("total", 0.0),
            result.focal_assumed if result.depth is not None else None,
            products.visibility if "visibility" in published else None,
            stamp_age_ms,
            stages_ms,
            result.scale,
        )

    def _publish(self, wanted, products: FrameProducts) -> list[str]:
        """Build and publish each wanted output; the topics published."""

        def not_published(output, exc) -> None:
            self._warn_throttled("intrinsics", f"{exc}; " + UNCALIBRATED_CONSEQUENCES)

        published = []
        for output, message in frame_outputs.build_messages(wanted, products, not_published):
            self._outputs[output.topic].publish(message)
            published.append(output.topic)
        return published

    def _report_bad_frame(self, problem: str) -> None:
        self._stats.problem("invalid", f"bad frame: {problem}", time.monotonic())
        self._error_throttled(problem, f"dropped a frame from {self._input_topic}: {problem}")

    # rclpy allows one severity per call site (a second one raises ValueError: "Logger severity
    # cannot be changed between calls"), so each severity has its own method and its own
    # logger call below; never pick the severity at run time (getattr(logger, level)).
    def _warn_throttled(self, key: str, text: str) -> None:
        if self._should_log(key):
            self._safely(lambda: self.get_logger().warning(text), text)

    def _error_throttled(self, key: str, text: str) -> None:
        if self._should_log(key):
            self._safely(lambda: self.get_logger().error(text), text)

    def _should_log(self, key: str) -> bool:
        """True at most once per LOG_THROTTLE_S for ``key``: the same problem is logged once per
        period however many frames have it."""
        now = time.monotonic()
        with self._log_lock:
            last = self._last_logged.get(key)
            if last is not None and now - last < LOG_THROTTLE_S:
                return False
            if len(self._last_logged) > 256:  # messages carry sizes: keep the table bounded
                self._last_logged.clear()
            self._last_logged[key] = now
            return True

    @staticmethod
    def _safely(log_call, text: str) -> None:
        """Run a logging call that must not raise into its caller (the worker's handlers, the
        watchdog): a logging failure (the context going down, say) goes to stderr instead."""
        try:
            log_call()
        except Exception as exc:  # noqa: BLE001 - reporting must never end the reporting thread
            try:
                print(
                    f"[dehaze_node] {text} (logging failed: {type(exc).__name__}: {exc})",
                    file=sys.stderr,
                    flush=True,
                )
            except Exception:  # noqa: BLE001 - stderr closed: nothing left to tell
                pass

    # -- diagnostics ----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        # A timer callback that raised would end the executor's spin, and with it the node.
        try:
            self._check_worker()
            self._publish_diagnosis()
        except Exception as exc:  # noqa: BLE001 - diagnostics must never take the node down
            self._error_throttled(
                "diagnostics", f"publishing /diagnostics failed: {type(exc).__name__}: {exc}"
            )

    def _publish_diagnosis(self) -> None:
        current = self._stats.snapshot(time.monotonic())
        camera_info = self._camera_info
        view = stats.NodeView(
            state=self._state_label,
            configure_error=self._configure_error,
            input_topic=self._input_topic,
            have_camera_info=camera_info is not None,
            camera_info_problem=(intrinsics_problem(camera_info) or "") if camera_info else "",
            active_since=self._active_since,
            diagnostics_period=self._diagnostics_period,
            startup_refusals=self._startup_refusals,
            engine_info=self._engine_info,
            config=self._config,
            anchors=dict(self._anchors.counts),
            anchor_problem=self._anchors.last_problem,
        )
        diagnosis = stats.diagnose(current, self._previous, view)
        self._previous = current
        status = DiagnosticStatus(
            name=f"{self.get_fully_qualified_name()}: dehazing",
            hardware_id=str(self._engine_info.get("device", "none")),
            level=bytes([diagnosis.level]),
            message=diagnosis.message,
            values=[KeyValue(key=key, value=value) for key, value in diagnosis.values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def main(args=None) -> int:
    """Run the node until SIGINT, SIGTERM or the lifecycle shutdown transition; 0 in each case.

    A signal only sets stop_signal.STOP_REQUESTED, which the start-up and the spin loop look at:
    nothing is cut off half-way, so SIGTERM (what launch, systemd and docker send) and Ctrl-C end
    the node the same clean way at every phase. rclpy's own handlers are not installed: they shut
    the context down from another thread at once, and a configure still loading the model then
    failed against the dead context ("Failed to complete transition", "Failed to publish log
    message to rosout"); an exception raised into torch's import could even abort the
    process. The price: a stop requested during configure waits for configure to return (about
    a second for the shipped model; a second signal interrupts it), and the spin loop wakes every
    0.1 s to look.
    """
    stop_signal.install()
    if stop_signal.STOP_REQUESTED.is_set():
        return 0  # a signal while the modules loaded: nothing is set up yet
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    try:
        executor = SingleThreadedExecutor()
        node = DehazeNode()
        executor.add_node(node)
        if node.autostart and not stop_signal.STOP_REQUESTED.is_set():
            node.start_up(stop_signal.STOP_REQUESTED)
        while (
            not stop_signal.STOP_REQUESTED.is_set() and not node.finalized.is_set() and rclpy.ok()
        ):
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
