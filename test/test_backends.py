"""Backends behind one interface: declared shapes, the engine's single path for all of them."""

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from dehaze_ros import engine as engine_module
from dehaze_ros.backends import Backend, BackendOutput, create_backend
from dehaze_ros.backends.dcp_backend import DCPBackend
from dehaze_ros.backends.torch_backend import TorchBackend
from dehaze_ros.checkpoint import save_checkpoint
from dehaze_ros.engine import DehazeEngine, EngineConfig, EngineError
from dehaze_ros.haze import recover_scene
from dehaze_ros.models import build_dehazer, build_depth_net, get_model_config


def write_checkpoint(path, config):
    torch.manual_seed(0)
    dehazer, depth_net = build_dehazer(config), build_depth_net(config)
    torch.nn.init.normal_(dehazer.output_projection.weight, std=0.05)
    save_checkpoint(
        path,
        model_config=config.to_dict(),
        dehazer_state=dehazer.state_dict(),
        depth_net_state=depth_net.state_dict(),
        depth_units="meters",
        depth_range_m=(0.1, 80.0),
    )
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backends")
    physics = get_model_config("diacmpn-rt")
    residual = dataclasses.replace(physics, head="residual", canonical_focal_px=0.0)
    return {
        "physics": write_checkpoint(folder / "rt.pt", physics),
        "residual": write_checkpoint(folder / "residual.pt", residual),
    }


@pytest.mark.parametrize("kind", ["dcp", "physics", "residual"])
def test_every_backend_returns_the_declared_shapes(checkpoints, kind):
    backend = (
        DCPBackend()
        if kind == "dcp"
        else TorchBackend(checkpoints[kind], device="cpu", precision="fp32")
    )
    rgb = np.random.default_rng(0).random((37, 53, 3), dtype=np.float32)
    out = backend.run(rgb, want_dehazed=True, want_depth=True)
    out.check(37, 53, True, True, kind)  # raises on any broken contract
    assert (
        out.dehazed.shape == (37, 53, 3) and 0.0 <= out.dehazed.min() and out.dehazed.max() <= 1.0
    )
    assert out.depth.shape == (37, 53) and out.depth.dtype == np.float32
    if kind == "residual":
        assert out.transmission is None and out.airlight is None
    else:
        assert out.transmission.shape == (37, 53) and out.airlight.shape == (3,)
    assert out.timings_ms["dehaze"] > 0
    assert {"model", "backend", "device", "precision"} <= set(backend.describe())
    no_depth = backend.run(rgb, want_dehazed=True, want_depth=False)
    assert no_depth.depth is None and "depth" not in no_depth.timings_ms
    backend.close()
    backend.close()  # twice is allowed


def test_backend_output_check_names_what_is_broken():
    good = np.zeros((4, 5), np.float32)
    with pytest.raises(RuntimeError, match=r"depth must be float32 \(4, 5\), got float64"):
        BackendOutput(depth=np.zeros((4, 5))).check(4, 5, False, True, "x")
    with pytest.raises(RuntimeError, match="transmission and airlight come together"):
        BackendOutput(transmission=good).check(4, 5, False, False, "x")
    with pytest.raises(RuntimeError, match="neither dehazed nor transmission"):
        BackendOutput(depth=good).check(4, 5, True, True, "x")
    with pytest.raises(RuntimeError, match="depth was asked for"):
        BackendOutput(dehazed=np.zeros((4, 5, 3), np.float32)).check(4, 5, True, True, "x")


def test_backend_selection(checkpoints, tmp_path):
    assert isinstance(create_backend("dcp", "torch", "", "auto", "auto"), DCPBackend)
    # The onnxruntime backend is chosen (test_onnx.py tests it): here it refuses a missing graph,
    # or, without the extra installed, says what to install.
    with pytest.raises(
        EngineError, match="onnx_model .* not found|needs the Python package onnxruntime"
    ):
        DehazeEngine(
            EngineConfig(
                checkpoint=str(checkpoints["physics"]),
                backend="onnxruntime",
                onnx_model=str(tmp_path / "missing.onnx"),
                warmup=0,
            )
        )
    with pytest.raises(ValueError, match="backend must be one of"):
        DehazeEngine(EngineConfig(backend="tensorrt"))


def test_engine_source_has_no_model_name_branches():
    source = inspect.getsource(engine_module.DehazeEngine)
    for word in ("dcp", 'checkpoint"', "residual", "asm", "torch_backend", "DCPBackend"):
        assert word not in source, (
            f"DehazeEngine mentions {word!r}: model specifics belong in a backend"
        )


class ConstantHaze(Backend):
    """A backend written against the interface alone: t and A only (no dehazed image), like an
    exported graph that stops before the inversion; depth in canonical-camera units."""

    name = "constant-haze"
    canonical_focal_px = 100.0

    def run(self, rgb, want_dehazed, want_depth):
        height, width = rgb.shape[:2]
        return BackendOutput(
            transmission=np.full((height, width), 0.5, np.float32),
            airlight=np.full(3, 0.8, np.float32),
            depth=np.full((height, width), 10.0, np.float32) if want_depth else None,
        )

    def describe(self):
        return {"model": self.name, "backend": "test", "device": "cpu", "precision": "fp32"}


@pytest.mark.parametrize("max_side", [0, 64])
def test_engine_serves_any_backend_with_the_same_postprocessing(max_side):
    engine = DehazeEngine(
        EngineConfig(max_side=max_side, size_rule="side", depth_max_side=0, warmup=0),
        backend=ConstantHaze(),
    )
    rgb = np.random.default_rng(2).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    result = engine.process(rgb, focal_px=80.0)
    # Constant t: exact inversion at full resolution whatever the path.
    expected = recover_scene(rgb / 255.0, np.full((90, 160), 0.5, np.float32), 0.8)
    assert np.abs(result.dehazed.astype(np.float32) - expected * 255).max() <= 1.0
    # The engine converts canonical depth with the focal length of the image the backend saw.
    small_width = 160 if not max_side else 64
    np.testing.assert_allclose(result.depth, 10.0 * (80.0 * small_width / 160) / 100.0, rtol=1e-6)
    assert engine.describe()["model"] == "constant-haze" and engine.describe()["backend"] == "test"
