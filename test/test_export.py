"""Export: a run's best.pt -> deployable checkpoint the engine loads and runs like the training model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dehaze_ros.checkpoint import CheckpointError, load_checkpoint
from dehaze_ros.engine import DehazeEngine, EngineConfig
from dehaze_ros.models import ModelConfig, build_dehazer, build_depth_net
from training.config import load_config
from dehaze_ros.camera import focal_from_hfov
from training.export import export_checkpoint, main
from training.run_state import load_training_file
from training.train import Trainer

SMOKE = Path(__file__).resolve().parent.parent / "config" / "train" / "smoke.yaml"

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    config = load_config(SMOKE, [f"train.out_dir={root}", "train.steps=4", "train.val_every=4"])
    trainer = Trainer(config, root / "run", log=lambda message: None)
    trainer.fit()
    trainer.close()
    return root / "run"


def dehazer_config(run_dir) -> ModelConfig:
    return ModelConfig.from_dict(
        load_training_file(run_dir / "best.pt")["provenance"]["model_config"]
    )


def training_models(run_dir, prefix="ema_"):
    """The networks exactly as training holds them in best.pt."""
    state = load_training_file(run_dir / "best.pt")
    config = ModelConfig.from_dict(state["provenance"]["model_config"])
    dehazer, depth_net = build_dehazer(config), build_depth_net(config)
    dehazer.load_state_dict(state[f"{prefix}dehazer"])
    depth_net.load_state_dict(state[f"{prefix}depth_net"])
    return dehazer.eval(), depth_net.eval()


def test_engine_runs_the_exported_ema_weights_like_the_training_model(run_dir, tmp_path):
    output = tmp_path / "model.pt"
    summary = export_checkpoint(run_dir / "best.pt", output)
    assert (
        summary["weights"] == "ema" and summary["steps"] == 4 and summary["depth_units"] == "meters"
    )
    engine = DehazeEngine(
        EngineConfig(
            checkpoint=str(output), device="cpu", precision="fp32", warmup=0, depth_from_haze="off"
        )
    )  # compared with the depth network's own output
    rgb = np.random.default_rng(0).integers(0, 256, (41, 57, 3), dtype=np.uint8)
    result = engine.process(rgb)
    dehazer, depth_net = training_models(run_dir)
    with torch.inference_mode():
        hazy = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        dehazed = dehazer(hazy).clamp(0, 1)
        depth = depth_net(dehazed)[0, 0].numpy()
    expected = dehazed[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(result.dehazed.astype(np.float32) - expected).max() <= 1.0
    # Canonical-camera depth in metres for the assumed field of view (no focal length given).
    canonical_focal = dehazer_config(run_dir).canonical_focal_px
    assert canonical_focal > 0 and result.focal_assumed
    depth = depth * focal_from_hfov(57, EngineConfig().default_hfov_deg) / canonical_focal
    finite = np.isfinite(result.depth)
    assert finite.any()
    np.testing.assert_allclose(result.depth[finite], depth[finite], rtol=1e-5)
    engine.close()


def test_export_carries_full_metadata_and_no_optimiser_state(run_dir, tmp_path):
    output = tmp_path / "model.pt"
    export_checkpoint(run_dir / "best.pt", output)
    raw = torch.load(output, weights_only=True)
    assert not any("optimizer" in key for key in raw)
    ckpt = load_checkpoint(output)
    provenance = ckpt.provenance
    assert provenance["steps"] == 4 and provenance["weights"] == "ema"
    assert (
        provenance["config"]["name"] == "smoke" and provenance["model_config"] == ckpt.model_config
    )
    assert provenance["data"]["train"]["procedural"]["kind"] == "procedural"
    assert {"git_commit", "export_git_commit", "exported_at", "trained_until", "torch"} <= set(
        provenance
    )
    assert ckpt.metrics["val_psnr"] > 0 and "val_abs_rel" in ckpt.metrics
    assert ckpt.depth_range_m == (0.1, 80.0)


def test_fp16_storage_halves_the_file_and_keeps_the_output(run_dir, tmp_path):
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    export_checkpoint(run_dir / "best.pt", full)
    export_checkpoint(run_dir / "best.pt", half, fp16=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    assert load_checkpoint(half).dehazer_state["stem.weight"].dtype == torch.float16
    rgb = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    outputs = [
        DehazeEngine(EngineConfig(checkpoint=str(path), device="cpu", warmup=0)).process(rgb)
        for path in (full, half)
    ]
    assert np.abs(outputs[0].dehazed.astype(int) - outputs[1].dehazed.astype(int)).max() <= 2


def test_raw_export_takes_the_optimised_weights(run_dir, tmp_path):
    export_checkpoint(run_dir / "best.pt", tmp_path / "raw.pt", use_ema=False)
    state = load_training_file(run_dir / "best.pt")
    exported = load_checkpoint(tmp_path / "raw.pt").dehazer_state
    assert all(torch.equal(exported[key], state["dehazer"][key]) for key in exported)
    assert not all(torch.equal(exported[key], state["ema_dehazer"][key]) for key in exported)
    raw = load_checkpoint(tmp_path / "raw.pt")
    assert raw.metrics == {}, "validation scored the EMA networks, not these"
    assert raw.provenance["selected_on"].startswith(
        "none: the raw (never validated) weights of step 4"
    )


def test_training_files_and_checkpoints_are_not_mistaken_for_each_other(run_dir, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="training.export"):
        load_checkpoint(run_dir / "best.pt")
    assert main([str(run_dir / "best.pt"), "-o", str(tmp_path / "ok.pt")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main([str(tmp_path / "ok.pt"), "-o", str(tmp_path / "again.pt")]) == 2
    assert "not a dehaze_ros training state" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "training file not found" in capsys.readouterr().err


def test_onnx_graph_straight_from_a_training_file(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(run_dir / "best.pt")])
    assert "nothing to write: give -o OUT.pt, --onnx OUT.onnx, or both" in capsys.readouterr().err
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module, reason="the onnx extra is not installed")
    import onnxruntime

    from dehaze_ros.onnx_export import OnnxMetadata

    graph = tmp_path / "smoke.onnx"
    assert main([str(run_dir / "best.pt"), "--onnx", str(graph)]) == 0  # no -o: via a temporary .pt
    assert f"wrote {graph}" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    metadata = OnnxMetadata.from_props(session.get_modelmeta().custom_metadata_map, graph)
    assert metadata.model_config == dehazer_config(run_dir).to_dict()
    assert metadata.provenance["steps"] == 4 and metadata.provenance["weights"] == "ema"
    dehazer, depth_net = training_models(run_dir)
    hazy = torch.rand(1, 3, 41, 57, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        out = dehazer.forward_physics(hazy)
        dehazed = out.dehazed.clamp(0, 1)
        depth = depth_net(dehazed, out.transmission)
    got_dehazed, got_depth = session.run(["dehazed", "depth"], {"hazy": hazy.numpy()})
    assert np.abs(got_dehazed - dehazed.numpy()).max() < 1e-3
    np.testing.assert_allclose(got_depth, depth.numpy(), rtol=1e-3)


def test_last_pt_exported_after_the_best_step_does_not_claim_the_best_metrics(run_dir, tmp_path):
    """last.pt of a run whose best validation was earlier: the export carries the validation of
    its own step, or none, never the best step's numbers."""
    state = load_training_file(run_dir / "last.pt")
    assert state["last_validation"]["step"] == state["step"] == 4
    own = state["last_validation"]["metrics"]
    state["best"] = {"metric": "psnr", "value": 99.0, "step": 2, "metrics": {"psnr": 99.0}}
    torch.save(state, tmp_path / "later.pt")
    ckpt = load_checkpoint(export_checkpoint(tmp_path / "later.pt", tmp_path / "a.pt")["output"])
    assert ckpt.metrics == {f"val_{key}": pytest.approx(value) for key, value in own.items()}
    assert (
        ckpt.provenance["selected_on"]
        == "none: the EMA weights of step 4, best validation was step 2"
    )
    del state["last_validation"]
    torch.save(state, tmp_path / "unvalidated.pt")
    assert (
        load_checkpoint(
            export_checkpoint(tmp_path / "unvalidated.pt", tmp_path / "b.pt")["output"]
        ).metrics
        == {}
    )
    best = load_checkpoint(export_checkpoint(run_dir / "best.pt", tmp_path / "c.pt")["output"])
    assert (
        best.provenance["selected_on"] == "validation psnr at step 4"
        and best.metrics["val_psnr"] > 0
    )
