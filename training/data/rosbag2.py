"""RGB + registered depth from rosbag2 recordings (sqlite3 or MCAP), read with ``rosbags``.

The path is one bag folder (with ``metadata.yaml``) or a folder of bag folders; each bag is one
scene for the train/val/test split. Colour: ``sensor_msgs/Image`` (rgb8, bgr8, mono8, ...) or
``CompressedImage`` (jpeg/png). Depth: ``sensor_msgs/Image`` 32FC1 in metres or 16UC1 in
millimetres (REP-118), registered to the colour camera (same size), e.g. a RealSense
``aligned_depth_to_color`` topic. Pairs are matched by header stamp within ``max_time_diff_s``.

Frames are read once, when the source is built, and kept losslessly compressed in memory (PNG for
colour, zlib for float depth): random access during training without re-reading the bag. While
reading, messages are paired on their stamps first and only the pairs that are kept are decoded;
unpaired messages wait in bounded queues (see ``StampPairer``), so a bag in which one topic stops
does not pile up the other's frames.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dehaze_ros.image_conversion import (
    ImageConversionError,
    compressed_to_numpy,
    image_to_numpy,
    to_rgb8,
)
from training.config import HazeConfig, require
from training.data.common import (
    DataSource,
    FolderSourceConfig,
    LruCache,
    Sample,
    hazed_sample,
    random_crop,
    require_folder,
    resize_whole,
    split_scenes,
    stable_seed,
)
from training.data.io import DataError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
# An unmatched message waits at most this long (in stamp time) for its partner: a recorder writes
# both topics of one instant well within a second of each other.
PENDING_WINDOW_NS = 1_000_000_000
MAX_PENDING = 128  # per topic: about 1 s of a fast camera; holds even if stamps stop advancing


@dataclass
class Rosbag2Config(FolderSourceConfig):
    """data.sources.<name> of kind rosbag2 (the keys of every folder source, and these)."""

    kind: str = "rosbag2"
    color_topic: str = ""  # sensor_msgs/Image or CompressedImage topic
    depth_topic: str = ""  # sensor_msgs/Image 32FC1 (m) or 16UC1 (mm)
    max_time_diff_s: float = 0.02  # colour/depth pairing tolerance
    stride: int = 1  # keep every n-th pair
    max_frames: int = 0  # 0 = all pairs
    haze: HazeConfig = field(default_factory=HazeConfig)

    def check(self, prefix: str) -> None:
        super().check(prefix)
        self.haze.check(f"{prefix}.haze")
        require(self.stride >= 1, f"{prefix}.stride must be >= 1, got {self.stride}")
        require(self.max_frames >= 0, f"{prefix}.max_frames must be >= 0, got {self.max_frames}")
        require(
            self.max_time_diff_s > 0,
            f"{prefix}.max_time_diff_s must be > 0, got {self.max_time_diff_s}",
        )
        require(
            bool(self.color_topic) and bool(self.depth_topic),
            f"{prefix}: a rosbag2 source needs color_topic and depth_topic",
        )


@dataclass(frozen=True)
class BagFrame:
    color_png: bytes
    depth_zlib: bytes
    height: int
    width: int
    scene: str
    name: str

    def decode(self) -> tuple[np.ndarray, np.ndarray]:
        bgr = cv2.imdecode(np.frombuffer(self.color_png, np.uint8), cv2.IMREAD_COLOR)
        depth = np.frombuffer(zlib.decompress(self.depth_zlib), np.float32).reshape(
            self.height, self.width
        )
        return np.ascontiguousarray(bgr[..., ::-1]), depth.copy()


def find_bags(path: Path, source_name: str) -> list[Path]:
    require_folder(path, source_name, "rosbag2 path")
    if (path / "metadata.yaml").is_file():
        return [path]
    bags = sorted(p.parent for p in path.glob("*/metadata.yaml"))
    if not bags:
        raise DataError(
            f"data source '{source_name}': {path} is neither a rosbag2 folder (with "
            "metadata.yaml) nor a folder of them"
        )
    return bags


def _stamp_ns(msg, bag_time_ns: int) -> int:
    header = getattr(msg, "header", None)
    if header is not None:
        stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        if stamp > 0:
            return stamp
    return bag_time_ns  # drivers that leave the stamp empty: the recording time is all we have


def decode_color(msg, msgtype: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        image, encoding = compressed_to_numpy(msg)
    else:
        image, encoding = image_to_numpy(msg), msg.encoding
    return to_rgb8(image, encoding)


def decode_depth_m(msg, msgtype: str, topic: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        raise DataError(
            f"depth topic {topic} is a CompressedImage (compressedDepth); record the raw "
            "depth topic (sensor_msgs/Image 32FC1 or 16UC1) instead"
        )
    image = image_to_numpy(msg)
    if msg.encoding == "32FC1":
        depth = image.astype(np.float32)
    elif msg.encoding in ("16UC1", "mono16"):
        depth = image.astype(np.float32) / 1000.0  # REP-118: 16-bit depth is millimetres
    else:
        raise DataError(
            f"depth topic {topic} has encoding {msg.encoding!r}; expected 32FC1 (metres) "
            "or 16UC1 (millimetres)"
        )
    depth = np.array(depth, dtype=np.float32)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


class StampPairer:
    """Pairs colour and depth messages by stamp, in recording order, holding only what can still pair.

    Each topic's stamps are taken to increase (true of camera drivers). An unmatched message waits
    in its role's queue and is dropped when
      - a message of the other role arrives more than ``tolerance_ns`` after it: that message did
        not pair with it, and the other role's later messages lie further away still;
      - a message of its own role arrives more than ``window_ns`` after it: its partner would have
        to be recorded that late (this bounds the queue when the other topic stops altogether);
      - its queue grows beyond ``max_pending`` (the oldest goes first).
    A matched message takes the other role's closest waiting message; that one and the older ones
    before it cannot pair any more and are dropped.
    """

    def __init__(
        self, tolerance_ns: int, window_ns: int = PENDING_WINDOW_NS, max_pending: int = MAX_PENDING
    ):
        self.tolerance_ns = tolerance_ns
        self.window_ns = max(window_ns, tolerance_ns)
        self.max_pending = max_pending
        self.pending: dict[str, deque] = {"color": deque(), "depth": deque()}

    def add(
        self, role: str, stamp: int, item
    ) -> tuple[tuple[int, object], tuple[int, object]] | None:
        """((colour stamp, item), (depth stamp, item)) when ``item`` completes a pair, else None."""
        own, other = self.pending[role], self.pending["depth" if role == "color" else "color"]
        while own and own[0][0] < stamp - self.window_ns:
            own.popleft()
        while other and other[0][0] < stamp - self.tolerance_ns:
            other.popleft()
        match = min(range(len(other)), key=lambda i: abs(other[i][0] - stamp), default=None)
        if match is None or abs(other[match][0] - stamp) > self.tolerance_ns:
            own.append((stamp, item))
            if len(own) > self.max_pending:
                own.popleft()
            return None
        partner = other[match]
        for _ in range(match + 1):
            other.popleft()
        return ((stamp, item), partner) if role == "color" else (partner, (stamp, item))


def read_bag_frames(bag: Path, config: Rosbag2Config, source_name: str) -> list[BagFrame]:
    """Colour/depth pairs of one bag, matched by stamp, thinned by ``stride``, capped by ``max_frames``."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    frames: list[BagFrame] = []
    pair_count = 0
    with Reader(bag) as reader:
        by_topic = {conn.topic: conn for conn in reader.connections}
        for role, topic in (("color", config.color_topic), ("depth", config.depth_topic)):
            conn = by_topic.get(topic)
            if conn is None or conn.msgtype not in IMAGE_TYPES:
                image_topics = sorted(t for t, c in by_topic.items() if c.msgtype in IMAGE_TYPES)
                raise DataError(
                    f"data source '{source_name}': bag {bag} has no image topic {topic!r} "
                    f"({role}_topic); its image topics: {', '.join(image_topics) or 'none'}"
                )
        connections = [by_topic[config.color_topic], by_topic[config.depth_topic]]
        if connections[1].msgtype.endswith("CompressedImage"):
            # Said now, not at the first kept pair: decoding waits for pairing (below).
            raise DataError(
                f"bag {bag}: depth topic {config.depth_topic} is a CompressedImage "
                "(compressedDepth); record the raw depth topic (sensor_msgs/Image 32FC1 "
                "or 16UC1) instead"
            )
        pairer = StampPairer(int(config.max_time_diff_s * 1e9))
        for conn, bag_time, raw in reader.messages(connections=connections):
            role = "color" if conn.topic == config.color_topic else "depth"
            # Deserialising is cheap (the pixel field is a view of the raw message, not a copy);
            # decoding (JPEG/PNG, colour conversion, float depth) is not, so it waits until the
            # pair is known to be kept.
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            pair = pairer.add(role, _stamp_ns(msg, bag_time), (msg, conn))
            if pair is None:
                continue
            pair_count += 1
            if (pair_count - 1) % config.stride:
                continue
            (stamp, (color_msg, color_conn)), (_, (depth_msg, depth_conn)) = pair
            try:
                color = decode_color(color_msg, color_conn.msgtype)
                depth = decode_depth_m(depth_msg, depth_conn.msgtype, depth_conn.topic)
            except ImageConversionError as exc:
                raise DataError(
                    f"bag {bag}, topics {color_conn.topic} / {depth_conn.topic}: {exc}"
                ) from exc
            if depth.shape != color.shape[:2]:
                raise DataError(
                    f"bag {bag}: depth {config.depth_topic} is {depth.shape[1]}x"
                    f"{depth.shape[0]} but colour {config.color_topic} is "
                    f"{color.shape[1]}x{color.shape[0]}; use a depth topic registered "
                    "to the colour camera (e.g. aligned_depth_to_color)"
                )
            ok, png = cv2.imencode(".png", np.ascontiguousarray(color[..., ::-1]))
            frames.append(
                BagFrame(
                    png.tobytes(),
                    zlib.compress(depth.tobytes(), 1),
                    depth.shape[0],
                    depth.shape[1],
                    bag.name,
                    f"{bag.name}/{stamp}",
                )
            )
            if config.max_frames and len(frames) >= config.max_frames:
                break
    return frames


class Rosbag2Source(DataSource):
    kind = "rosbag2"
    has_depth = True

    def __init__(
        self, name: str, config: Rosbag2Config, split: str, root: Path, cache_items: int = 64
    ):
        super().__init__(name, config, split)
        bags = find_bags(root, name)
        assignment = split_scenes([bag.name for bag in bags], config, name)
        self.frames: list[BagFrame] = []
        for bag in bags:
            if bag.name in assignment[split]:
                self.frames.extend(read_bag_frames(bag, config, name))
        self._cache = LruCache(cache_items)
        if assignment[split] and not self.frames:
            raise DataError(
                f"data source '{name}': no colour/depth pairs within "
                f"{config.max_time_diff_s} s in {', '.join(sorted(assignment[split]))}; "
                "check the topics and max_time_diff_s"
            )

    def scenes(self) -> list[str]:
        return sorted({frame.scene for frame in self.frames})

    def __len__(self) -> int:
        return len(self.frames)

    def train_sample(self, rng: np.random.Generator, crop: int) -> Sample:
        index = int(rng.integers(len(self.frames)))
        color, depth = self._cache.get(index, self.frames[index].decode)
        (color,), depth, zoom = random_crop(
            [color], depth, crop, self.config.scale_range, rng, self.config.scale_reference_side
        )
        return hazed_sample(
            color,
            depth,
            self.config.haze,
            rng,
            f"{self.name}/{self.frames[index].name}",
            self.config.focal_px * zoom,
        )

    def eval_sample(self, index: int, max_side: int, seed: int = 0) -> Sample:
        frame = self.frames[index]
        color, depth, zoom = resize_whole(*self._cache.get(index, frame.decode), max_side)
        rng = np.random.default_rng(stable_seed(seed, self.name, frame.name))
        return hazed_sample(
            color,
            depth,
            self.config.haze,
            rng,
            f"{self.name}/{frame.name}",
            self.config.focal_px * zoom,
        )
