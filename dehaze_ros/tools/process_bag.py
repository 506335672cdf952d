"""process_bag: the node's outputs for every frame of a recorded rosbag2, offline.

    python -m dehaze_ros.tools.process_bag IN_BAG OUT_BAG --image-topic T [--camera-info-topic T]
        [--checkpoint P] [--device D] [--max-side N]
        [--outputs dehazed,depth,colormap,points,visibility] [--prefix P] [--overwrite]

Reads a rosbag2 folder (sqlite3 or MCAP; rosbags, no ROS install needed for the bag I/O), runs
every image of ``--image-topic`` (sensor_msgs/Image in any encoding the node takes, or
CompressedImage jpeg/png) through the same DehazeEngine and the same conversions as
dehaze_node (dehaze_ros.ros.frame_outputs), and writes a new bag in the same storage format: every
original topic, byte for byte, plus the outputs under the node's topic names (below
``--prefix``), each stamped with its input frame's header and written at its input's bag time,
so ``ros2 bag play`` replays them in step with the camera. CameraInfo is republished scaled to
the image as the node does; offered QoS is the node's (reliable, keep last 2), message types
and definitions are recorded, so ros2 bag play and Foxglove read the bag.

Options and outputs are the node's: every node parameter that means something offline is an
option of the same name and default (``max_side`` is ``--max-side``; booleans ``--x`` /
``--no-x``), read into the node's NodeConfig and validated by its rules, and the engine is
configured from it as the node's is. ``--outputs`` names the node's ``publish_*`` switches
(default: those the node has on); the topics written are the rows of frame_outputs.OUTPUTS those
switches enable, built by the node's own code (frame_outputs.build_messages), so a row added
there is written here too.

The bag is written into a hidden folder beside OUT_BAG and renamed into place only once it is
complete: Ctrl-C or SIGTERM removes the partial folder and leaves no OUT_BAG at all. OUT_BAG
is never replaced without ``--overwrite``.

Speed: the engine has no batch API, so frames go through it one at a time. A reader thread
deserialises and decodes the next frames while the engine runs (``--prefetch``), which is what
keeps a GPU busy; on a CPU torch uses all cores (``--num-threads``).

CameraInfo: the newest message of ``--camera-info-topic`` at or before each frame (the
node's rule), the bag's first one for frames recorded before any; without the option, the
image topic's sibling ``camera_info`` is used when the bag has it. With none, metric depth
assumes ``--default-hfov-deg`` and no points or */camera_info are written.

Output messages are serialised with rclpy (the messages the node would publish), so rclpy and
sensor_msgs must be importable: any ROS 2 install, or this repository's virtualenv.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import shutil
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dehaze_ros import visibility
from dehaze_ros.ros import frame_outputs
from dehaze_ros.ros.anchor_input import AnchorInput
from dehaze_ros.ros.image_conversion import ImageConversionError, to_rgb8
from dehaze_ros.ros.node_config import (
    PARAMETERS,
    SPECS,
    ConfigError,
    NodeConfig,
    parse_extrinsic,
    resolve_model,
)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
# Node parameters that mean nothing for a recorded bag: the live subscription, its QoS, the
# lifecycle and the node's timers. Every other parameter is an option (option_parameters).
NODE_ONLY = (
    "autostart",
    "input_transport",
    "input_reliability",
    "diagnostics_period",
    "max_rate_hz",
)
# Spellings kept from before the options came from the table.
ALIASES = {"publish_relative_depth": ("--relative-depth",)}
# A type hash for copied topics whose bag holds neither a definition nor a hash (rosbag2 before
# Iron wrote none) and that rosbags' type store does not know: the writer requires one, and no
# ros2 bag version checks it on playback.
UNKNOWN_TYPE_HASH = "RIHS01_" + "0" * 64
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


# Frames read before a topic of undecodable images is refused (a corrupt first frame or two is
# not a reason to refuse a recording).
FIRST_FRAMES_CHECKED = 20


class BagError(RuntimeError):
    """The bags or the options cannot be processed: the text says what to do."""


def output_switches() -> dict[str, str]:
    """--outputs name -> the node's switch (``depth`` -> ``publish_depth``), in table order. Read
    from frame_outputs.OUTPUTS when asked, not at import, so that the rows are the source."""
    switches = dict.fromkeys(output.enabled_by for output in frame_outputs.OUTPUTS)
    return {switch.removeprefix("publish_"): switch for switch in switches}


def option_parameters() -> tuple[str, ...]:
    """The node parameters that are options here: all but NODE_ONLY and the switches (--outputs)."""
    switches = set(output_switches().values())
    return tuple(
        spec.name for spec in PARAMETERS if spec.name not in NODE_ONLY and spec.name not in switches
    )


def add_parameter_options(parser: argparse.ArgumentParser) -> None:
    """An option per option_parameters() row: its default, type, choices and description."""
    for name in option_parameters():
        spec = SPECS[name]
        flags = (f"--{name.replace('_', '-')}",) + ALIASES.get(name, ())
        # argparse formats help with %: the descriptions are prose that may contain one.
        text = f"the node's {name}: " + spec.description.replace("%", "%%")
        if isinstance(spec.default, bool):
            parser.add_argument(
                *flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=spec.default,
                help=text,
            )
        else:
            parser.add_argument(
                *flags,
                dest=name,
                type=type(spec.default),
                default=spec.default,
                choices=spec.choices or None,
                help=text,
            )


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The NodeConfig of the parsed options: each option's parameter, the switches from --outputs,
    the node's defaults for NODE_ONLY."""
    values = {name: getattr(args, name) for name in option_parameters()}
    values.update({switch: name in args.outputs for name, switch in output_switches().items()})
    return NodeConfig(**values)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="process_bag",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    try:  # the options are made from the rows: a row whose switch is no parameter has none
        frame_outputs.check_outputs(frame_outputs.OUTPUTS, SPECS)
    except ValueError as exc:
        parser.error(str(exc))
    switches = output_switches()
    default_outputs = ",".join(name for name, switch in switches.items() if SPECS[switch].default)
    parser.add_argument(
        "in_bag", type=Path, metavar="IN_BAG", help="rosbag2 folder (with metadata.yaml)"
    )
    parser.add_argument(
        "out_bag", type=Path, metavar="OUT_BAG", help="rosbag2 folder to write (must not exist)"
    )
    parser.add_argument(
        "--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic"
    )
    parser.add_argument(
        "--camera-info-topic",
        default="",
        help="sensor_msgs/CameraInfo topic; empty: the image topic's sibling camera_info if "
        "recorded",
    )
    parser.add_argument(
        "--anchor-topic",
        default="",
        help="sensor_msgs/PointCloud2 topic of metric points (LiDAR, radar) that fix the depth's "
        "scale, as the node's anchor_points; empty: none",
    )
    parser.add_argument(
        "--outputs",
        default=default_outputs,
        help=f"comma-separated, of: {', '.join(switches)} (the node's publish_* switches)",
    )
    parser.add_argument(
        "--prefix",
        default="/",
        help="namespace of the output topics: /dehazed/image by default, /P/dehazed/image with P",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_BAG if it exists")
    add_parameter_options(parser)
    parser.add_argument(
        "--prefetch", type=int, default=8, help="messages read and decoded ahead of the engine"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (the summary is printed)"
    )
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.outputs.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(switches))
    if unknown or not wanted:
        parser.error(
            f"--outputs: {', '.join(unknown) or 'nothing'} is not one of {', '.join(switches)}"
        )
    args.outputs = tuple(name for name in switches if name in wanted)
    if args.prefetch < 1:
        parser.error("--prefetch must be at least 1")
    # The node's rules (ranges, choices, the engine's own checks), before any weights are loaded.
    args.config = node_config(args)
    try:
        args.config.validate()
    except ConfigError as exc:
        parser.error(
            f"{exc} (each option sets the node parameter of its name: --max-side sets max_side)"
        )
    return args


def output_topic(prefix: str, name: str) -> str:
    namespace = prefix.strip("/")
    return f"/{namespace}/{name}" if namespace else f"/{name}"


message_class = frame_outputs.message_class


def output_typestore():
    """The rosbags type store whose definitions match the messages this rclpy serialises.

    Of the output types only sensor_msgs/Range changed between distributions (Jazzy added
    ``variance``): the recorded definition must describe the bytes, or Foxglove and MCAP
    readers decode the wrong layout.
    """
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import Range

    newer = "variance" in Range.get_fields_and_field_types()
    return get_typestore(Stores.ROS2_KILTED if newer else Stores.ROS2_HUMBLE)


def output_qos():
    """The node's OUTPUT_QOS as rosbag2 metadata: reliable, keep last 2, volatile; durations 0
    (the RMW defaults), which every ros2 bag version reads."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return [
        Qos(
            QosHistory.KEEP_LAST,
            2,
            QosReliability.RELIABLE,
            QosDurability.VOLATILE,
            zero,
            zero,
            QosLiveliness.AUTOMATIC,
            zero,
            False,
        )
    ]


@dataclass
class Frame:
    """An image message read from the bag and decoded (or the problem that stopped it)."""

    msg: object
    image: np.ndarray | None = None
    encoding: str = ""
    rgb: np.ndarray | None = None
    problem: str = ""


def decode(msg, max_pixels: int) -> Frame:
    try:
        image, encoding = frame_outputs.decode_frame(msg, max_pixels)
        return Frame(msg, image, encoding, to_rgb8(image, encoding))
    except ImageConversionError as exc:
        return Frame(msg, problem=str(exc))


@dataclass
class Summary:
    frames: int = 0
    skipped: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    visibilities: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    scales: dict[str, int] = field(default_factory=dict)  # frames per scale source state
    factors: list[float] = field(default_factory=list)  # the factor of each frame with a source
    anchor_counts: dict[str, int] = field(
        default_factory=dict
    )  # --anchor-topic: AnchorInput.counts
    anchor_problem: str = ""
    seconds: float = 0.0


class BagProcessor:
    """Everything one run needs: the input's layout, the engine, the output connections."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.summary = Summary()
        self.notes: list[str] = []

    # -- input ----------------------------------------------------------------------------------

    def open_input(self):
        from rosbags.rosbag2 import Reader, ReaderError

        path = self.args.in_bag
        if not (path / "metadata.yaml").is_file():
            raise BagError(f"{path} is not a rosbag2 folder: no metadata.yaml in it")
        try:
            reader = Reader(path)
            reader.open()
        except (ReaderError, OSError, KeyError, ValueError) as exc:
            raise BagError(f"cannot read {path} as a rosbag2: {exc}") from exc
        import yaml

        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        self.storage = info["storage_identifier"]
        self.version = 9 if int(info.get("version", 8)) >= 9 else 8
        return reader

    def find_connections(self, reader) -> None:
        args = self.args
        by_topic = {conn.topic: conn for conn in reader.connections}
        image = by_topic.get(args.image_topic)
        if image is None or image.msgtype not in IMAGE_TYPES:
            listing = ", ".join(
                f"{conn.topic} ({conn.msgtype.rsplit('/', 1)[-1]}, {conn.msgcount})"
                for conn in reader.connections
                if conn.msgtype in IMAGE_TYPES
            )
            what = "has no topic" if image is None else f"has {image.msgtype}, not an image, on"
            raise BagError(
                f"{args.in_bag} {what} {args.image_topic!r}; its image topics: {listing or 'none'}"
            )
        self.image_conn = image
        info_topic = args.camera_info_topic
        if not info_topic:
            base = (
                args.image_topic[: -len("/compressed")]
                if args.image_topic.endswith("/compressed")
                else args.image_topic
            )
            sibling = (
                f"{base.rsplit('/', 1)[0]}/camera_info"
                if "/" in base.strip("/")
                else "/camera_info"
            )
            if sibling in by_topic and by_topic[sibling].msgtype == CAMERA_INFO_TYPE:
                info_topic = sibling
                self.notes.append(f"camera info from {sibling} (the image topic's sibling)")
        self.info_conn = None
        if info_topic:
            info = by_topic.get(info_topic)
            if info is None or info.msgtype != CAMERA_INFO_TYPE:
                listing = ", ".join(
                    c.topic for c in reader.connections if c.msgtype == CAMERA_INFO_TYPE
                )
                raise BagError(
                    f"{args.in_bag} has no CameraInfo topic {info_topic!r}; its CameraInfo "
                    f"topics: {listing or 'none'}"
                )
            self.info_conn = info
        self.anchor_conn = None
        if args.anchor_topic:
            anchor = by_topic.get(args.anchor_topic)
            if anchor is None or anchor.msgtype != CLOUD_TYPE:
                listing = ", ".join(c.topic for c in reader.connections if c.msgtype == CLOUD_TYPE)
                raise BagError(
                    f"{args.in_bag} has no PointCloud2 topic {args.anchor_topic!r}; "
                    f"its PointCloud2 topics: {listing or 'none'}"
                )
            self.anchor_conn = anchor

    def first_frame_check(self, reader) -> None:
        """The first frames decide whether the topic can be processed at all: an encoding the
        node does not take is an error now, not N skipped frames later. A corrupt frame or two at
        the start of a good recording is not: the bag is refused only when none of the first
        FIRST_FRAMES_CHECKED frames decodes."""
        from rclpy.serialization import deserialize_message

        first_problem, checked = "", 0
        for _, _, raw in reader.messages(connections=[self.image_conn]):
            frame = decode(
                deserialize_message(raw, message_class(self.image_conn.msgtype)),
                self.args.max_input_pixels,
            )
            if not frame.problem:
                return
            first_problem = first_problem or frame.problem
            checked += 1
            if checked == FIRST_FRAMES_CHECKED:
                break
        if checked == 0:
            raise BagError(f"{self.args.image_topic} has no messages in {self.args.in_bag}")
        which = "the first frame" if checked == 1 else f"none of the first {checked} frames"
        raise BagError(
            f"{self.args.image_topic}: {which} can be processed (the first: {first_problem})"
        )

    def first_camera_info(self, reader):
        from rclpy.serialization import deserialize_message

        if self.info_conn is None:
            return None
        for _, _, raw in reader.messages(connections=[self.info_conn]):
            return deserialize_message(raw, message_class(CAMERA_INFO_TYPE))
        return None

    # -- model and outputs ----------------------------------------------------------------------

    def load_engine(self):
        from dehaze_ros.engine import DehazeEngine

        config = self.args.config
        choice = resolve_model(config)
        if choice.warning:
            self.notes.append(choice.warning)
        try:
            self.engine = DehazeEngine(config.engine_config(choice))  # as the node's configure
        except (ValueError, RuntimeError, OSError) as exc:
            raise BagError(f"cannot set up the model: {exc}") from exc
        self.metric = self.engine.depth_units == "meters"
        return self.engine

    def plan_outputs(self, have_camera_info: bool) -> tuple[frame_outputs.Output, ...]:
        """The rows of frame_outputs.OUTPUTS this run writes: the node's choice for a frame when
        every topic has a subscriber (a bag records them all), with a note for each row switched
        on but not written. A row the table or the output type store cannot describe is an
        error here, before anything is written, never a connection left empty."""
        config, rows = self.args.config, frame_outputs.OUTPUTS
        planned = frame_outputs.wanted_outputs(
            config, lambda topic: True, self.metric, have_camera_info, rows
        )
        for output in rows:
            if getattr(config, output.enabled_by) and output not in planned:
                reason = frame_outputs.unavailable_reason(
                    output, config, self.metric, have_camera_info
                )
                if output.needs_camera_info and not have_camera_info:
                    reason += " (--camera-info-topic)"
                self.notes.append(f"{output.topic}: not written, {reason}")
        known = output_typestore().fielddefs
        unknown = [
            f"{output.topic} ({output.message_type})"
            for output in planned
            if output.message_type not in known
        ]
        if unknown:
            raise BagError(
                f"no message definition to record {', '.join(unknown)}: the output type "
                "store (rosbags) does not know the type"
            )
        if not planned:
            raise BagError(
                "nothing to write: every requested output was dropped ("
                + "; ".join(self.notes)
                + ")"
            )
        return planned

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> Summary:
        args = self.args
        out, staging = self.prepare_destination()
        reader = self.open_input()
        try:
            self.find_connections(reader)
            self.first_frame_check(reader)
            camera_info = self.first_camera_info(reader)
            self.load_engine()
            self.outputs = self.plan_outputs(camera_info is not None)
            self.out_names = {
                output.topic: output_topic(args.prefix, output.topic) for output in self.outputs
            }
            clashes = sorted(
                set(self.out_names.values()) & {conn.topic for conn in reader.connections}
            )
            if clashes:
                raise BagError(
                    f"{args.in_bag} already has {', '.join(clashes)}: choose another --prefix"
                )
            for note in self.notes:
                print(f"process_bag: {note}", file=sys.stderr)
            staging.mkdir(parents=True)
            self.write(reader, staging / out.name, camera_info)
        except BaseException:
            with signals_held(raise_after=False):  # a second Ctrl-C must not stop the cleanup
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            reader.close()
        self.publish_result(staging, out)
        return self.summary

    def prepare_destination(self) -> tuple[Path, Path]:
        args = self.args
        out = args.out_bag.resolve()
        source = args.in_bag.resolve()
        if out == source or source in out.parents or out in source.parents:
            raise BagError(f"OUT_BAG {args.out_bag} must not be IN_BAG, inside it or contain it")
        if out.exists() and not args.overwrite:
            raise BagError(f"{args.out_bag} exists; pass --overwrite to replace it")
        if out.exists() and not (out / "metadata.yaml").is_file():
            raise BagError(
                f"{args.out_bag} exists and is not a rosbag2 folder: not replacing it, even "
                "with --overwrite (remove it yourself)"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        # Same parent, so the final rename is atomic; hidden, so a partial bag is never mistaken
        # for a bag. The bag inside has OUT_BAG's name: its storage file is named after it.
        return out, out.parent / f".{out.name}.partial-{os.getpid()}"

    def write(self, reader, bag_path: Path, camera_info) -> None:
        from rclpy.serialization import serialize_message
        from rosbags.rosbag2 import StoragePlugin, Writer

        typestore = output_typestore()
        storage = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[self.storage]
        writer = Writer(bag_path, version=self.version, storage_plugin=storage)
        writer.open()
        try:
            copies = {}
            for conn in reader.connections:
                copies[conn.id] = writer.add_connection(
                    conn.topic,
                    conn.msgtype,
                    **self.definition(conn, typestore),
                    serialization_format=conn.ext.serialization_format,
                    offered_qos_profiles=conn.ext.offered_qos_profiles,
                )
            qos = output_qos()
            connections = {
                output.topic: writer.add_connection(
                    self.out_names[output.topic],
                    output.message_type,
                    typestore=typestore,
                    offered_qos_profiles=qos,
                )
                for output in self.outputs
            }
            written = {name: 0 for name in self.out_names.values()}

            def emit(output, timestamp: int, msg) -> None:
                connection = connections.get(output.topic)
                if connection is None:  # a row that plan_outputs did not plan: a bug, said plainly
                    raise BagError(
                        f"{output.topic} has no connection in the output bag (not planned)"
                    )
                writer.write(connection, timestamp, serialize_message(msg))
                written[self.out_names[output.topic]] += 1

            self.loop(reader, writer, copies, camera_info, emit)
            self.summary.written = written
        except BaseException:
            with signals_held(raise_after=False):
                writer.abort()
            raise
        # Closing writes the index and metadata.yaml; a signal now would leave a bag without
        # them, so a signal waits until it is done (and then discards the finished bag).
        with signals_held():
            writer.close()

    @staticmethod
    def definition(conn, typestore) -> dict:
        """Message definition and type hash for a copied connection: the bag's own, else the
        type store's, else none (old sqlite3 bags of custom types)."""
        msgdef, digest = conn.msgdef.data, conn.digest
        if not msgdef and conn.msgtype in typestore.fielddefs:
            msgdef = typestore.generate_msgdef(conn.msgtype, ros_version=2)[0]
            digest = digest or typestore.hash_rihs01(conn.msgtype)
        return {"msgdef": msgdef or "", "rihs01": digest or UNKNOWN_TYPE_HASH}

    def loop(self, reader, writer, copies: dict, camera_info, emit) -> None:
        from tqdm import tqdm

        args = self.args
        image_id = self.image_conn.id
        info_id = self.info_conn.id if self.info_conn is not None else None
        anchor_id = self.anchor_conn.id if self.anchor_conn is not None else None
        config = args.config
        # Unstamped clouds or frames age on the bag's clock (its receive times), not the wall's.
        self.bag_time_s = 0.0
        self.anchors = AnchorInput(
            parse_extrinsic(config.anchor_extrinsic) if config.anchor_extrinsic.strip() else None,
            max_age_s=config.anchor_max_age_s,
            clock=lambda: self.bag_time_s,
            tf_hint=False,
        )
        messages = Prefetcher(
            reader,
            image_id,
            info_id,
            self.image_conn.msgtype,
            args.max_input_pixels,
            args.prefetch,
            anchor_id,
        )
        progress = tqdm(
            total=self.image_conn.msgcount,
            unit="frame",
            desc="process_bag",
            disable=args.no_progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        started = time.monotonic()
        try:
            for conn, timestamp, raw, decoded in messages:
                writer.write(copies[conn.id], timestamp, raw)  # every original message, as recorded
                self.bag_time_s = timestamp / 1e9
                if conn.id == info_id:
                    camera_info = decoded
                elif conn.id == anchor_id:
                    self.anchors.add(decoded, frame_outputs.stamp_seconds(decoded.header))
                elif conn.id == image_id:
                    self.process(decoded, camera_info, timestamp, emit, progress)
                    progress.update(1)
        finally:
            messages.stop()
            progress.close()
            self.summary.seconds = time.monotonic() - started
            if anchor_id is not None:
                self.summary.anchor_counts = dict(self.anchors.counts)
                self.summary.anchor_problem = self.anchors.last_problem

    def process(self, frame: Frame, camera_info, timestamp: int, emit, progress) -> None:
        header = frame.msg.header
        if frame.problem:
            self.summary.skipped += 1
            self.summary.problems[frame.problem] = self.summary.problems.get(frame.problem, 0) + 1
            if self.summary.problems[frame.problem] == 1:
                # tqdm.write prints to stdout unless told otherwise, into the summary's stream.
                progress.write(
                    "process_bag: skipped a frame "
                    f"({header.stamp.sec}.{header.stamp.nanosec:09d}): {frame.problem}",
                    file=sys.stderr,
                )
            return
        height, width = frame.rgb.shape[:2]
        products = frame_outputs.FrameProducts(
            header,
            width,
            height,
            self.args.config,
            camera_info,
            self.metric,
            self.engine.depth_range,
            frame.image,
            frame.encoding,
            frame.rgb,
        )
        products.read_camera()
        products.anchors = self.anchors.for_frame(header.frame_id, products.stamp_s)
        # The node's two steps (dehaze_node._process_frame and _publish), every row listened to.
        if any(output.uses_engine for output in self.outputs):
            frame_outputs.run_engine(self.engine, self.outputs, products)
        self.summary.frames += 1
        for output, message in frame_outputs.build_messages(
            self.outputs, products, self.count_not_made
        ):
            emit(output, timestamp, message)
        scale = products.result.scale if products.result is not None else None
        if products.anchors is not None:
            self.anchors.note_result(scale)
        if scale is not None:
            state = scale.source + (" held" if scale.held else "")
            self.summary.scales[state] = self.summary.scales.get(state, 0) + 1
            if scale.source != "learned":
                self.summary.factors.append(scale.factor)
        estimate = products.visibility_made
        if estimate is not None:
            self.summary.statuses[estimate.status] = (
                self.summary.statuses.get(estimate.status, 0) + 1
            )
            if estimate.valid:
                self.summary.visibilities.append(estimate.visibility_m)

    def count_not_made(self, output, exc: Exception) -> None:
        """A row its builder could not make for this frame (camera_info without a focal length):
        counted with the reason, listed in the summary."""
        problem = f"{output.topic}: {exc}"
        self.summary.problems[problem] = self.summary.problems.get(problem, 0) + 1

    def publish_result(self, staging: Path, out: Path) -> None:
        """Move the finished bag to OUT_BAG (replacing the old one only now, when asked to). A
        signal here is too late to matter: the run completes."""
        with signals_held(raise_after=False):
            previous = None
            if out.exists():
                previous = out.parent / f".{out.name}.replaced-{os.getpid()}"
                out.rename(previous)
            (staging / out.name).rename(out)
            staging.rmdir()
            if previous is not None:
                shutil.rmtree(previous)


class Prefetcher:
    """Reads the bag in a thread: raw messages in bag order, images deserialised and decoded, the
    CameraInfo deserialised; a bounded queue keeps memory flat. The engine runs meanwhile."""

    _END = object()

    def __init__(
        self,
        reader,
        image_id: int,
        info_id: int | None,
        image_type: str,
        max_pixels: int,
        depth: int,
        anchor_id: int | None = None,
    ):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.args = (reader, image_id, info_id, image_type, max_pixels, anchor_id)
        self.thread = threading.Thread(target=self._read, name="process_bag_reader", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        from rclpy.serialization import deserialize_message

        reader, image_id, info_id, image_type, max_pixels, anchor_id = self.args
        image_class, info_class = message_class(image_type), message_class(CAMERA_INFO_TYPE)
        cloud_class = message_class(CLOUD_TYPE)
        try:
            for conn, timestamp, raw in reader.messages(connections=reader.connections):
                decoded = None
                if conn.id == image_id:
                    decoded = decode(deserialize_message(raw, image_class), max_pixels)
                elif conn.id == info_id:
                    decoded = deserialize_message(raw, info_class)
                elif conn.id == anchor_id:
                    decoded = deserialize_message(raw, cloud_class)
                if not self._put((conn, timestamp, raw, decoded)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self._put(exc)
            return
        self._put(self._END)

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise BagError(f"reading the bag failed: {type(item).__name__}: {item}") from item
            yield item

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5.0)


class signals_held:
    """SIGINT and SIGTERM only noted during a block that must not be cut in half (closing the
    bag, the renames, the cleanup); with ``raise_after`` one that arrived is raised as
    KeyboardInterrupt when the block ends. (Python runs handlers in the main thread whichever
    thread the OS picked, so replacing the handlers covers every thread; a signal mask would
    not.)"""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, raise_after: bool = True):
        self.raise_after = raise_after
        self.received: list[int] = []

    def __enter__(self):
        self.previous = {
            signum: signal.signal(signum, lambda number, frame: self.received.append(number))
            for signum in self.SIGNALS
        }
        return self

    def __exit__(self, exc_type, exc, traceback):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.received and self.raise_after and exc_type is None:
            raise KeyboardInterrupt(signal.Signals(self.received[0]).name)
        return False


def describe(summary: Summary, args, storage: str) -> str:
    written = ", ".join(f"{topic} {count}" for topic, count in summary.written.items())
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    line = (
        f"process_bag: {summary.frames} frames processed, {summary.skipped} skipped, in "
        f"{summary.seconds:.1f} s ({rate:.2f} frames/s); wrote {args.out_bag} ({storage}): "
        f"{written}"
    )
    if summary.statuses:
        counts = ", ".join(
            f"{status} {count}" for status, count in sorted(summary.statuses.items())
        )
        line += f"; visibility: {counts}"
        if summary.visibilities:
            line += (
                f", estimates {min(summary.visibilities):.0f}-{max(summary.visibilities):.0f} m "
                f"(median {statistics.median(summary.visibilities):.0f} m)"
            )
    if summary.factors:  # a scale source was configured (camera_height_m): how it went
        counts = ", ".join(f"{state} {count}" for state, count in sorted(summary.scales.items()))
        line += (
            f"; metric scale: {counts}, factor "
            f"{min(summary.factors):.2f}-{max(summary.factors):.2f} (median "
            f"{statistics.median(summary.factors):.2f})"
        )
    elif args.config.camera_height_m > 0 and summary.scales:
        line += "; metric scale: no frame showed the ground, the network's own metres throughout"
    if summary.anchor_counts:
        line += "; anchors: " + ", ".join(
            f"{key} {count}" for key, count in summary.anchor_counts.items()
        )
        if summary.anchor_problem:
            line += f" (last problem: {summary.anchor_problem})"
    for problem, count in summary.problems.items():
        line += f"\n  {count} x {problem}"
    return line


def _stop_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM (kill, a job scheduler) cleans up the way Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    processor = BagProcessor(args)
    try:
        summary = processor.run()
    except BagError as exc:
        print(f"process_bag: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            f"process_bag: interrupted; no partial bag left behind ({args.out_bag} "
            f"{'is as it was' if args.out_bag.exists() else 'was not created'})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(describe(summary, args, processor.storage), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# A bag from the built-in camera, for trying process_bag without a recording.


def _sample_frame(
    source,
    defaults: dict,
    t: float,
    period_s: float,
    start_ns: int,
    width: int,
    height: int,
    compressed: bool,
) -> tuple[int, tuple]:
    """The sample bag's frame at ``t`` s: its stamp (ns) and its image, camera_info and
    ground-truth visibility messages."""
    from sensor_msgs.msg import Range
    from std_msgs.msg import Header

    from dehaze_ros.ros.image_conversion import numpy_to_compressed, numpy_to_image
    from dehaze_ros.sim.sample_camera import haze_strength, pinhole_camera_info

    rgb, _, _ = source.frame(t)
    stamp_ns = start_ns + int(t * 1e9)
    header = Header(frame_id=defaults["frame_id"])
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
    image = (
        numpy_to_compressed(rgb, "rgb8", "jpeg", header)
        if compressed
        else numpy_to_image(rgb, "rgb8", header)
    )
    info = pinhole_camera_info(width, height, source.K, defaults["frame_id"])
    info.header = header
    beta = haze_strength(t, defaults["beta_min"], defaults["beta_max"], period_s)
    truth = Range(
        header=header,
        radiation_type=Range.INFRARED,
        min_range=0.0,
        max_range=math.inf,
        range=float(visibility.KOSCHMIEDER / beta),
    )
    return stamp_ns, (image, info, truth)


def write_sample_bag(
    path: str | Path,
    frames: int = 30,
    width: int = 640,
    height: int = 480,
    period_s: float = 30.0,
    storage: str = "sqlite3",
    compressed: bool = False,
    seed: int = 0,
) -> Path:
    """``frames`` frames of sample_camera's scene stream spread over one haze period (beta
    drifting 0.02 -> 0.08 -> 0.02 /m, visibility 196 -> 49 -> 196 m), recorded as
    /camera/image_raw (rgb8; or /camera/image_raw/compressed, jpeg), /camera/camera_info and
    /ground_truth/visibility (sensor_msgs/Range, the true V = 3.912 / beta of each frame)."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer

    from dehaze_ros.sim.sample_camera import CAMERA_PARAMETERS, SceneSource

    defaults = {name: spec[0] for name, spec in CAMERA_PARAMETERS.items()}
    source = SceneSource(
        width,
        height,
        seed,
        defaults["beta_min"],
        defaults["beta_max"],
        period_s,
        defaults["airlight"],
    )
    typestore = output_typestore()
    image_topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    start_ns = 1_700_000_000 * 10**9
    with Writer(Path(path), version=9, storage_plugin=plugin) as writer:
        # What sample_camera offers (and ros2 bag record stores): best effort, keep last 1.
        from rosbags.interfaces import QosReliability

        camera_qos = [output_qos()[0]._replace(depth=1, reliability=QosReliability.BEST_EFFORT)]
        image_conn = writer.add_connection(
            image_topic, image_type, typestore=typestore, offered_qos_profiles=camera_qos
        )
        info_conn = writer.add_connection(
            "/camera/camera_info",
            CAMERA_INFO_TYPE,
            typestore=typestore,
            offered_qos_profiles=camera_qos,
        )
        truth_conn = writer.add_connection(
            "/ground_truth/visibility", "sensor_msgs/msg/Range", typestore=typestore
        )
        for index in range(frames):
            t = index * period_s / frames
            stamp_ns, messages = _sample_frame(
                source, defaults, t, period_s, start_ns, width, height, compressed
            )
            for conn, msg in zip((image_conn, info_conn, truth_conn), messages):
                writer.write(conn, stamp_ns, serialize_message(msg))
    return Path(path)


if __name__ == "__main__":
    sys.exit(main())
