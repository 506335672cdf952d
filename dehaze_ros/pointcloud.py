"""Metric depth image + pinhole intrinsics -> coloured point cloud (sensor_msgs/PointCloud2).

Points are in the camera's optical frame (REP-103: x right, y down, z forward), so the cloud
carries the image's frame_id unchanged:

    X = (u - cx) * Z / fx,    Y = (v - cy) * Z / fy,    Z = depth(u, v)

Only finite, positive depths become points (REP-117 NaN / +-inf are skipped); the cloud is
unorganised and dense (height 1, no NaN points), which keeps messages small for DDS and RViz.
Colour is packed the PCL/RViz way: one float32 field ``rgb`` whose bits are 0x00RRGGBB.

No rclpy import: sensor_msgs is imported where a message is built, so the maths is tested alone.
"""

from __future__ import annotations

import array
import copy

import numpy as np

# x, y, z as float32, then the packed colour; 16 bytes a point keeps rows aligned.
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])


class IntrinsicsError(ValueError):
    """CameraInfo cannot be used to project pixels (uncalibrated or inconsistent)."""


# The one text every output names an unusable CameraInfo with (points, camera_info outputs,
# metric depth, visibility), so a user meets one message whatever they subscribed to.
UNCALIBRATED = (
    "camera_info is uncalibrated: its focal length is zero, negative, NaN or "
    "infinite (K and P must hold fx, fy > 0 and a finite principal point)"
)


def _pixel_transform(camera_info, width: int, height: int) -> np.ndarray:
    """3 x 3 matrix taking pixel coordinates of the calibrated image to those of a
    ``width`` x ``height`` image of the same view: K and P of that image are ``A @ K``, ``A @ P``.

    The image covers the region of interest (the whole calibrated image when ``roi`` is unset)
    at whatever resolution it has: binning, a resized stream or both. Pixel centres sit at
    integer coordinates, so a scale s maps u to (u - x_offset + 0.5) * s - 0.5, not u * s.
    Without a calibrated size (width/height 0) nothing can be scaled: identity.
    """
    roi = camera_info.roi
    if roi.width > 0 and roi.height > 0:
        x_offset, y_offset, region_w, region_h = roi.x_offset, roi.y_offset, roi.width, roi.height
    else:
        x_offset, y_offset = 0, 0
        region_w, region_h = int(camera_info.width), int(camera_info.height)
    if region_w <= 0 or region_h <= 0:
        return np.eye(3)
    scale_x, scale_y = width / region_w, height / region_h
    return np.array(
        [
            [scale_x, 0.0, (0.5 - x_offset) * scale_x - 0.5],
            [0.0, scale_y, (0.5 - y_offset) * scale_y - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )


def intrinsics_from_camera_info(
    camera_info, width: int, height: int
) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) for an image of ``width`` x ``height`` from a sensor_msgs/CameraInfo.

    The projection matrix P describes the rectified image and is what image_pipeline's depth
    tools use; K is the fallback when P is all zero. When the image size differs from the
    calibrated size (binning, a region of interest or a resized stream), the intrinsics are
    mapped to the image (``_pixel_transform``): the same numbers ``camera_info_for_image`` puts
    in the CameraInfo published next to the image.
    """
    calibrated = _calibrated_matrix(camera_info)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
        matrix = _pixel_transform(camera_info, width, height) @ calibrated
    fx, fy, cx, cy = (
        float(matrix[0, 0]),
        float(matrix[1, 1]),
        float(matrix[0, 2]),
        float(matrix[1, 2]),
    )
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        # A region of interest or a calibrated size far from the image's can still overflow.
        raise IntrinsicsError(
            f"{UNCALIBRATED}: mapped to the {width}x{height} image they give "
            f"fx={fx}, fy={fy}, cx={cx}, cy={cy}"
        )
    return fx, fy, cx, cy


def _calibrated_matrix(camera_info) -> np.ndarray:
    """The 3 x 3 intrinsics of the calibrated image: P's left block, or K when P is all zero.

    IntrinsicsError when they cannot project a pixel: a focal length that is zero, negative,
    NaN or infinite, or a principal point that is not finite. NaN must be tested for
    explicitly: ``NaN <= 0`` is False, and such a camera once gave clouds of NaN points.
    """
    projection = np.asarray(camera_info.p, dtype=np.float64).reshape(3, 4)
    use_projection = bool(np.any(projection[:, :3] != 0))  # NaN != 0: a broken P is not skipped
    matrix = (
        projection[:, :3]
        if use_projection
        else np.asarray(camera_info.k, dtype=np.float64).reshape(3, 3)
    )
    source = "P" if use_projection else "K"
    fx, fy, cx, cy = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise IntrinsicsError(f"{UNCALIBRATED} ({source}: fx={fx}, fy={fy}, cx={cx}, cy={cy})")
    return matrix


def intrinsics_problem(camera_info) -> str | None:
    """Why ``camera_info`` cannot project pixels (the IntrinsicsError text), or None when it can."""
    try:
        _calibrated_matrix(camera_info)
    except IntrinsicsError as exc:
        return str(exc)
    return None


def camera_info_for_image(camera_info, width: int, height: int, header=None):
    """A new CameraInfo that describes a ``width`` x ``height`` image of the camera ``camera_info``
    was calibrated for: that width and height, K and P mapped to its pixels, no binning and no
    region of interest (both are folded into K and P, as image_proc's resize does). D, R and
    the distortion model are unchanged: they do not depend on the pixel grid.

    Consumers such as depth_image_proc take the geometry of a depth image from the CameraInfo
    beside it, so the two must agree. The input is not modified.
    """
    transform = _pixel_transform(camera_info, width, height)
    info = copy.copy(camera_info)  # shallow; every field that changes is replaced, not mutated
    info.header = camera_info.header if header is None else header
    info.width, info.height = int(width), int(height)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf in K or P: replaced below
        k = transform @ np.asarray(camera_info.k, dtype=np.float64).reshape(3, 3)
        p = transform @ np.asarray(camera_info.p, dtype=np.float64).reshape(3, 4)
    try:
        intrinsics_from_camera_info(camera_info, width, height)
    except IntrinsicsError:
        # Uncalibrated (or NaN, infinite, negative): published as the all-zero K and P that
        # mean "uncalibrated" in sensor_msgs, never as numbers a consumer would project with.
        k, p = np.zeros((3, 3)), np.zeros((3, 4))
    info.k, info.p = k.reshape(-1).tolist(), p.reshape(-1).tolist()
    info.binning_x = info.binning_y = 0
    info.roi = type(camera_info.roi)()
    return info


def depth_to_points(
    depth_m: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    decimation: int = 1,
    colors_rgb: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Back-project every ``decimation``-th pixel (rows and columns) with valid depth.

    Returns (xyz N x 3 float32 metres, rgb N x 3 uint8 or None), rows in image scan order.
    """
    if depth_m.ndim != 2:
        raise ValueError(f"depth must be H x W, got shape {depth_m.shape}")
    if decimation < 1:
        raise ValueError(f"decimation must be >= 1, got {decimation}")
    if colors_rgb is not None and colors_rgb.shape[:2] != depth_m.shape:
        raise ValueError(f"colours {colors_rgb.shape} do not match depth {depth_m.shape}")
    depth = depth_m[::decimation, ::decimation]
    rows = np.arange(0, depth_m.shape[0], decimation, dtype=np.float32)
    cols = np.arange(0, depth_m.shape[1], decimation, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    row_index, col_index = np.nonzero(valid)
    z = depth[row_index, col_index].astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        x = (cols[col_index] - np.float32(cx)) * z / np.float32(fx)
        y = (rows[row_index] - np.float32(cy)) * z / np.float32(fy)
    xyz = np.stack([x, y, z], axis=1).astype(np.float32, copy=False)
    # A finite depth times a large offset over a tiny focal length can still overflow float32;
    # such a point is dropped like an invalid depth, so the cloud stays dense.
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.all():
        xyz, row_index, col_index = xyz[finite], row_index[finite], col_index[finite]
    rgb = None
    if colors_rgb is not None:
        rgb = colors_rgb[::decimation, ::decimation][row_index, col_index]
    return xyz, rgb


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """N x 3 uint8 -> N uint32 0x00RRGGBB (read as float32 'rgb' by PCL and RViz)."""
    rgb = rgb.astype(np.uint32)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def make_pointcloud2(header, xyz: np.ndarray, rgb: np.ndarray | None = None):
    """An unorganised, dense PointCloud2 with fields x, y, z (float32) and rgb (packed float32)."""
    from sensor_msgs.msg import PointCloud2, PointField

    points = np.zeros(len(xyz), dtype=POINT_DTYPE)
    points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        points["rgb"] = pack_rgb(rgb)
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, len(points)
    msg.fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
    ]
    msg.is_bigendian = False
    msg.point_step = POINT_DTYPE.itemsize
    msg.row_step = msg.point_step * msg.width
    # is_dense promises consumers (PCL filters, costmaps) that no point holds NaN or inf.
    msg.is_dense = bool(np.isfinite(xyz).all())
    data = array.array("B")
    data.frombytes(points.tobytes())
    msg.data = data
    return msg


def pointcloud2_to_arrays(msg) -> tuple[np.ndarray, np.ndarray]:
    """Read back a cloud written by make_pointcloud2: (xyz N x 3 float32, rgb N x 3 uint8)."""
    names = [field.name for field in msg.fields]
    if names != ["x", "y", "z", "rgb"] or msg.point_step != POINT_DTYPE.itemsize:
        raise ValueError(f"not an x,y,z,rgb cloud of {POINT_DTYPE.itemsize}-byte points: {names}")
    points = np.frombuffer(memoryview(msg.data).cast("B"), dtype=POINT_DTYPE)
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=1)
    packed = points["rgb"]
    rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(
        np.uint8
    )
    return xyz, rgb
