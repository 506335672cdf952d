"""The OpenVINO backend: the exported graph matches torch fp32, the engine runs it, and without the
extra the package works and the backend names the pip command."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from dehaze_ros.backends import BackendError
from dehaze_ros.backends.openvino_backend import INSTALL_HINT, OpenVinoBackend
from dehaze_ros.checkpoint import build_models, load_checkpoint, save_checkpoint
from dehaze_ros.engine import DehazeEngine, EngineConfig
from dehaze_ros.models import PRESETS, build_dehazer, build_depth_net
from dehaze_ros.onnx_export import DeployableNetworks
from dehaze_ros.tools.benchmark import hazy_frame

HAVE_EXTRA = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "openvino"))
needs_extra = pytest.mark.skipif(
    not HAVE_EXTRA, reason="the openvino extra is not installed: pip install '.[openvino]'"
)
# Running a graph needs openvino only (a ROS machine's `pip install openvino`); exports need all.
needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A diacmpn-rt checkpoint whose every layer matters (the zero-initialised heads would make an
    untrained D the DCP and hide a wrong backbone), and its ONNX graph."""
    config = PRESETS["diacmpn-rt"]
    torch.manual_seed(0)
    dehazer, depth_net = build_dehazer(config), build_depth_net(config)
    with torch.no_grad():
        for module in (dehazer, depth_net):
            for parameter in module.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
    folder = tmp_path_factory.mktemp("openvino")
    checkpoint, graph = folder / "rt.pt", folder / "rt.onnx"
    save_checkpoint(
        checkpoint,
        model_config=config.to_dict(),
        dehazer_state=dehazer.state_dict(),
        depth_net_state=depth_net.state_dict(),
        depth_range_m=(0.2, 150.0),
    )
    if HAVE_EXTRA:
        from dehaze_ros.onnx_export import export_onnx

        export_onnx(checkpoint, graph)
    return checkpoint, graph


@pytest.mark.slow
@needs_extra
def test_openvino_matches_torch_fp32_on_two_sizes(exported):
    checkpoint, graph = exported
    backend = OpenVinoBackend(graph, device="cpu", precision="fp32", num_threads=1)
    assert backend.describe()["backend"] == "openvino" and backend.name == "diacmpn-rt"
    assert backend.depth_range == (0.2, 150.0)
    module = DeployableNetworks(*build_models(load_checkpoint(checkpoint))).eval()
    # 37 x 53: no multiple of any padding; 240 x 320: one.
    for height, width in [(37, 53), (240, 320)]:
        rgb = hazy_frame(width, height).astype(np.float32) / 255
        with torch.inference_mode():
            hazy = torch.from_numpy(rgb).permute(2, 0, 1)[None]
            dehazed, depth, transmission, airlight = (tensor.numpy() for tensor in module(hazy))
        out = backend.run(rgb, want_dehazed=True, want_depth=True)
        out.check(height, width, True, True, "openvino")
        pairs = {
            "dehazed": (out.dehazed, dehazed[0].transpose(1, 2, 0)),
            "transmission": (out.transmission, transmission[0, 0]),
            "airlight": (out.airlight, airlight.reshape(3)),
            "depth": (out.depth, depth[0, 0]),
        }
        for name, (have, want) in pairs.items():
            # Depth is in metres (up to ~100): the same 1e-3, relative.
            tolerance = 1e-3 * max(1.0, float(np.abs(want).max())) if name == "depth" else 1e-3
            difference = float(np.abs(have - want).max())
            assert difference <= tolerance, f"{name} at {height}x{width}: {difference:.2e}"


@pytest.mark.slow
@needs_extra
def test_engine_with_openvino_matches_the_torch_engine(exported):
    checkpoint, graph = exported
    rgb = hazy_frame(640, 480)
    results = {}
    for backend in ("torch", "openvino"):
        engine = DehazeEngine(
            EngineConfig(
                checkpoint=str(checkpoint),
                backend=backend,
                onnx_model=str(graph),
                device="cpu",
                precision="fp32",
                max_side=320,
                warmup=1,
                num_threads=1,
            )
        )
        results[backend] = engine.process(rgb, focal_px=500.0)
    want, have = results["torch"], results["openvino"]
    assert np.abs(want.dehazed.astype(int) - have.dehazed.astype(int)).max() <= 1
    finite = np.isfinite(want.depth)
    assert np.array_equal(finite, np.isfinite(have.depth))
    np.testing.assert_allclose(have.depth[finite], want.depth[finite], rtol=1e-3)


@pytest.mark.slow
@needs_extra
def test_openvino_refuses_what_it_cannot_run(exported, tmp_path):
    _, graph = exported
    with pytest.raises(BackendError, match="CPU only"):
        OpenVinoBackend(graph, device="cuda")
    with pytest.raises(BackendError, match="fp32 or bf16"):
        OpenVinoBackend(graph, precision="fp16")
    with pytest.raises(BackendError, match="not found"):
        OpenVinoBackend(tmp_path / "missing.onnx")
    backend = OpenVinoBackend(graph, device="cpu", precision="fp32", num_threads=1)
    # Thinner than the graph accepts (16 px): padded like torch pads, outputs at the input size.
    out = backend.run(np.full((8, 40, 3), 0.5, np.float32), True, True)
    assert out.dehazed.shape == (8, 40, 3) and out.depth.shape == (8, 40)
    assert out.transmission.shape == (8, 40) and np.isfinite(out.depth).all()


def test_without_openvino_the_backend_names_the_pip_command(monkeypatch):
    # None in sys.modules makes `import openvino` raise ImportError, as on a plain install.
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    with pytest.raises(BackendError) as raised:
        OpenVinoBackend("", "checkpoint.pt")
    assert "pip install openvino" in str(raised.value)
    assert "pip install openvino" in INSTALL_HINT


# backend auto: the rule of backends.resolve_backend, on the files a user sees.


def test_the_shipped_graph_was_exported_from_the_shipped_checkpoint():
    # No extra needed: the graph carries its source's sha256 as text in its metadata.
    from dehaze_ros.engine import DEFAULT_CHECKPOINT
    from dehaze_ros.onnx_export import file_sha256

    graph = DEFAULT_CHECKPOINT.with_suffix(".onnx").read_bytes()
    assert file_sha256(DEFAULT_CHECKPOINT).encode() in graph, (
        "dehaze_ros/checkpoints/default.onnx was not exported from default.pt: "
        "python -m training.export dehaze_ros/checkpoints/default.pt "
        "--onnx dehaze_ros/checkpoints/default.onnx"
    )


@needs_openvino
def test_the_shipped_graph_is_the_shipped_checkpoint():
    # A new default.pt without a fresh default.onnx would quietly put auto back on torch.
    from dehaze_ros.backends.onnxruntime_backend import bundled_graph
    from dehaze_ros.engine import DEFAULT_CHECKPOINT

    assert bundled_graph(DEFAULT_CHECKPOINT) == DEFAULT_CHECKPOINT.with_suffix(".onnx"), (
        "dehaze_ros/checkpoints/default.onnx was not exported from default.pt: "
        "python -m training.export dehaze_ros/checkpoints/default.pt "
        "--onnx dehaze_ros/checkpoints/default.onnx"
    )


@needs_openvino
def test_auto_runs_the_shipped_checkpoint_on_openvino_in_the_cpus_best_precision():
    from dehaze_ros.devices import cpu_supports_bf16

    engine = DehazeEngine(EngineConfig(device="cpu", warmup=0, num_threads=1))
    info = engine.describe()
    assert info["backend"] == "openvino", info
    assert info["precision"] == ("bf16" if cpu_supports_bf16() else "fp32")
    assert "default.onnx" in info["backend_choice"]
    result = engine.process(hazy_frame(160, 120), focal_px=150.0)
    assert result.dehazed.shape == (120, 160, 3) and np.isfinite(result.depth).any()


@needs_openvino
def test_auto_uses_a_graph_beside_a_checkpoint_only_when_exported_from_it(tmp_path):
    import shutil

    from dehaze_ros.backends import resolve_backend
    from dehaze_ros.engine import DEFAULT_CHECKPOINT

    copy = tmp_path / "mine.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, copy)
    name, why, graph = resolve_backend("auto", "checkpoint", copy, "cpu")
    assert name == "torch" and f"--onnx {tmp_path / 'mine.onnx'}" in why and graph == ""
    shutil.copyfile(DEFAULT_CHECKPOINT.with_suffix(".onnx"), tmp_path / "mine.onnx")
    assert resolve_backend("auto", "checkpoint", copy, "cpu") == (
        "openvino",
        f"auto: openvino on the CPU, graph {tmp_path / 'mine.onnx'}",
        str(tmp_path / "mine.onnx"),
    )
    # The same names, but the checkpoint's bytes changed since the export: the graph is stale.
    copy.write_bytes(copy.read_bytes() + b"retrained")
    assert resolve_backend("auto", "checkpoint", copy, "cpu")[0] == "torch"
    (tmp_path / "mine.onnx").write_bytes(b"not a graph")
    assert resolve_backend("auto", "checkpoint", copy, "cpu")[0] == "torch"
    # Paths with no name to put a suffix on, and no checkpoint at all: torch, not a crash.
    assert resolve_backend("auto", "checkpoint", ".", "cpu")[0] == "torch"
    assert resolve_backend("auto", "checkpoint", tmp_path / "gone.pt", "cpu")[0] == "torch"


@needs_extra
def test_auto_ignores_a_graph_from_an_older_exporter(tmp_path):
    # Same checkpoint, but a format version the backends no longer read: torch, not a failure.
    import shutil

    import onnx

    from dehaze_ros.backends import resolve_backend
    from dehaze_ros.engine import DEFAULT_CHECKPOINT

    shutil.copyfile(DEFAULT_CHECKPOINT, tmp_path / "old.pt")
    graph = onnx.load(str(DEFAULT_CHECKPOINT.with_suffix(".onnx")))
    for prop in graph.metadata_props:
        if prop.key == "dehaze_ros.format_version":
            prop.value = "0"
    onnx.save(graph, str(tmp_path / "old.onnx"))
    assert resolve_backend("auto", "checkpoint", tmp_path / "old.pt", "cpu")[0] == "torch"


def test_auto_elsewhere_is_torch_or_the_graphs_runner(monkeypatch, tmp_path):
    from dehaze_ros.backends import resolve_backend
    from dehaze_ros.engine import DEFAULT_CHECKPOINT

    # Named backends are taken as named; the DCP has no network to run.
    assert resolve_backend("torch", "checkpoint", DEFAULT_CHECKPOINT, "cpu") == ("torch", "", "")
    assert resolve_backend("auto", "dcp", "", "cpu")[0] == "torch"
    # A GPU: torch, or onnxruntime for a graph given as the model (no device needed to decide).
    assert resolve_backend("auto", "checkpoint", DEFAULT_CHECKPOINT, "cuda:0")[0] == "torch"
    assert resolve_backend("auto", "checkpoint", "", "cuda", "m.onnx")[0] == "onnxruntime"
    # No openvino installed: torch, and the reason names the pip command.
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    name, why, _ = resolve_backend("auto", "checkpoint", DEFAULT_CHECKPOINT, "cpu")
    assert name == "torch" and "openvino is not installed" in why and "pip install openvino" in why
    assert resolve_backend("auto", "checkpoint", "", "cpu", "m.onnx")[0] == "onnxruntime"


@needs_extra
def test_auto_finds_the_shipped_graph_with_openvino_alone(monkeypatch):
    # `pip install openvino` without onnx (a ROS machine): the graph's source is read by OpenVINO.
    from dehaze_ros.backends.onnxruntime_backend import graph_source_sha256
    from dehaze_ros.engine import DEFAULT_CHECKPOINT
    from dehaze_ros.onnx_export import file_sha256

    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    graph = DEFAULT_CHECKPOINT.with_suffix(".onnx")
    assert graph_source_sha256(graph) == file_sha256(DEFAULT_CHECKPOINT)


SIGINT_AFTER_ENGINES = """
import gc, os, signal
import numpy as np
from dehaze_ros.engine import DehazeEngine, EngineConfig
config = EngineConfig(backend="openvino", device="cpu", warmup=0, num_threads=1)
frame = np.full((48, 64, 3), 128, np.uint8)
first = DehazeEngine(config); first.process(frame)
second = DehazeEngine(config); second.process(frame)
first.close(); del first; gc.collect()  # released in the order they were made
second.close(); del second; gc.collect()
caught = []
signal.signal(signal.SIGINT, lambda *args: caught.append(args))
os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, handled on the thread's alternate stack
print("caught", len(caught))
"""


@needs_openvino
def test_ctrl_c_after_openvino_engines_come_and_go_is_handled_not_a_crash():
    # With a Core per engine, OpenVINO's CPU plugin left the thread's alternate signal stack
    # pointing at the first Core's freed one, and this SIGINT died with SIGSEGV (exit -11).
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", SIGINT_AFTER_ENGINES],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "caught 1" in done.stdout, (done.returncode, done.stderr)
