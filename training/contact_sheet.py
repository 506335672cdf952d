"""Contact sheet of real hazy photographs: hazy | DCP | model | model depth, one row per photo.

    python -m training.contact_sheet --checkpoint dehaze_ros/checkpoints/default.pt \\
        --images ../shared/data/real_hazy --out docs/real_hazy

Real haze has no ground truth: these sheets are for looking, photo by photo, at what metrics on
synthetic haze cannot show (dark bands above skylines, colour casts, haze left in place). Every
image below ``--images`` (recursively, sorted) becomes a row; rows are split into pages of
``--per-page`` (JPEG, ``<out>_<page>.jpg``) so each page stays small enough to commit and view.
Both methods run through the engine the node deploys, at the node's ``max_side`` and with the
focal length the node assumes without CameraInfo.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from dehaze_ros.checkpoint import CheckpointError
from dehaze_ros.engine import DehazeEngine, EngineConfig, EngineError
from dehaze_ros.ros.node_config import SPECS
from training.data.common import resize_max_side
from training.data.io import IMAGE_EXTENSIONS, DataError, read_rgb
from training.visualize import depth_tile, label_tile, make_grid

DEPTH_RANGE_M = (0.5, 200.0)  # the colormap's fixed range (log scale); farther and sky are blue


def find_images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"--images {root} is not a folder")
    images = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise DataError(f"--images {root}: no images below it")
    return images


def fit_tile(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Letterbox ``image`` (uint8 RGB) into a white width x height tile."""
    scale = min(width / image.shape[1], height / image.shape[0])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    tile = np.full((height, width, 3), 255, np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    tile[top : top + size[1], left : left + size[0]] = resized
    return tile


def photo_row(
    path: Path, root: Path, model: DehazeEngine, dcp: DehazeEngine, max_side: int, tile_width: int
) -> list[np.ndarray]:
    rgb = resize_max_side(read_rgb(path), max_side)
    ours, baseline = model.process(rgb), dcp.process(rgb, want_depth=False)
    tile_height = round(tile_width * 3 / 4)

    def tile(image: np.ndarray, text: str) -> np.ndarray:
        return label_tile(fit_tile(image, tile_width, tile_height), text)

    depth = depth_tile(ours.depth, *DEPTH_RANGE_M) if ours.depth is not None else np.zeros_like(rgb)
    return [
        tile(rgb, str(path.relative_to(root))),
        tile(baseline.dehazed, "DCP"),
        tile(ours.dehazed, f"ours ({model.model_name})"),
        tile(depth, f"our depth {DEPTH_RANGE_M[0]:g}-{DEPTH_RANGE_M[1]:g} m"),
    ]


def write_sheets(
    checkpoint: str,
    images_root: Path,
    out: Path,
    engine_max_side: int = SPECS["max_side"].default,
    max_side: int = 1024,
    per_page: int = 14,
    tile_width: int = 320,
    log=print,
    size_rule: str = SPECS["size_rule"].default,
    dense_fog: str = SPECS["dense_fog"].default,
) -> list[Path]:
    images = find_images(images_root)
    model = DehazeEngine(
        EngineConfig(
            checkpoint=checkpoint,
            max_side=engine_max_side,
            size_rule=size_rule,
            dense_fog=dense_fog,
            device="cpu",
        )
    )
    dcp = DehazeEngine(
        EngineConfig(model="dcp", max_side=engine_max_side, size_rule=size_rule, warmup=0)
    )
    pages = []
    for start in range(0, len(images), per_page):
        rows = [
            photo_row(path, images_root, model, dcp, max_side, tile_width)
            for path in images[start : start + per_page]
        ]
        page = out.parent / f"{out.name}_{start // per_page + 1}.jpg"
        page.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(page), make_grid(rows)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        pages.append(page)
        log(f"wrote {page} ({len(rows)} photos)")
    model.close()
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.contact_sheet",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--checkpoint", default="", help="deployable checkpoint ('' = the shipped one)"
    )
    parser.add_argument(
        "--images", required=True, help="folder of hazy photographs (searched recursively)"
    )
    parser.add_argument(
        "--out", required=True, help="output prefix: pages are <out>_1.jpg, <out>_2.jpg, ..."
    )
    parser.add_argument(
        "--engine-max-side",
        type=int,
        default=SPECS["max_side"].default,
        help="as the node's max_side, whose default it is (0 = native)",
    )
    parser.add_argument(
        "--engine-size-rule",
        default=SPECS["size_rule"].default,
        choices=SPECS["size_rule"].choices,
        help="as the node's size_rule, whose default it is",
    )
    parser.add_argument(
        "--engine-dense-fog",
        default=SPECS["dense_fog"].default,
        choices=SPECS["dense_fog"].choices,
        help="as the node's dense_fog, whose default it is",
    )
    parser.add_argument(
        "--max-side", type=int, default=1024, help="photos are first resized to this longer side"
    )
    parser.add_argument("--per-page", type=int, default=14)
    parser.add_argument("--tile-width", type=int, default=320)
    args = parser.parse_args(argv)
    try:
        write_sheets(
            args.checkpoint,
            Path(args.images),
            Path(args.out),
            args.engine_max_side,
            args.max_side,
            args.per_page,
            args.tile_width,
            size_rule=args.engine_size_rule,
            dense_fog=args.engine_dense_fog,
        )
    except (DataError, CheckpointError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
