"""training.evaluate end to end on test-written sets: CSV, summary, grids, DCP, leakage."""

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dehaze_ros.checkpoint import save_checkpoint
from dehaze_ros.models import build_dehazer, build_depth_net, get_model_config
from training.config import load_config
from training.contact_sheet import write_sheets
from training.data.io import DataError, write_pfm
from training.evaluate import main, summarise
from training.metrics import psnr
from training.train import Trainer

SMOKE = Path(__file__).resolve().parent.parent / "config" / "train" / "smoke.yaml"
CALIB = (
    "cam0=[300 0 40 ; 0 300 30 ; 0 0 1]\ncam1=[300 0 50 ; 0 300 30 ; 0 0 1]\n"
    "doffs=5\nbaseline=150\n"
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def smooth_image(seed, height, width):
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    for scene in ("10", "11"):
        clear = smooth_image(int(scene), 60, 80)
        (root / "pairs" / "GT").mkdir(parents=True, exist_ok=True)
        (root / "pairs" / "hazy").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "pairs" / "GT" / f"{scene}.png"), clear)
        cv2.imwrite(
            str(root / "pairs" / "hazy" / f"{scene}_1.png"), (clear * 0.5 + 110).astype(np.uint8)
        )
    for index, scene in enumerate(("Alpha", "Beta", "Gamma")):
        folder = root / "middlebury" / scene
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "im0.png"), smooth_image(index, 60, 80))
        disparity = np.tile(np.linspace(10, 40, 80, dtype=np.float32), (60, 1))
        disparity[:5] = np.inf
        write_pfm(folder / "disp0GT.pfm", disparity)
        (folder / "calib.txt").write_text(CALIB)
    (root / "photos").mkdir()
    cv2.imwrite(str(root / "photos" / "street.jpg"), smooth_image(9, 90, 120))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = get_model_config("diacmpn-rt")
    path = tmp_path_factory.mktemp("ckpt") / "rt.pt"
    save_checkpoint(
        path,
        model_config=config.to_dict(),
        dehazer_state=build_dehazer(config).state_dict(),
        depth_net_state=build_depth_net(config).state_dict(),
        depth_units="meters",
    )
    return path


def read_rows(out):
    with open(out / "per_image.csv") as handle:
        return list(csv.DictReader(handle))


def test_model_and_dcp_on_paired_rgbd_and_unpaired_sets(data_root, checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data_root / "pairs"),
            "--data",
            f"rgbd:{data_root / 'middlebury'}",
            "--data",
            str(data_root / "photos"),
            "--baseline",
            "dcp",
            "--out",
            str(out),
            "--max-side",
            "64",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    rows = read_rows(out)
    # (2 pairs + 3 scenes) x (hazy input, model, dcp) + 1 photo x (model, dcp): no GT, no input row
    assert len(rows) == 17
    assert {(r["set"], r["method"]) for r in rows} >= {
        ("pairs", "hazy input"),
        ("pairs", "dcp"),
        ("middlebury", "model (diacmpn-rt)"),
    }
    assert all(max(int(r["width"]), int(r["height"])) <= 64 for r in rows)  # --max-side
    hazy_row = next(
        r
        for r in rows
        if r["set"] == "pairs" and r["image"] == "10_1.png" and r["method"] == "hazy input"
    )

    def at_64(path):
        return cv2.resize(cv2.imread(str(path)), (64, 48), interpolation=cv2.INTER_AREA)

    gt, hazy = (
        at_64(data_root / "pairs" / "GT" / "10.png"),
        at_64(data_root / "pairs" / "hazy" / "10_1.png"),
    )
    assert float(hazy_row["psnr"]) == pytest.approx(psnr(hazy, gt), abs=1e-3)
    model_depth = [r for r in rows if r["set"] == "middlebury" and r["method"].startswith("model")]
    dcp_depth = [r for r in rows if r["set"] == "middlebury" and r["method"] == "dcp"]
    assert all(
        r["abs_rel"] and r["abs_rel_median"] and r["depth_units"] == "meters" for r in model_depth
    )
    assert all(
        r["abs_rel"] == "" and r["abs_rel_median"] != "" for r in dcp_depth
    )  # relative depth
    photo = [r for r in rows if r["set"] == "photos"]
    assert len(photo) == 2 and all(r["psnr"] == "" for r in photo)
    summary = (out / "summary.md").read_text()
    assert "| set | method | n | PSNR dB |" in summary and "longer side at most 64 px" in summary
    assert "| middlebury | dcp | 3 |" in summary
    assert (out / "grids" / "middlebury" / "Alpha.png").is_file()
    assert (out / "grids" / "photos" / "street.png").is_file()


def test_a_run_file_is_exported_on_the_fly_and_training_scenes_are_flagged(
    data_root, tmp_path, capsys
):
    config = load_config(
        SMOKE,
        [
            f"train.out_dir={tmp_path}",
            "train.steps=2",
            f"data.root={data_root}",
            "data.sources.mb={kind: rgbd, path: middlebury, val_scenes: [Gamma]}",
        ],
    )
    trainer = Trainer(config, tmp_path / "run", log=lambda message: None)
    trainer.fit()
    trainer.close()
    out = tmp_path / "eval"
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "run" / "best.pt"),
                "--data",
                f"rgbd:{data_root / 'middlebury'}",
                "--out",
                str(out),
                "--max-side",
                "64",
                "--device",
                "cpu",
                "--grids",
                "0",
            ]
        )
        == 0
    )
    captured = capsys.readouterr().out
    assert "WARNING" in captured and "Alpha, Beta were used to TRAIN" in captured
    assert "WARNING" in (out / "summary.md").read_text()
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "run" / "best.pt"),
                "--data",
                f"rgbd:{data_root / 'middlebury'}",
                "--scenes",
                "Gamma",
                "--out",
                str(tmp_path / "held_out"),
                "--max-side",
                "64",
                "--device",
                "cpu",
                "--grids",
                "0",
            ]
        )
        == 0
    )
    assert "WARNING" not in capsys.readouterr().out
    assert len(read_rows(tmp_path / "held_out")) == 2  # Gamma only: hazy input + model


def test_bad_arguments_are_reported(data_root, tmp_path, capsys):
    assert main(["--data", str(data_root / "pairs"), "--out", str(tmp_path)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    out = tmp_path / "eval"
    assert main(["--baseline", "dcp", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "missing.pt"),
                "--data",
                str(data_root / "pairs"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    assert not out.exists()  # inputs are checked before the output folder is created


def test_onnx_model_reaches_the_backend_and_is_refused_with_torch(
    data_root, checkpoint, tmp_path, capsys
):
    common = ["--checkpoint", str(checkpoint), "--data", str(data_root / "pairs")]
    graph = tmp_path / "missing.onnx"
    with pytest.raises(SystemExit):
        main(
            [
                *common,
                "--backend",
                "torch",
                "--onnx-model",
                str(graph),
                "--out",
                str(tmp_path / "t"),
            ]
        )
    assert (
        "--onnx-model is a graph for --backend onnxruntime or openvino" in capsys.readouterr().err
    )
    pytest.importorskip("openvino")
    out = tmp_path / "openvino"
    code = main([*common, "--backend", "openvino", "--onnx-model", str(graph), "--out", str(out)])
    # The backend was given this graph (not the checkpoint's export), and says it is missing.
    assert code == 2 and f"onnx_model {graph} not found" in capsys.readouterr().err
    assert not out.exists()


def test_outdoor_views_score_sky_and_the_median_and_use_the_views_focal_length(
    checkpoint, tmp_path, capsys
):
    out = tmp_path / "outdoor"
    code = main(
        [
            "--checkpoint",
            str(checkpoint),
            "--data",
            "outdoor:2",
            "--out",
            str(out),
            "--max-side",
            "64",
            "--device",
            "cpu",
            "--visibility-m",
            "150",
            "--grids",
            "0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    rows = [r for r in read_rows(out) if r["method"].startswith("model")]
    assert [r["image"] for r in rows] == ["view0", "view1"]
    for row in rows:
        assert 0.0 <= float(row["sky_beyond"]) <= 1.0  # the views show sky (+inf)
        assert int(row["sky_pixels"]) > 0
        assert float(row["median_ratio"]) > 0
        assert row["focal"] == "known"  # the renderer's K, not an assumed FOV
    assert "visibility 150 m" in (out / "summary.md").read_text()
    assert main(["--data", "outdoor:0", "--baseline", "dcp", "--out", str(tmp_path / "bad")]) == 2
    assert "COUNT >= 1" in capsys.readouterr().err


def test_sky_beyond_pools_the_sets_sky_pixels_and_names_the_worst_image():
    # A view with a sliver of sky (100 px, none beyond) weighs a tenth of one with 900 px beyond.
    rows = [
        {"set": "outdoor", "method": "model", "sky_beyond": 1.0, "sky_pixels": 900},
        {"set": "outdoor", "method": "model", "sky_beyond": 0.0, "sky_pixels": 100},
        {"set": "frames", "method": "model", "psnr": 20.0},
    ]
    by_set = {entry["set"]: entry for entry in summarise(rows)}
    assert by_set["outdoor"]["sky_beyond"] == pytest.approx(0.9)
    assert by_set["outdoor"]["sky_beyond_worst"] == 0.0
    assert np.isnan(by_set["frames"]["sky_beyond"]) and np.isnan(
        by_set["frames"]["sky_beyond_worst"]
    )


def test_contact_sheet_has_a_row_per_photo_in_pages(checkpoint, tmp_path):
    photos = tmp_path / "photos" / "nested"
    photos.mkdir(parents=True)
    for index in range(3):
        cv2.imwrite(str(photos / f"p{index}.png"), smooth_image(index, 40 + 10 * index, 60))
    pages = write_sheets(
        str(checkpoint),
        tmp_path / "photos",
        tmp_path / "sheet" / "real",
        engine_max_side=32,
        per_page=2,
        tile_width=64,
        log=lambda text: None,
    )
    assert [page.name for page in pages] == ["real_1.jpg", "real_2.jpg"]
    first, second = (cv2.imread(str(page)) for page in pages)
    tile_height, padding = 48, 2
    assert first.shape == (2 * (tile_height + padding) + padding, 4 * (64 + padding) + padding, 3)
    assert second.shape[0] == tile_height + 2 * padding  # the third photo alone
    with pytest.raises(DataError, match="is not a folder"):
        write_sheets(str(checkpoint), tmp_path / "missing", tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images below it"):
        write_sheets(str(checkpoint), tmp_path / "empty", tmp_path / "x")


def test_depth_of_unknown_scale_gets_only_median_scaled_columns():
    from training.data.common import Sample
    from training.evaluate import score

    depth = np.linspace(1, 4, 48, dtype=np.float32).reshape(6, 8)
    clear = np.zeros((6, 8, 3), np.float32)
    metric = score(clear, depth * 2, "meters", Sample(clear, clear, depth, True, "m"), (0.1, 80.0))
    relative = score(
        clear,
        depth * 2,
        "meters",
        Sample(clear, clear, depth, True, "r", metric_depth=False),
        (0.1, 80.0),
    )
    assert metric["abs_rel"] == pytest.approx(1.0) and metric["median_ratio"] == pytest.approx(2.0)
    assert "abs_rel" not in relative and "median_ratio" not in relative
    assert relative["abs_rel_median"] == pytest.approx(0.0, abs=1e-6)


def test_depth_from_haze_ablation_gives_network_haze_and_fusion_in_one_table(
    data_root, checkpoint, tmp_path, capsys
):
    common = [
        "--checkpoint",
        str(checkpoint),
        "--data",
        f"rgbd:{data_root / 'middlebury'}",
        "--max-side",
        "64",
        "--device",
        "cpu",
        "--grids",
        "1",
    ]
    assert (
        main(
            [
                *common,
                "--baseline",
                "dcp",
                "--depth-from-haze",
                "ablation",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    rows = read_rows(tmp_path / "a")
    methods = {r["method"] for r in rows}
    assert methods == {
        "hazy input",
        "model (diacmpn-rt)",
        "model (diacmpn-rt), depth_from_haze off",
        "-ln t of model (diacmpn-rt)",
        "dcp",
    }
    network = [r for r in rows if r["method"].endswith("depth_from_haze off")]
    optical = [r for r in rows if r["method"].startswith("-ln t")]
    assert len(network) == len(optical) == 3
    assert all(r["psnr"] == "" and r["abs_rel"] and r["depth_units"] == "meters" for r in network)
    assert all(
        r["abs_rel"] == "" and r["abs_rel_median"] and r["depth_units"] == "relative"
        for r in optical
    )
    assert "depth_from_haze: ablation" in (tmp_path / "a" / "summary.md").read_text()
    # The network-alone row is what the engine gives with the fusion off.
    assert main([*common, "--depth-from-haze", "off", "--out", str(tmp_path / "off")]) == 0
    alone = {
        r["image"]: r for r in read_rows(tmp_path / "off") if r["method"] == "model (diacmpn-rt)"
    }
    for row in network:
        assert row["abs_rel"] == alone[row["image"]]["abs_rel"]
        assert row["abs_rel_median"] == alone[row["image"]]["abs_rel_median"]
    with pytest.raises(SystemExit):
        main([*common, "--depth-from-haze", "sometimes", "--out", str(tmp_path / "bad")])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_vehicle_views_get_a_row_per_scale_source_and_sets_without_a_camera_height_do_not(
    data_root, tmp_path, capsys
):
    """The ground plane needs a camera height: the rendered vehicle views bring theirs, the RGB-D
    scenes have none (learned row only). The shipped checkpoint: a random network's depth has no
    ground to find."""
    from dehaze_ros.engine import DEFAULT_CHECKPOINT

    out = tmp_path / "vehicle"
    assert (
        main(
            [
                "--checkpoint",
                str(DEFAULT_CHECKPOINT),
                "--data",
                "vehicle:1",
                "--data",
                f"rgbd:{data_root / 'middlebury'}",
                "--scale-sources",
                "learned,ground,ground-height",
                "--max-depth-m",
                "80",
                "--out",
                str(out),
                "--max-side",
                "320",
                "--device",
                "cpu",
                "--grids",
                "1",
            ]
        )
        == 0
    ), capsys.readouterr().err
    rows = {(r["set"], r["image"], r["method"]): r for r in read_rows(out)}
    learned = rows[("vehicle", "view0_wide_fog50m", "model (diacmpn-rt-custom)")]
    ground = rows[("vehicle", "view0_wide_fog50m", "model (diacmpn-rt-custom), ground plane")]
    estimated = rows[
        ("vehicle", "view0_wide_fog50m", "model (diacmpn-rt-custom), ground plane, pitch estimated")
    ]
    assert learned["scale"] == "learned only" and learned["psnr"] != "" and ground["psnr"] == ""
    assert ground["scale"].startswith("ground plane (factor") and float(ground["share_plane"]) > 0.2
    assert estimated["scale"].startswith("ground plane (factor") and estimated["share_plane"] == "0"
    assert 0.85 <= float(ground["median_ratio"]) <= 1.15
    assert abs(math.log(float(ground["median_ratio"]))) < abs(
        math.log(float(learned["median_ratio"]))
    )
    middlebury = [
        r for r in rows.values() if r["set"] == "middlebury" and r["method"].startswith("model")
    ]
    assert len(middlebury) == 3 and all(r["scale"] == "learned only" for r in middlebury)
    summary = (out / "summary.md").read_text()
    assert "true depths up to 80 m only" in summary and "views in 0.9-1.1" in summary
    assert "What each pixel's depth rests on" in summary
    assert (out / "grids" / "vehicle" / "view0_wide_fog50m.png").is_file()
    assert (
        main(
            [
                "--checkpoint",
                str(DEFAULT_CHECKPOINT),
                "--data",
                "vehicle:1",
                "--scale-sources",
                "lidar",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "scale sources must be some of learned, ground, ground-height" in capsys.readouterr().err
