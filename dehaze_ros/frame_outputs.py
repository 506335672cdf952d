"""One camera frame in, the node's output messages out: shared by dehaze_node and process_bag.

Whatever the node publishes live and what ``process_bag`` writes into a bag offline must be the
same messages for the same frame, so the steps between a message and the engine, and between
the engine's result and a message, live here once. No rclpy import (messages are built by the
ROS-free helpers of image_conversion, pointcloud and visibility, which import sensor_msgs where
a message is made), so these are tested without DDS.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dehaze_ros import image_conversion, visibility
from dehaze_ros.camera import focal_from_hfov
from dehaze_ros.colormap import depth_to_colormap
from dehaze_ros.metric_scale import Pinhole, confidence_map
from dehaze_ros.pointcloud import (
    IntrinsicsError,
    camera_info_for_image,
    depth_to_points,
    intrinsics_from_camera_info,
    make_pointcloud2,
)


def decode_frame(msg, max_pixels: int | None) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image or CompressedImage -> (array in its encoding, encoding); the frame is
    refused (ImageConversionError) beyond ``max_pixels`` before anything is decoded."""
    if hasattr(msg, "format"):  # CompressedImage
        return image_conversion.compressed_to_numpy(msg, max_pixels)
    return image_conversion.image_to_numpy(msg, max_pixels), msg.encoding


def camera_for_image(camera_info, width: int, height: int) -> Pinhole | None:
    """The intrinsics of a ``width`` x ``height`` image from camera_info (mapped to its size), or
    None without a usable one: the engine then assumes its field of view, centred."""
    if camera_info is None:
        return None
    try:
        return Pinhole(*intrinsics_from_camera_info(camera_info, width, height))
    except IntrinsicsError:
        return None


def stamp_seconds(header) -> float | None:
    """The header stamp in seconds, or None for a zero stamp (a camera that sets none): the
    metric scale's smoothing then counts frames instead of seconds."""
    stamp = header.stamp
    if not (stamp.sec or stamp.nanosec):
        return None
    return stamp.sec + stamp.nanosec * 1e-9


def dehazed_message(dehazed_rgb: np.ndarray, image: np.ndarray, encoding: str, header):
    """The dehazed frame in the input's encoding family (output_encoding), alpha passed through."""
    out_encoding = image_conversion.output_encoding(encoding)
    pixels = image_conversion.rgb8_to_encoding(
        dehazed_rgb, out_encoding, image_conversion.alpha_channel(image, encoding)
    )
    return image_conversion.numpy_to_image(pixels, out_encoding, header)


def depth_message(depth: np.ndarray, header, inf_as_nan: bool = False):
    """REP-118 32FC1 metres; REP-117 infinities, or NaN for consumers that mishandle them."""
    depth = depth.astype(np.float32, copy=False)
    if inf_as_nan:
        # For consumers that mishandle REP-117's infinities; the colormap and the cloud still
        # tell too near from too far.
        depth = np.where(np.isinf(depth), np.float32(np.nan), depth)
    return image_conversion.numpy_to_image(depth, "32FC1", header)


def confidence_message(support: np.ndarray, header):
    """depth/confidence: 32FC1 in [0, 1] per pixel, from what its depth rests on (the engine's
    depth_support; metric_scale.CONFIDENCE)."""
    return image_conversion.numpy_to_image(confidence_map(support), "32FC1", header)


def colormap_message(
    depth: np.ndarray, header, metric: bool, min_m: float, max_m: float, relative_max: float
):
    if metric:
        colored = depth_to_colormap(depth, min_m, max_m)
    else:
        colored = depth_to_colormap(depth, 0.0, relative_max, log_scale=False)
    return image_conversion.numpy_to_image(colored, "bgr8", header)


def points_message(
    depth: np.ndarray, dehazed_rgb: np.ndarray | None, camera_info, header, decimation: int
):
    """PointCloud2 of the depth with the dehazed colours; IntrinsicsError when camera_info has
    usable focal length (uncalibrated, NaN or infinite intrinsics)."""
    height, width = depth.shape
    fx, fy, cx, cy = intrinsics_from_camera_info(camera_info, width, height)
    xyz, rgb = depth_to_points(depth, fx, fy, cx, cy, decimation, dehazed_rgb)
    return make_pointcloud2(header, xyz, rgb)


# ---------------------------------------------------------------------------------------------
# The node's outputs as one table: the node creates a publisher per row, asks the engine for what
# the rows with a subscriber need, and publishes each of them with the row's builder.

RELATIVE_DEPTH_RULES = ("ok", "opt_in", "never")


@dataclass
class FrameProducts:
    """One frame and what the node made of it: the input of every output's builder."""

    header: object
    width: int
    height: int
    config: object  # the node's NodeConfig for this frame
    camera_info: object = None  # the latest CameraInfo, or None
    metric: bool = True  # the engine's depth is in metres (not relative, as dcp's)
    depth_range: tuple[float, float] = (0.0, 0.0)  # the engine's, for the visibility estimate
    image: np.ndarray | None = None  # decoded, in the input's encoding
    encoding: str = ""
    rgb: np.ndarray | None = None
    focal_px: float | None = None  # fx of this image from camera_info; None: assumed
    camera: Pinhole | None = None  # its full intrinsics (the ground plane needs cx, cy too)
    stamp_s: float | None = None  # header stamp in seconds (None: zero), for the scale's smoothing
    result: object = None  # the EngineResult; None when no wanted output needs the engine

    def read_camera(self) -> None:
        """focal_px and camera of this frame's image (its width x height) from camera_info, and
        stamp_s from the header: what the engine needs besides the pixels. Once the frame is decoded."""
        self.camera = camera_for_image(self.camera_info, self.width, self.height)
        self.focal_px = self.camera.fx if self.camera is not None else None
        self.stamp_s = stamp_seconds(self.header)

    @cached_property
    def camera_info_out(self):
        """The CameraInfo describing the published images (both camera_info topics)."""
        return camera_info_for_image(self.camera_info, self.width, self.height, self.header)

    @cached_property
    def visibility(self):
        """The frame's VisibilityEstimate (computed once, when an output asks for it)."""
        return visibility.estimate_from_result(
            self.result, self.rgb, self.config.max_side, self.depth_range
        )

    @property
    def visibility_made(self):
        """The VisibilityEstimate if an output made one for this frame, else None (without
        computing it): for reports that count estimates without naming the topic."""
        return self.__dict__.get("visibility")


def _dehazed(frame: FrameProducts):
    return dehazed_message(frame.result.dehazed, frame.image, frame.encoding, frame.header)


def _depth(frame: FrameProducts):
    return depth_message(frame.result.depth, frame.header, frame.config.depth_inf_as_nan)


def _confidence(frame: FrameProducts):
    return confidence_message(frame.result.depth_support, frame.header)


def _colormap(frame: FrameProducts):
    config = frame.config
    return colormap_message(
        frame.result.depth,
        frame.header,
        frame.metric,
        config.colormap_min_m,
        config.colormap_max_m,
        config.colormap_relative_max,
    )


def _points(frame: FrameProducts):
    return points_message(
        frame.result.depth,
        frame.result.dehazed,
        frame.camera_info,
        frame.header,
        frame.config.point_decimation,
    )


def _visibility(frame: FrameProducts):
    focal_px = frame.focal_px
    if focal_px is None:
        focal_px = focal_from_hfov(frame.width, frame.config.default_hfov_deg)
    return visibility.range_message(
        frame.visibility, frame.header, visibility.horizontal_fov_rad(focal_px, frame.width)
    )


@dataclass(frozen=True)
class Output:
    """One output topic: its message, the parameter that switches it, what it needs, its builder."""

    topic: str  # relative name
    message_type: str  # "package/msg/Name"
    enabled_by: str  # the boolean node parameter that switches it on and off
    build: Callable[[FrameProducts], object]  # IntrinsicsError: not published for this frame
    uses_dehazed: bool = False  # needs the engine's dehazed pixels
    uses_depth: bool = False  # needs the engine's depth
    needs_camera_info: bool = False
    # With relative depth (model dcp): "ok" published anyway; "opt_in" only with
    # publish_relative_depth (consumers of these read metres); "never" (needs metres).
    relative_depth: str = "ok"

    @property
    def uses_engine(self) -> bool:
        return self.uses_dehazed or self.uses_depth


OUTPUTS: tuple[Output, ...] = (
    Output(
        "dehazed/image", "sensor_msgs/msg/Image", "publish_dehazed", _dehazed, uses_dehazed=True
    ),
    Output(
        "dehazed/camera_info",
        "sensor_msgs/msg/CameraInfo",
        "publish_dehazed",
        lambda frame: frame.camera_info_out,
        needs_camera_info=True,
    ),
    Output(
        "depth/image",
        "sensor_msgs/msg/Image",
        "publish_depth",
        _depth,
        uses_depth=True,
        relative_depth="opt_in",
    ),
    Output(
        "depth/camera_info",
        "sensor_msgs/msg/CameraInfo",
        "publish_depth",
        lambda frame: frame.camera_info_out,
        needs_camera_info=True,
        relative_depth="opt_in",
    ),
    # How far to trust each pixel of depth/image: it rates metres, so never for relative depth.
    Output(
        "depth/confidence",
        "sensor_msgs/msg/Image",
        "publish_confidence",
        _confidence,
        uses_depth=True,
        relative_depth="never",
    ),
    Output(
        "depth/colormap", "sensor_msgs/msg/Image", "publish_colormap", _colormap, uses_depth=True
    ),
    # The cloud is coloured with the dehazed image.
    Output(
        "points",
        "sensor_msgs/msg/PointCloud2",
        "publish_points",
        _points,
        uses_dehazed=True,
        uses_depth=True,
        needs_camera_info=True,
        relative_depth="opt_in",
    ),
    # Visibility is -ln(t) / depth: the depth network runs for it even when no depth topic has
    # a subscriber; relative depth has no metres, so there is nothing to estimate.
    Output(
        "visibility",
        "sensor_msgs/msg/Range",
        "publish_visibility",
        _visibility,
        uses_depth=True,
        relative_depth="never",
    ),
)


def message_class(message_type: str):
    """The Python class of 'package/msg/Name'."""
    package, _, name = message_type.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def unavailable_reason(output: Output, config, metric: bool, have_camera_info: bool) -> str:
    """Why ``output`` cannot be made with this model and camera whatever its switch says, in
    words ("" when it can): what the node keeps quiet about per frame and process_bag says once."""
    if output.needs_camera_info and not have_camera_info:
        return "there is no CameraInfo"
    if not metric and output.relative_depth == "never":
        return "it needs metric depth (the model's depth is relative)"
    if not metric and output.relative_depth == "opt_in" and not config.publish_relative_depth:
        return "the model's depth is relative, not metres (publish_relative_depth writes it anyway)"
    return ""


def wanted_outputs(
    config,
    subscribed: Callable[[str], bool],
    metric: bool,
    have_camera_info: bool,
    outputs: tuple[Output, ...] = OUTPUTS,
) -> tuple[Output, ...]:
    """The outputs to make for a frame: switched on, with what they need, and listened to."""
    return tuple(
        output
        for output in outputs
        if getattr(config, output.enabled_by)
        and not unavailable_reason(output, config, metric, have_camera_info)
        and subscribed(output.topic)
    )


# ---------------------------------------------------------------------------------------------
# One frame through the rows: the node publishes and process_bag writes what these two make, so
# a row added to OUTPUTS reaches both without either naming it.


def run_engine(engine, wanted: tuple[Output, ...], frame: FrameProducts):
    """Run the engine on ``frame.rgb`` for what the ``wanted`` rows use (nothing unused is
    computed: visibility alone needs depth only); the EngineResult, also set on ``frame``."""
    frame.result = engine.process(
        frame.rgb,
        want_dehazed=any(output.uses_dehazed for output in wanted),
        want_depth=any(output.uses_depth for output in wanted),
        focal_px=frame.focal_px,
        camera=frame.camera,
        stamp_s=frame.stamp_s,
    )
    return frame.result


def build_messages(
    wanted: tuple[Output, ...], frame: FrameProducts, not_made: Callable[[Output, Exception], None]
) -> Iterator[tuple[Output, object]]:
    """(row, message) for each ``wanted`` row, in table order, each built as it is asked for (the
    node publishes one before building the next). A row that cannot be made for this frame (its
    builder raised IntrinsicsError: camera_info without a usable focal length) is handed to
    ``not_made`` with the reason and left out; other errors propagate to the caller's handler."""
    for output in wanted:
        try:
            message = output.build(frame)
        except IntrinsicsError as exc:
            not_made(output, exc)
            continue
        yield output, message


def check_outputs(outputs: tuple[Output, ...], parameters: Mapping[str, object]) -> None:
    """Raise ValueError naming every row that is not well formed: a topic listed twice, a switch
    that is not a boolean parameter of ``parameters`` (node_config.SPECS), an unknown rule."""
    problems, topics = [], set()
    for output in outputs:
        if output.topic in topics:
            problems.append(f"{output.topic}: listed twice")
        topics.add(output.topic)
        spec = parameters.get(output.enabled_by)
        if spec is None or not isinstance(spec.default, bool):
            problems.append(
                f"{output.topic}: enabled_by {output.enabled_by!r} is not a boolean "
                "parameter of node_config.PARAMETERS; add a row there"
            )
        if output.relative_depth not in RELATIVE_DEPTH_RULES:
            problems.append(
                f"{output.topic}: relative_depth must be one of "
                f"{', '.join(RELATIVE_DEPTH_RULES)}, got {output.relative_depth!r}"
            )
    if problems:
        raise ValueError("output table: " + "; ".join(problems))
