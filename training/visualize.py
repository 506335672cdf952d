"""Image grids for TensorBoard and evaluation reports (uint8 RGB numpy).

Depth is coloured over a fixed metric range (dehaze_ros.colormap: log scale, near red, far blue,
unknown black) so that a colour means the same distance in every tile and every step. The
difference maps are weight distributions (they sum to 1): they are shown relative to their own
maximum, which is the only scale they have.
"""

from __future__ import annotations

import cv2
import numpy as np

from dehaze_ros.colormap import depth_to_colormap


def rgb_tile(image: np.ndarray) -> np.ndarray:
    """H x W x 3 float [0, 1] (or uint8) -> uint8."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def depth_tile(depth_m: np.ndarray, near_m: float, far_m: float) -> np.ndarray:
    return depth_to_colormap(depth_m, near_m, far_m)[..., ::-1].copy()


def weight_tile(weights: np.ndarray) -> np.ndarray:
    peak = float(np.nanmax(weights)) if np.isfinite(weights).any() else 0.0
    levels = (
        np.zeros(weights.shape, np.uint8)
        if peak <= 0
        else (np.clip(np.nan_to_num(weights / peak), 0, 1) * 255 + 0.5).astype(np.uint8)
    )
    return cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO)[..., ::-1].copy()


def label_tile(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    scale = max(0.3, min(tile.shape[:2]) / 400.0)
    cv2.putText(
        tile,
        text,
        (3, int(14 * scale) + 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (0, 0, 0),
        3,
        cv2.LINE_AA,
    )
    cv2.putText(
        tile,
        text,
        (3, int(14 * scale) + 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return tile


def make_grid(rows: list[list[np.ndarray]], padding: int = 2) -> np.ndarray:
    """Rows of equally sized uint8 tiles -> one image, tiles separated by ``padding`` white pixels."""
    height = max(tile.shape[0] for row in rows for tile in row)
    width = max(tile.shape[1] for row in rows for tile in row)
    columns = max(len(row) for row in rows)
    grid = np.full(
        (len(rows) * (height + padding) + padding, columns * (width + padding) + padding, 3),
        255,
        np.uint8,
    )
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            top, left = padding + r * (height + padding), padding + c * (width + padding)
            grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return grid


def training_grid(
    hazy,
    dehazed,
    clear,
    depth_pred,
    depth_target,
    dehazing_weights,
    depth_difference,
    near_m: float,
    far_m: float,
    max_rows: int = 4,
) -> np.ndarray:
    """hazy | dehazed | GT | depth pred | depth GT | dehazing-difference map | depth-difference map.

    Inputs are torch tensors (B x C x H x W) or None for maps a run does not compute.
    """

    def rows_of(tensor, index):
        return None if tensor is None else tensor[index].detach().float().cpu().numpy()

    rows = []
    for index in range(min(max_rows, hazy.shape[0])):
        tiles = [rgb_tile(rows_of(t, index).transpose(1, 2, 0)) for t in (hazy, dehazed, clear)]
        blank = np.zeros_like(tiles[0])
        for depth in (depth_pred, depth_target):
            tiles.append(
                blank if depth is None else depth_tile(rows_of(depth, index)[0], near_m, far_m)
            )
        for weights in (dehazing_weights, depth_difference):
            tiles.append(blank if weights is None else weight_tile(rows_of(weights, index)[0]))
        if index == 0:
            names = ("hazy", "dehazed", "GT", "depth pred", "depth GT", "dehaze diff", "depth diff")
            tiles = [label_tile(tile, name) for tile, name in zip(tiles, names)]
        rows.append(tiles)
    return make_grid(rows)
