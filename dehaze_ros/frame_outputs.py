"""One camera frame in, the node's output messages out: shared by dehaze_node and process_bag.

Whatever the node publishes live and what ``process_bag`` writes into a bag offline must be the
same messages for the same frame, so the steps between a message and the engine, and between
the engine's result and a message, live here once. No rclpy import (messages are built by the
ROS-free helpers of image_conversion, pointcloud and visibility, which import sensor_msgs where
a message is made), so these are tested without DDS.
"""
from __future__ import annotations

import numpy as np

from dehaze_ros import image_conversion
from dehaze_ros.colormap import depth_to_colormap
from dehaze_ros.pointcloud import (IntrinsicsError, depth_to_points, intrinsics_from_camera_info,
                                   make_pointcloud2)

# The node's output topics (relative names), in the order it creates them.
OUTPUT_TOPICS = ("dehazed/image", "dehazed/camera_info", "depth/image", "depth/camera_info",
                 "depth/colormap", "points", "visibility")


def decode_frame(msg, max_pixels: int | None) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image or CompressedImage -> (array in its encoding, encoding); the frame is
    refused (ImageConversionError) beyond ``max_pixels`` before anything is decoded."""
    if hasattr(msg, "format"):  # CompressedImage
        return image_conversion.compressed_to_numpy(msg, max_pixels)
    return image_conversion.image_to_numpy(msg, max_pixels), msg.encoding


def focal_px_for_image(camera_info, width: int, height: int) -> float | None:
    """fx of a ``width`` x ``height`` image from camera_info (scaled to its size), or None: the
    engine then assumes its default field of view for metric depth."""
    if camera_info is None:
        return None
    try:
        return intrinsics_from_camera_info(camera_info, width, height)[0]
    except IntrinsicsError:
        return None


def dehazed_message(dehazed_rgb: np.ndarray, image: np.ndarray, encoding: str, header):
    """The dehazed frame in the input's encoding family (output_encoding), alpha passed through."""
    out_encoding = image_conversion.output_encoding(encoding)
    pixels = image_conversion.rgb8_to_encoding(dehazed_rgb, out_encoding,
                                               image_conversion.alpha_channel(image, encoding))
    return image_conversion.numpy_to_image(pixels, out_encoding, header)


def depth_message(depth: np.ndarray, header, inf_as_nan: bool = False):
    """REP-118 32FC1 metres; REP-117 infinities, or NaN for consumers that mishandle them."""
    depth = depth.astype(np.float32, copy=False)
    if inf_as_nan:
        # For consumers that mishandle REP-117's infinities; the colormap and the cloud still
        # tell too near from too far.
        depth = np.where(np.isinf(depth), np.float32(np.nan), depth)
    return image_conversion.numpy_to_image(depth, "32FC1", header)


def colormap_message(depth: np.ndarray, header, metric: bool, min_m: float, max_m: float,
                     relative_max: float):
    if metric:
        colored = depth_to_colormap(depth, min_m, max_m)
    else:
        colored = depth_to_colormap(depth, 0.0, relative_max, log_scale=False)
    return image_conversion.numpy_to_image(colored, "bgr8", header)


def points_message(depth: np.ndarray, dehazed_rgb: np.ndarray | None, camera_info, header,
                   decimation: int):
    """PointCloud2 of the depth with the dehazed colours; IntrinsicsError when camera_info has
    no usable focal length."""
    height, width = depth.shape
    fx, fy, cx, cy = intrinsics_from_camera_info(camera_info, width, height)
    xyz, rgb = depth_to_points(depth, fx, fy, cx, cy, decimation, dehazed_rgb)
    return make_pointcloud2(header, xyz, rgb)
