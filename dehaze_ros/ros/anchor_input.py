"""The `anchor_points` input: PointCloud2 messages -> the AnchorCloud of each image frame.

Shared by the node and process_bag (no rclpy import: tf2 comes in as a lookup function). A cloud
reaches the camera optical frame by the first rule that applies:
1. its frame_id is the image's, or empty: used as it is;
2. ``anchor_extrinsic`` is set: that static pose of the cloud's frame in the camera frame;
3. a tf2 lookup is given (the node, where tf2_ros is installed): the transform at the cloud's stamp;
otherwise the frame is refused for anchors, saying which frames and what to set.

The clouds of the last few seconds are kept (a bounded number); a frame takes the one nearest to
its stamp, and the engine refuses it as stale beyond ``anchor_max_age_s``. Every problem is
counted (``counts``) and the last one kept in words (``last_problem``) for /diagnostics.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import numpy as np

from dehaze_ros import anchor_scale
from dehaze_ros.anchor_scale import AnchorCloud, AnchorRules, transform_points
from dehaze_ros.metric_scale import ANCHORS
from dehaze_ros.ros.pointcloud import CloudError, cloud_xyz

# (target frame, source frame, stamp seconds) -> 4 x 4 matrix from source to target, or raises.
TransformLookup = Callable[[str, str, float | None], np.ndarray]
KEEP_CLOUDS = 8
# Frames or clouds without stamps cannot be matched in time: the cloud must then have arrived
# within max_age_s plus this much before the frame is processed (a LiDAR that stops publishing
# must not anchor frames for ever with its last sweep).
UNSTAMPED_SLACK_S = 0.5


class AnchorInput:
    def __init__(
        self,
        extrinsic: np.ndarray | None = None,
        lookup: TransformLookup | None = None,
        keep: int = KEEP_CLOUDS,
        max_age_s: float = AnchorRules.max_age_s,
        clock: Callable[[], float] = time.monotonic,
        tf_hint: bool = True,
    ):
        """``lookup``: tf2 (the node); None: clouds in another frame need ``extrinsic``.
        ``max_age_s``: the engine's anchor_max_age_s, for clouds or frames without stamps."""
        self.extrinsic = extrinsic
        self.lookup = lookup
        self.max_age_s = max_age_s
        self.clock = clock
        # (stamp, frame_id, points, received at on ``clock``)
        self._clouds: deque[tuple[float | None, str, np.ndarray, float]] = deque(maxlen=keep)
        self.counts = {"clouds received": 0, "clouds unreadable": 0, "frames anchored": 0}
        self.last_problem = ""
        # Whether a refusal may point at tf2 (the node; process_bag reads no /tf).
        self.tf_possible = tf_hint

    @property
    def active(self) -> bool:
        """A cloud has arrived: from now on every depth frame is anchored or refused."""
        return self.counts["clouds received"] > 0

    def add(self, msg, stamp_s: float | None) -> str:
        """Take one PointCloud2. Returns its problem ('' if none): an unreadable cloud is
        counted and its problem kept, nothing raised."""
        self.counts["clouds received"] += 1
        try:
            points = cloud_xyz(msg)
        except CloudError as exc:
            self.counts["clouds unreadable"] += 1
            self.last_problem = f"anchor cloud unreadable: {exc}"
            return self.last_problem
        self._clouds.append((stamp_s, str(msg.header.frame_id), points, self.clock()))
        return ""

    def reset(self) -> None:
        """A new stream (the node's activate): no cloud of the old one is used."""
        self._clouds.clear()
        self.last_problem = ""

    def for_frame(self, frame_id: str, stamp_s: float | None) -> AnchorCloud | None:
        """The anchors of an image frame (camera optical frame ``frame_id``, stamp ``stamp_s``):
        None while no cloud has arrived (no anchor sensor: the source is off); an AnchorCloud
        with a ``problem`` when this frame cannot be anchored (the engine refuses it, in words)."""
        if not self.active:
            return None
        if not self._clouds:
            return AnchorCloud.refused(
                self.last_problem or "no readable anchor cloud yet", anchor_scale.NO_CLOUD
            )
        if stamp_s is None:
            cloud_stamp, cloud_frame, points, received = self._clouds[-1]
        else:
            # Newest first, so that among equally near (or unstamped) clouds the newest wins.
            cloud_stamp, cloud_frame, points, received = min(
                reversed(self._clouds),
                key=lambda cloud: abs(stamp_s - cloud[0]) if cloud[0] is not None else np.inf,
            )
        if stamp_s is None or cloud_stamp is None:
            age = self.clock() - received
            if age > self.max_age_s + UNSTAMPED_SLACK_S:
                return self._refuse(
                    f"stale: without stamps to match, the newest cloud arrived {age:.1f} s ago",
                    anchor_scale.STALE,
                )
        if cloud_frame and cloud_frame != frame_id:
            matrix = None
            if self.extrinsic is not None:
                matrix = self.extrinsic
            elif self.lookup is not None:
                try:
                    matrix = self.lookup(frame_id, cloud_frame, cloud_stamp)
                except Exception as exc:  # tf2's lookup raises several exception types
                    problem = f"no transform from '{cloud_frame}' to '{frame_id}': {exc}"
                    return self._refuse(problem, anchor_scale.NO_TRANSFORM)
            if matrix is None:
                return self._refuse(
                    f"the anchor cloud is in frame '{cloud_frame}', the image in '{frame_id}': "
                    + (
                        "set anchor_extrinsic or provide tf2 (tf2_ros)"
                        if self.tf_possible
                        else "set anchor_extrinsic"
                    ),
                    anchor_scale.FRAME_MISMATCH,
                )
            points = transform_points(points, matrix)
        return AnchorCloud(points, cloud_stamp)

    def note_result(self, scale) -> None:
        """Count what the engine made of this frame's anchors (its metric_scale.ScaleState):
        anchored, or refused by kind of reason (stale, too few anchors, ...)."""
        if scale is None:
            return
        reason = scale.refusals.get(ANCHORS)
        if reason is not None:
            key = "frames refused: " + scale.refusal_kinds.get(ANCHORS, anchor_scale.OTHER)
            self.counts[key] = self.counts.get(key, 0) + 1
            self.last_problem = reason
        elif scale.source == ANCHORS and not scale.held:
            self.counts["frames anchored"] = self.counts.get("frames anchored", 0) + 1

    def _refuse(self, problem: str, kind: str) -> AnchorCloud:
        self.last_problem = problem
        return AnchorCloud.refused(problem, kind)
