"""The benchmark times what it is given: a trained checkpoint with its own model config."""

import dataclasses

import pytest
import torch

from dehaze_ros.checkpoint import save_checkpoint
from dehaze_ros.models import build_dehazer, build_depth_net, count_parameters, get_model_config
from dehaze_ros.tools import benchmark


def test_a_checkpoint_is_timed_with_its_own_networks_and_a_bad_one_is_refused(tmp_path, capsys):
    # A depth network that reads -ln t has a fourth input channel: the preset's random networks
    # would time (and count) something else than the file.
    config = dataclasses.replace(get_model_config("diacmpn-rt"), depth_inputs="image_transmission")
    torch.manual_seed(0)
    dehazer, depth_net = build_dehazer(config), build_depth_net(config)
    path = tmp_path / "my_trained.pt"
    save_checkpoint(
        path,
        model_config=config.to_dict(),
        dehazer_state=dehazer.state_dict(),
        depth_net_state=depth_net.state_dict(),
        depth_units="meters",
        depth_range_m=(0.1, 80.0),
        provenance={"note": "random init, test"},
    )
    params = count_parameters(dehazer) + count_parameters(depth_net)

    benchmark.main(
        [
            "--checkpoint",
            str(path),
            "--sizes",
            "64x48",
            "--precisions",
            "fp32",
            "--backends",
            "torch",
            "--max-runs",
            "1",
            "--rt-max-side",
            "32",
        ]
    )
    rows = [
        line.split("|")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| my_trained")
    ]
    assert [row[1].strip() for row in rows] == ["my_trained.pt", "my_trained.pt (max_side 32)"]
    assert all(row[6].strip() == f"{params / 1e6:.2f}" for row in rows)
    assert [row[5].strip() for row in rows] == ["64x48", "32x24"]  # the internal sizes

    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(SystemExit):
        benchmark.main(["--checkpoint", str(broken), "--backends", "torch"])
    error = capsys.readouterr().err
    assert "--checkpoint: checkpoint" in error and str(broken) in error and "truncated" in error, (
        error
    )

    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "my_trained.pt").write_bytes(path.read_bytes())
    with pytest.raises(SystemExit):
        benchmark.main(["--checkpoint", str(path), "--checkpoint", str(other / "my_trained.pt")])
    assert "two files named 'my_trained.pt'" in capsys.readouterr().err


def test_the_deployed_rows_default_to_the_nodes_max_side(tmp_path, capsys):
    from dehaze_ros.node_config import SPECS

    path, _, _ = benchmark.write_random_checkpoint("diacmpn-rt", tmp_path)
    benchmark.main(
        [
            "--checkpoint",
            str(path),
            "--sizes",
            "64x48",
            "--precisions",
            "fp32",
            "--backends",
            "torch",
            "--max-runs",
            "1",
        ]
    )
    labels = [
        line.split("|")[1].strip()
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| diacmpn-rt")
    ]
    assert labels == ["diacmpn-rt.pt", f"diacmpn-rt.pt (max_side {SPECS['max_side'].default})"]


def test_the_scale_sources_get_a_row_each_with_the_time_they_add(tmp_path, capsys):
    path, _, _ = benchmark.write_random_checkpoint("diacmpn-rt", tmp_path)
    benchmark.main(
        [
            "--checkpoint",
            str(path),
            "--sizes",
            "320x240",
            "--precisions",
            "fp32",
            "--backends",
            "torch",
            "--max-runs",
            "2",
            "--rt-max-side",
            "0",
            "--scale-sources",
            "learned,ground",
        ]
    )
    out = capsys.readouterr().out
    assert "# metric scale sources: time added per frame" in out
    rows = {
        cells[1].strip(): cells
        for cells in (line.split("|") for line in out.splitlines())
        if len(cells) == 9 and cells[2].strip() == "320x240"
    }
    assert set(rows) == {"no source (camera_height_m 0)", "ground plane, pitch known"}
    for cells in rows.values():
        assert float(cells[3]) >= 0 and int(cells[6]) == 2
    assert float(rows["no source (camera_height_m 0)"][5]) == 0.0  # the baseline of the added time
    assert int(rows["no source (camera_height_m 0)"][7]) == 0  # the network's own metres
    assert int(rows["ground plane, pitch known"][7]) == 2  # the shipped network finds the road
    with pytest.raises(SystemExit):
        benchmark.main(["--scale-sources", "lidar"])
    assert "unknown scale sources ['lidar']" in capsys.readouterr().err
