"""Reading images and depth maps from disk: RGB uint8 and float32 metres with NaN for unknown."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
DEPTH_EXTENSIONS = (".png", ".pgm", ".tif", ".tiff", ".pfm", ".npy")


class DataError(ValueError):
    """A data folder or file is missing, empty or not in a layout we can read."""


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB (gray and 16-bit images converted)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"cannot read image {path} (missing, unreadable or not an image)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image[..., ::-1])  # OpenCV reads BGR


def read_pfm(path: str | Path) -> np.ndarray:
    """A PFM file as float32 H x W (or H x W x 3), top row first."""
    with open(path, "rb") as handle:
        header = handle.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise DataError(f"{path} is not a PFM file (header {header[:8]!r})")
        channels = 3 if header == b"PF" else 1
        dims = handle.readline()
        while dims.startswith(b"#"):
            dims = handle.readline()
        match = re.match(rb"^\s*(\d+)\s+(\d+)\s*$", dims)
        if not match:
            raise DataError(f"{path}: malformed PFM size line {dims!r}")
        width, height = int(match.group(1)), int(match.group(2))
        scale = float(handle.readline().strip())
        dtype = "<f4" if scale < 0 else ">f4"  # negative scale = little-endian
        data = np.frombuffer(handle.read(), dtype=dtype)
    expected = width * height * channels
    if data.size < expected:
        raise DataError(
            f"{path}: PFM holds {data.size} values, expected {expected} ({width}x{height})"
        )
    shape = (height, width, channels) if channels == 3 else (height, width)
    # PFM stores the bottom row first.
    return np.ascontiguousarray(data[:expected].reshape(shape)[::-1]).astype(np.float32)


def write_pfm(path: str | Path, image: np.ndarray) -> None:
    """Little-endian PFM (used by tests and tools that write Middlebury-style data)."""
    image = np.asarray(image, dtype=np.float32)
    header = b"PF\n" if image.ndim == 3 else b"Pf\n"
    with open(path, "wb") as handle:
        handle.write(header)
        handle.write(f"{image.shape[1]} {image.shape[0]}\n-1.0\n".encode())
        handle.write(np.ascontiguousarray(image[::-1]).astype("<f4").tobytes())


def read_middlebury_calib(path: str | Path) -> dict[str, float]:
    """calib.txt of Middlebury 2014: focal length f (px), baseline (mm), doffs (px)."""
    text = Path(path).read_text()
    values: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    try:
        cam0 = [float(v) for v in values["cam0"].strip("[] ").replace(";", " ").split()]
        return {
            "f": cam0[0],
            "baseline_mm": float(values["baseline"]),
            "doffs": float(values["doffs"]),
        }
    except (KeyError, ValueError, IndexError) as exc:
        raise DataError(
            f"{path}: not a Middlebury 2014 calib.txt (needs cam0, baseline, doffs): {exc}"
        ) from exc


def middlebury_depth_m(disparity: np.ndarray, calib: dict[str, float]) -> np.ndarray:
    """Z[mm] = baseline * f / (d + doffs); unknown disparity (inf, nan, <= 0) -> NaN."""
    valid = np.isfinite(disparity) & (disparity > 0)
    depth = np.full(disparity.shape, np.nan, dtype=np.float32)
    depth[valid] = calib["baseline_mm"] * calib["f"] / (disparity[valid] + calib["doffs"]) / 1000.0
    return depth


def read_depth_m(path: str | Path, scale_m_per_unit: float) -> np.ndarray:
    """Depth in metres from a file: 16-bit image x scale (0 = hole), .npy / .pfm already metres.

    Invalid depth (holes, non-finite, <= 0) becomes NaN.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        depth = np.load(path).astype(np.float32)
    elif suffix == ".pfm":
        depth = read_pfm(path)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DataError(f"cannot read depth image {path}")
        if raw.ndim != 2:
            raise DataError(
                f"depth image {path} has {raw.shape[2]} channels; expected one "
                "(16-bit depth in units of depth_scale metres)"
            )
        if raw.dtype == np.uint8:
            raise DataError(
                f"depth image {path} is 8-bit: 8-bit depth has no metric scale; store "
                "16-bit PNG (with depth_scale) or .npy/.pfm in metres"
            )
        depth = raw.astype(np.float32) * np.float32(scale_m_per_unit)
    if depth.ndim != 2:
        raise DataError(f"depth {path} must be one channel, got shape {depth.shape}")
    depth = depth.astype(np.float32)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth
