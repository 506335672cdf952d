"""ONNX export and the ONNX Runtime backend: every preset exports, ORT matches torch, metadata
survives, and without the extra the package still works and says what to install."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dehaze_ros.backends import BackendError
from dehaze_ros.backends.onnxruntime_backend import (
    INSTALL_HINT,
    TRT_MAX_SIDE,
    engine_cache_dir,
    execution_providers,
    gpu_unused_warning,
    session_device,
    tensorrt_profile,
)
from dehaze_ros.checkpoint import save_checkpoint
from dehaze_ros.engine import DehazeEngine, EngineConfig, EngineError
from dehaze_ros.models import PRESETS, build_dehazer, build_depth_net
from dehaze_ros.onnx_export import DeployableNetworks, OnnxMetadata, OnnxModelError
from dehaze_ros.tools.benchmark import hazy_frame

REPO = Path(__file__).resolve().parent.parent
HAVE_EXTRA = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
# requirements-dev.txt installs the extra, so CI runs these; a plain install skips them cleanly.
needs_extra = pytest.mark.skipif(
    not HAVE_EXTRA, reason="the onnx extra is not installed: pip install '.[onnx]'"
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def perturbed_models(name: str):
    """Random networks whose every layer matters: the heads start at zero (an untrained asm_dcp D
    *is* the DCP, the backbone's output multiplied away), which would hide a wrong backbone."""
    config = PRESETS[name]
    torch.manual_seed(0)
    dehazer, depth_net = build_dehazer(config), build_depth_net(config)
    with torch.no_grad():
        for module in (dehazer, depth_net):
            for parameter in module.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
    return config, dehazer.eval(), depth_net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """preset -> (checkpoint, onnx graph). diacmpn-rt goes through the command line.

    Exporting every preset takes minutes on a 2-core CPU: the tests that use it are marked slow."""
    from training.export import main

    folder = tmp_path_factory.mktemp("onnx")
    graphs = {}
    for name in PRESETS:
        config, dehazer, depth_net = perturbed_models(name)
        checkpoint = folder / f"{name}.pt"
        save_checkpoint(
            checkpoint,
            model_config=config.to_dict(),
            dehazer_state=dehazer.state_dict(),
            depth_net_state=depth_net.state_dict(),
            depth_range_m=(0.2, 150.0),
            provenance={"note": "test_onnx", "steps": 7},
            metrics={"val_psnr": 21.5},
        )
        graphs[name] = (checkpoint, folder / f"{name}.onnx")
    if not HAVE_EXTRA:
        return graphs
    from dehaze_ros.onnx_export import export_onnx

    for name, (checkpoint, graph) in graphs.items():
        if name == "diacmpn-rt":
            assert main([str(checkpoint), "--onnx", str(graph)]) == 0
        else:
            export_onnx(checkpoint, graph)
    return graphs


def torch_outputs(checkpoint: Path, hazy: torch.Tensor) -> list[np.ndarray]:
    from dehaze_ros.checkpoint import build_models, load_checkpoint

    module = DeployableNetworks(*build_models(load_checkpoint(checkpoint))).eval()
    with torch.inference_mode():
        return [output.numpy() for output in module(hazy)]


@pytest.mark.slow
@needs_extra
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_exports_and_onnxruntime_matches_torch_on_the_cpu(exported, name):
    import onnx
    import onnxruntime

    checkpoint, graph = exported[name]
    model = onnx.load(str(graph))
    assert (
        max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) >= 17
    )
    height_dim, width_dim = model.graph.input[0].type.tensor_type.shape.dim[2:]
    assert height_dim.dim_param and width_dim.dim_param, "height and width must be dynamic"
    physics = PRESETS[name].head != "residual"
    expected_names = (
        ["dehazed", "depth", "transmission", "airlight"] if physics else ["dehazed", "depth"]
    )
    assert [output.name for output in model.graph.output] == expected_names

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    # 37 x 53: no multiple of any padding; 240 x 320: one (the graph must not have frozen either).
    for height, width in [(37, 53), (240, 320)]:
        rgb = hazy_frame(width, height)
        hazy = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        expected = torch_outputs(checkpoint, hazy)
        got = session.run(None, {"hazy": hazy.numpy()})
        for output_name, want, have in zip(expected_names, expected, got):
            assert have.shape == want.shape, f"{name} {output_name} at {height}x{width}"
            # Depth is in metres (up to ~100): the same 1e-3, relative.
            tolerance = (
                1e-3 * max(1.0, float(np.abs(want).max())) if output_name == "depth" else 1e-3
            )
            difference = float(np.abs(have - want).max())
            assert difference <= tolerance, (
                f"{name} {output_name} at {height}x{width}: {difference:.2e}"
            )


@pytest.mark.slow
@needs_extra
def test_metadata_round_trip(exported):
    import onnx
    import onnxruntime

    checkpoint, graph = exported["diacmpn-rt"]
    props = {entry.key: entry.value for entry in onnx.load(str(graph)).metadata_props}
    metadata = OnnxMetadata.from_props(props, graph)
    assert metadata.model_config == PRESETS["diacmpn-rt"].to_dict()
    assert metadata.depth_units == "meters" and metadata.depth_range_m == (0.2, 150.0)
    assert metadata.canonical_focal_px == PRESETS["diacmpn-rt"].canonical_focal_px == 250.0
    assert metadata.min_side == 16 and metadata.outputs == (
        "dehazed",
        "depth",
        "transmission",
        "airlight",
    )
    assert metadata.provenance == {"note": "test_onnx", "steps": 7} and metadata.metrics == {
        "val_psnr": 21.5
    }
    assert metadata.io["color_order"] == "rgb" and "canonical" in metadata.io["graph"]["depth"]
    assert len(metadata.source_sha256) == 64
    # onnxruntime sees the same, which is what the backend reads.
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    assert OnnxMetadata.from_props(session.get_modelmeta().custom_metadata_map, graph) == metadata
    # Residual head without canonical camera: two outputs, plain metres.
    residual = OnnxMetadata.from_props(
        {
            entry.key: entry.value
            for entry in onnx.load(str(exported["diacmpn-s"][1])).metadata_props
        },
        "s",
    )
    assert residual.outputs == ("dehazed", "depth") and residual.canonical_focal_px == 0.0

    with pytest.raises(OnnxModelError, match="not a dehaze_ros ONNX graph"):
        OnnxMetadata.from_props({}, "other.onnx")
    with pytest.raises(OnnxModelError, match="format version '99'"):
        OnnxMetadata.from_props({**props, "dehaze_ros.format_version": "99"}, graph)
    broken = dict(props)
    del broken["depth_range_m"]
    with pytest.raises(OnnxModelError, match="lacks 'depth_range_m'"):
        OnnxMetadata.from_props(broken, graph)


@pytest.mark.slow
@needs_extra
def test_engine_with_onnxruntime_matches_the_torch_engine(exported):
    checkpoint, graph = exported["diacmpn-rt"]
    rgb = hazy_frame(640, 480)
    results = {}
    for backend in ("torch", "onnxruntime"):
        # fp32 both: torch's auto is bf16 on CPUs with native bf16, onnxruntime's is fp32.
        engine = DehazeEngine(
            EngineConfig(
                checkpoint=str(checkpoint),
                backend=backend,
                onnx_model=str(graph),
                device="cpu",
                precision="fp32",
                max_side=320,
                warmup=0,
                num_threads=1,
            )
        )
        results[backend] = engine.process(rgb, focal_px=500.0)
        description = engine.describe()
        assert description["backend"] == backend and description["model"] == "diacmpn-rt"
        assert engine.canonical_focal_px == 250.0 and engine.depth_range == (0.2, 150.0)
    torch_result, ort_result = results["torch"], results["onnxruntime"]
    assert np.abs(torch_result.dehazed.astype(int) - ort_result.dehazed.astype(int)).max() <= 1
    finite = np.isfinite(torch_result.depth)
    assert np.array_equal(finite, np.isfinite(ort_result.depth))
    np.testing.assert_allclose(ort_result.depth[finite], torch_result.depth[finite], rtol=1e-3)
    np.testing.assert_allclose(ort_result.airlight, torch_result.airlight, atol=1e-4)
    assert ort_result.timings_ms["total"] > 0


@pytest.mark.slow
@needs_extra
def test_without_onnx_model_the_checkpoint_is_exported_once_into_the_cache(
    exported, tmp_path, monkeypatch
):
    exported_checkpoint, _ = exported["diacmpn-rt"]
    # Alone in its folder: a graph exported beside it would be used instead (bundled_graph).
    checkpoint = tmp_path / "lone" / exported_checkpoint.name
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(exported_checkpoint.read_bytes())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = EngineConfig(
        checkpoint=str(checkpoint), backend="onnxruntime", device="cpu", warmup=0, num_threads=1
    )
    first = DehazeEngine(config)
    cached = list((tmp_path / "dehaze_ros" / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].name.startswith("diacmpn-rt-")
    assert first.describe()["checkpoint"] == str(cached[0])
    stamp = cached[0].stat().st_mtime_ns
    second = DehazeEngine(config)
    assert cached[0].stat().st_mtime_ns == stamp, (
        "the cached graph must be reused, not exported again"
    )
    rgb = hazy_frame(64, 48)
    assert np.array_equal(first.process(rgb).dehazed, second.process(rgb).dehazed)


@pytest.mark.slow
@needs_extra
def test_onnxruntime_backend_refuses_what_it_cannot_run(exported, tmp_path):
    checkpoint, graph = exported["diacmpn-rt"]
    with pytest.raises(EngineError, match="onnx_model .*missing.onnx not found"):
        DehazeEngine(
            EngineConfig(backend="onnxruntime", onnx_model=str(tmp_path / "missing.onnx"), warmup=0)
        )
    engine = DehazeEngine(
        EngineConfig(backend="onnxruntime", onnx_model=str(graph), device="cpu", warmup=0)
    )
    # Thinner than the graph accepts (16 px): padded like torch pads, outputs at the input size.
    thin = engine.process(np.full((12, 200, 3), 128, np.uint8), focal_px=150.0)
    assert thin.dehazed.shape == (12, 200, 3) and thin.depth.shape == (12, 200)
    with pytest.raises(EngineError, match="fp32 on the CPU"):
        DehazeEngine(
            EngineConfig(
                backend="onnxruntime",
                onnx_model=str(graph),
                device="cpu",
                precision="bf16",
                warmup=0,
            )
        )


@pytest.mark.slow
@needs_extra
def test_build_engines_prepares_what_the_node_will_load(exported, tmp_path, capsys):
    """The command that takes the export and the TensorRT build out of the node's configure: with
    the node's params file, on a machine without TensorRT it prepares the graph and says so."""
    from dehaze_ros.tools.build_engines import main

    _, graph = exported["diacmpn-rt"]
    params = tmp_path / "dehaze.yaml"
    params.write_text("/**:\n  ros__parameters:\n    max_side: 64\n    num_threads: 1\n")
    assert main(["--params-file", str(params), "--onnx-model", str(graph), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"graph {graph}" in printed and "device cpu" in printed
    assert "no TensorRT in this session" in printed
    assert main(["--onnx-model", str(tmp_path / "missing.onnx"), "--device", "cpu"]) == 2
    assert "missing.onnx not found" in capsys.readouterr().err


def test_execution_providers_follow_the_device(tmp_path):
    assert execution_providers("cpu", "auto", "", ["CPUExecutionProvider"]) == (
        ["CPUExecutionProvider"],
        "cpu",
    )
    assert execution_providers("auto", "fp32", "", ["CPUExecutionProvider"])[1] == "cpu"
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers, device = execution_providers("cuda:1", "fp16", tmp_path / "trt", gpu)
    assert device == "cuda:1"
    assert [p if isinstance(p, str) else p[0] for p in providers] == gpu
    trt = providers[0][1]
    assert trt["device_id"] == 1 and trt["trt_engine_cache_enable"] and trt["trt_fp16_enable"]
    assert trt["trt_engine_cache_path"] == str(tmp_path / "trt") and (tmp_path / "trt").is_dir()
    # fp16 only when asked for: TensorRT may put the DCP's box sums in fp16, where they overflow.
    assert not execution_providers("cuda", "auto", tmp_path, gpu)[0][0][1]["trt_fp16_enable"]
    # Without TensorRT in this onnxruntime: CUDA, then CPU.
    assert execution_providers("auto", "auto", "", gpu[1:])[0] == [
        ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]
    with pytest.raises(BackendError, match="no CUDAExecutionProvider .*onnxruntime-gpu"):
        execution_providers("cuda", "auto", "", ["CPUExecutionProvider"])
    with pytest.raises(BackendError, match="not bf16"):
        execution_providers("cuda", "bf16", "", gpu)


def test_tensorrt_engines_are_cached_per_graph_content(tmp_path):
    """onnxruntime names engine files after the graph's structure, not its weights: a re-exported
    model of the same file name must not load the engine of the old one."""
    from dehaze_ros.onnx_export import file_sha256

    graph = tmp_path / "dehaze.onnx"
    graph.write_bytes(b"graph with the old weights")
    old = engine_cache_dir(tmp_path / "trt", file_sha256(graph), "fp32")
    graph.write_bytes(b"graph with the new weights")
    new = engine_cache_dir(tmp_path / "trt", file_sha256(graph), "fp32")
    assert old != new and old.parent == new.parent == tmp_path / "trt"
    assert engine_cache_dir(tmp_path / "trt", file_sha256(graph), "fp16") != new
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers, _ = execution_providers(
        "cuda", "fp32", tmp_path / "trt", gpu, model_sha256=file_sha256(graph)
    )
    options = providers[0][1]
    assert options["trt_engine_cache_path"] == str(new) and new.is_dir()
    assert options["trt_timing_cache_path"] == str(
        tmp_path / "trt"
    )  # kernel timings: one for all graphs
    # The GPU check's CUDA row: the CUDA provider alone.
    assert [
        p[0] for p in execution_providers("cuda", "fp32", tmp_path, gpu, tensorrt=False)[0][:1]
    ] == ["CUDAExecutionProvider"]


def test_the_tensorrt_profile_spans_the_configured_sizes():
    """One engine for both passes and any camera: no rebuild when a new frame size arrives."""
    profile = tensorrt_profile(16, 320, 320)
    assert profile == {
        "trt_profile_min_shapes": "hazy:1x3x16x16",
        "trt_profile_opt_shapes": "hazy:1x3x240x320",
        "trt_profile_max_shapes": "hazy:1x3x320x320",
    }
    # Dehazing at 640, depth at 320: the profile covers both, tuned for the dehazing pass.
    assert tensorrt_profile(16, 640, 320)["trt_profile_max_shapes"] == "hazy:1x3x640x640"
    assert tensorrt_profile(16, 640, 320)["trt_profile_opt_shapes"] == "hazy:1x3x480x640"
    # Native: the camera is unknown, the profile goes to the largest side TensorRT's TopK allows.
    native = tensorrt_profile(32, 0, 320)
    assert native["trt_profile_max_shapes"] == f"hazy:1x3x{TRT_MAX_SIDE}x{TRT_MAX_SIDE}"
    assert native["trt_profile_opt_shapes"] == "hazy:1x3x480x640"
    assert (
        TRT_MAX_SIDE * TRT_MAX_SIDE
    ) // 1000 <= 3840  # the airlight's top-k at the largest frame
    with pytest.raises(BackendError, match="TopK takes k <= 3840"):
        tensorrt_profile(16, 2560, 320)


def test_a_gpu_left_unused_by_onnxruntime_is_named_with_the_fix():
    cpu_package = gpu_unused_warning(
        "auto",
        "cpu",
        ["AzureExecutionProvider", "CPUExecutionProvider"],
        "/dev/nvidia0 exists",
        "1.30.0",
    )
    assert "onnxruntime 1.30.0 is the CPU package" in cpu_package
    assert (
        "pip install 'dehaze_ros[onnx-gpu]'" in cpu_package
        and "pip uninstall -y onnxruntime" in cpu_package
    )
    dropped = gpu_unused_warning(
        "auto",
        "cpu",
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "/dev/nvidia0 exists",
        "1.22.0",
    )
    assert "could not load its CUDA provider" in dropped
    assert (
        gpu_unused_warning("cpu", "cpu", ["CPUExecutionProvider"], "/dev/nvidia0 exists", "1.30.0")
        == ""
    )
    assert gpu_unused_warning("auto", "cpu", ["CPUExecutionProvider"], "", "1.30.0") == ""
    assert (
        gpu_unused_warning(
            "auto", "cuda:0", ["CUDAExecutionProvider"], "/dev/nvidia0 exists", "1.22.0"
        )
        == ""
    )
    assert "dehaze_ros[onnx-gpu]" in INSTALL_HINT and "dehaze_ros[onnx]" in INSTALL_HINT


@needs_extra
def test_an_export_is_refused_when_the_graph_is_not_in_the_opset_asked_for():
    """torch keeps opset 18 when onnx cannot convert an operator (Pad has no 18 -> 17 adapter),
    with only a logged traceback: a graph labelled 17 would fail in TensorRT 8.6 instead."""
    import onnx

    from dehaze_ros.onnx_export import OnnxExportError, check_written_opset

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    check_written_opset(proto, 18)
    with pytest.raises(
        OnnxExportError, match="opset 17 was asked for but the exporter wrote opset 18"
    ):
        check_written_opset(proto, 17)


def test_a_gpu_provider_onnxruntime_drops_is_not_reported_as_the_device():
    """onnxruntime falls back to the CPU with only a log line when CUDA cannot load."""
    assert (
        session_device("cuda:0", "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])
        == "cuda:0"
    )
    assert (
        session_device("cuda:0", "cuda", ["TensorrtExecutionProvider", "CPUExecutionProvider"])
        == "cuda:0"
    )
    assert session_device("cuda:0", "auto", ["CPUExecutionProvider"]) == "cpu"
    with pytest.raises(
        BackendError, match="could not load its CUDA provider .*only: CPUExecutionProvider"
    ):
        session_device("cuda:1", "cuda:1", ["CPUExecutionProvider"])


@pytest.mark.slow
@needs_extra
def test_a_refused_device_or_precision_exports_nothing(exported, tmp_path, monkeypatch):
    checkpoint, _ = exported["diacmpn-rt"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(EngineError, match="fp32 on the CPU"):
        DehazeEngine(
            EngineConfig(
                checkpoint=str(checkpoint),
                backend="onnxruntime",
                device="cpu",
                precision="bf16",
                warmup=0,
            )
        )
    assert not (tmp_path / "dehaze_ros").exists(), "the checkpoint was exported before the refusal"


# Imported by the child below: onnxruntime made unimportable, as on a machine without the extra.
BLOCK_ONNXRUNTIME = """
import sys
class BlockOnnxRuntime:
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime' (blocked by the test)")
        return None
sys.meta_path.insert(0, BlockOnnxRuntime())
"""


@pytest.mark.slow
def test_without_onnxruntime_the_package_works_and_the_backend_says_what_to_install(exported):
    checkpoint, _ = exported["diacmpn-rt"]
    child = (
        BLOCK_ONNXRUNTIME
        + f"""
import json, numpy as np
from dehaze_ros.engine import DehazeEngine, EngineConfig, EngineError
engine = DehazeEngine(
    EngineConfig(checkpoint={str(checkpoint)!r}, device="cpu", warmup=0, num_threads=1)
)
torch_ok = engine.process(np.zeros((40, 60, 3), np.uint8)).depth.shape == (40, 60)
try:
    DehazeEngine(EngineConfig(checkpoint={str(checkpoint)!r}, backend="onnxruntime", warmup=0))
    message = None
except EngineError as exc:
    message = str(exc)
print(json.dumps({{"torch_ok": torch_ok, "message": message}}))
"""
    )
    completed = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["torch_ok"]
    assert (
        report["message"]
        and "needs the Python package onnxruntime, which is not installed" in report["message"]
    )
    assert "pip install 'dehaze_ros[onnx]'" in report["message"]
    assert "pip install 'dehaze_ros[onnx-gpu]'" in report["message"]
