"""training.quantize_trial on a two-convolution graph: QDQ where asked, float where kept, the
metadata carried over; and calibration frames that are hazy scenes, not saturated white."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.quantize_trial import calibration_frames, in_scopes, quantize_graph

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")


def two_conv_graph(path):
    """hazy -> conv (module "first") -> relu -> conv (module "second.conv") -> out, with
    metadata_props as the exporter writes them."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (3, 4, 3, 3)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["hazy", "w1"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Conv", ["b", "w2"], ["out"], name="conv_b", pads=[1, 1, 1, 1]),
    ]
    for node, scope in ((nodes[0], "first"), (nodes[2], "second.conv")):
        node.metadata_props.add(
            key="pkg.torch.onnx.name_scopes", value=repr(["", scope, node.name])
        )
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("hazy", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, "h", "w"])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.metadata_props.add(key="dehaze_ros.format", value="dehaze_ros.onnx")
    onnx.save(model, str(path))


def run(path, frame):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"hazy": frame})[0]


def test_quantised_where_asked_float_where_kept_and_metadata_kept(tmp_path):
    source = tmp_path / "fp32.onnx"
    two_conv_graph(source)
    rng = np.random.default_rng(1)
    frames = [rng.random((1, 3, 16, 20), dtype=np.float32) for _ in range(4)]
    everything, mixed = tmp_path / "all.onnx", tmp_path / "mixed.onnx"
    assert quantize_graph(source, everything, frames)["quantised"].startswith("2 of 2")
    summary = quantize_graph(source, mixed, frames, keep_float=["second"])
    assert summary["quantised"].startswith("1 of 2") and summary["kept_float"] == ["second"]
    graph = onnx.load(str(mixed))
    producer = {out: node.op_type for node in graph.graph.node for out in node.output}
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    assert [producer.get(node.input[0]) for node in convs] == ["DequantizeLinear", "Relu"]
    props = {prop.key: prop.value for prop in graph.metadata_props}
    assert props["dehaze_ros.format"] == "dehaze_ros.onnx"
    assert json.loads(props["quantization"])["kept_float"] == ["second"]
    reference = run(source, frames[0])
    for path in (everything, mixed):
        assert np.abs(run(path, frames[0]) - reference).max() < 0.05 * np.abs(reference).max()


def test_scopes_match_whole_module_names():
    assert in_scopes("dehazer.depth_branch.encoder.0", ["dehazer.depth_branch"])
    assert in_scopes("depth_net", ["depth_net"])
    assert not in_scopes("dehazer.depth_branch_extra", ["dehazer.depth_branch"])
    assert not in_scopes("dehazer.depth_refine", ["dehazer.depth"])


def test_calibration_frames_are_hazy_scenes_in_the_graphs_layout():
    frames = calibration_frames(3, width=40, height=30)
    assert all(f.shape == (1, 3, 30, 40) and f.dtype == np.float32 for f in frames)
    assert all(0.0 <= f.min() and f.max() <= 1.0 for f in frames)
    # Scenes, not saturated white: the renderer's uint8 image must be scaled to [0, 1] before
    # the haze is added.
    assert all(f.std() > 0.02 and f.mean() < 0.95 for f in frames)
    assert not np.array_equal(frames[0], frames[1])
    again = calibration_frames(3, width=40, height=30)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))
