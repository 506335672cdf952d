"""training.evaluate --visibilities / --aspects (training.road_fog): a set, and a summary row,
per visibility."""

import csv
import math

import cv2
import numpy as np
import pytest

from training import road_fog
from training.data.io import write_pfm
from training.evaluate import main

CALIB = (
    "cam0=[300 0 40 ; 0 300 30 ; 0 0 1]\ncam1=[300 0 50 ; 0 300 30 ; 0 0 1]\n"
    "doffs=5\nbaseline=150\n"
)


@pytest.fixture(scope="module")
def middlebury(tmp_path_factory):
    """Two tiny Middlebury-style scenes (image, disparity, calibration)."""
    root = tmp_path_factory.mktemp("fogdata") / "middlebury"
    for index, scene in enumerate(("Alpha", "Beta")):
        folder = root / scene
        folder.mkdir(parents=True)
        coarse = np.random.default_rng(index).integers(0, 256, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(
            str(folder / "im0.png"), cv2.resize(coarse, (80, 60), interpolation=cv2.INTER_LINEAR)
        )
        write_pfm(
            folder / "disp0GT.pfm", np.tile(np.linspace(10, 40, 80, dtype=np.float32), (60, 1))
        )
        (folder / "calib.txt").write_text(CALIB)
    return root


def summary_rows(out):
    """(set, method) -> n from summary.md's table."""
    rows = {}
    for line in (out / "summary.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) > 3 and cells[2].isdigit():
            rows[(cells[0], cells[1])] = int(cells[2])
    return rows


def test_one_row_per_visibility_shape_and_method(middlebury, tmp_path, capsys):
    out = tmp_path / "fog"
    code = main(
        [
            "--baseline",
            "dcp",
            "--data",
            "outdoor:2",
            "--data",
            "drive:1",
            "--data",
            f"rgbd:{middlebury}",
            "--visibilities",
            "50,clear",
            "--aspects",
            "4:3,1242x375",
            "--max-side",
            "64",
            "--out",
            str(out),
            "--grids",
            "0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    rows = summary_rows(out)
    road = [
        f"{kind} {aspect} {label}"
        for kind in ("outdoor", "drive")
        for aspect in ("4:3", "1242x375")
        for label in ("V=50m", "clear")
    ]
    expected = road + ["middlebury V=50m", "middlebury clear"]
    assert {name for name, _ in rows} == set(expected)
    assert all(rows[(name, "dcp")] == (1 if name.startswith("drive") else 2) for name in expected)
    with open(out / "per_image.csv") as handle:
        per_image = list(csv.DictReader(handle))
    sizes = {
        (r["set"].split()[1], int(r["width"]), int(r["height"]))
        for r in per_image
        if r["set"] in road
    }
    assert sizes == {("4:3", 64, 48), ("1242x375", 64, 19)}  # natural shapes, capped at --max-side
    hazy = {
        r["set"]: float(r["psnr"])
        for r in per_image
        if r["method"] == "hazy input" and r["image"] == "view0"
    }
    assert hazy["outdoor 4:3 V=50m"] < 20 < hazy["outdoor 4:3 clear"]  # clear is the frame itself
    assert "V=50m, clear" in (out / "summary.md").read_text()


def test_the_road_fog_rules():
    assert road_fog.parse_visibilities("30, 50m,clear") == [30.0, 50.0, math.inf]
    with pytest.raises(ValueError, match="visibilities"):
        road_fog.parse_visibilities("30,-5")
    with pytest.raises(ValueError, match="aspects"):
        road_fog.parse_aspects("4:3,wide")
    assert road_fog.frame_size("1242x375", 1242) == (1242, 375) and road_fog.frame_size(
        "16:9", 480
    ) == (480, 270)
    # The RGB-D sets' density follows the visibility; clear is no haze at all.
    densities = [road_fog.median_transmission(v) for v in road_fog.DEFAULT_VISIBILITIES_M]
    assert densities == sorted(densities) and densities[-1] == 1.0
    frame = road_fog.render_road("outdoor", 1, 48, 36)[0]
    sky = np.isposinf(frame.depth_m)
    assert sky.any()
    fogged, clear = road_fog.fogged(frame, 30.0, "x"), road_fog.fogged(frame, math.inf, "x")
    np.testing.assert_allclose(fogged.hazy[sky], road_fog.AIRLIGHT, atol=1e-6)  # fog hides the sky
    np.testing.assert_array_equal(clear.hazy, clear.clear)  # clear keeps it


def test_bad_fog_options_are_reported(tmp_path, capsys):
    assert (
        main(
            [
                "--baseline",
                "dcp",
                "--data",
                "drive:1",
                "--visibilities",
                "fog",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 2
    )
    assert "visibilities" in capsys.readouterr().err
    assert main(["--baseline", "dcp", "--data", "drive:0", "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
