"""Engine and checkpoints: round trips through real files, every loading error, input checks."""

import dataclasses
import os
import zipfile

import cv2
import numpy as np
import pytest
import torch

from dehaze_ros.canonical_camera import focal_from_hfov
from dehaze_ros.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    atomic_torch_save,
    build_models,
    load_checkpoint,
    save_checkpoint,
)
from dehaze_ros.engine import DehazeEngine, EngineConfig, EngineError, as_rgb_uint8, scaled_size
from dehaze_ros.models import build_dehazer, build_depth_net, get_model_config
from dehaze_ros.models.config import CANONICAL_FOCAL_PX
from dehaze_ros.models.dehazer import T_MIN


def write_checkpoint(path, config):
    """A real checkpoint of randomly initialised networks, written to disk: (path, D, E)."""
    torch.manual_seed(0)
    dehazer, depth_net = build_dehazer(config), build_depth_net(config)
    # The output projection starts at zero (the untrained dehazer is the identity or the DCP);
    # random weights make the head's output non-zero so the tests see the network's path at all.
    torch.nn.init.normal_(dehazer.output_projection.weight, std=0.05)
    torch.nn.init.normal_(dehazer.output_projection.bias, std=0.05)
    save_checkpoint(
        path,
        model_config=config.to_dict(),
        dehazer_state=dehazer.state_dict(),
        depth_net_state=depth_net.state_dict(),
        depth_units="meters",
        depth_range_m=(0.1, 80.0),
        provenance={"note": "random init, test"},
        metrics={"psnr": 0.0},
    )
    return path, dehazer.eval(), depth_net.eval()


@pytest.fixture(scope="module")
def rt_checkpoint(tmp_path_factory):
    """diacmpn-rt as shipped: physics head on the DCP prior, canonical-camera depth."""
    return write_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "rt.pt", get_model_config("diacmpn-rt")
    )


@pytest.fixture(scope="module")
def residual_checkpoint(tmp_path_factory):
    """The paper's residual head, plain metres (no canonical camera)."""
    config = dataclasses.replace(
        get_model_config("diacmpn-rt"), head="residual", canonical_focal_px=0.0
    )
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "residual.pt", config)


def test_checkpoint_round_trip_gives_identical_outputs(rt_checkpoint):
    path, dehazer, depth_net = rt_checkpoint
    ckpt = load_checkpoint(path)
    assert ckpt.depth_units == "meters" and ckpt.depth_range_m == (0.1, 80.0)
    assert ckpt.provenance["note"] == "random init, test"
    loaded_dehazer, loaded_depth = build_models(ckpt)
    image = torch.rand(1, 3, 45, 61)
    with torch.inference_mode():
        torch.testing.assert_close(loaded_dehazer(image), dehazer(image), rtol=0, atol=0)
        torch.testing.assert_close(loaded_depth(image), depth_net(image), rtol=0, atol=0)


def test_engine_output_equals_model_output_at_native_size(rt_checkpoint):
    path, dehazer, depth_net = rt_checkpoint
    engine = DehazeEngine(
        EngineConfig(checkpoint=str(path), device="cpu", precision="fp32", max_side=0, warmup=0)
    )
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    result = engine.process(rgb)
    with torch.inference_mode():
        hazy = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        expected = dehazer(hazy).clamp(0, 1)
        canonical_depth = depth_net(expected)[0, 0].numpy()
    expected_rgb = expected[0].permute(1, 2, 0).numpy() * 255
    assert result.dehazed.shape == (37, 53, 3) and result.dehazed.dtype == np.uint8
    assert np.abs(result.dehazed.astype(np.float32) - expected_rgb).max() <= 1.0
    # No focal length given: metres for the assumed field of view, and the result says so.
    assert result.focal_assumed
    expected_depth = (
        canonical_depth * focal_from_hfov(53, EngineConfig().default_hfov_deg) / CANONICAL_FOCAL_PX
    )
    finite = np.isfinite(result.depth)
    assert finite.mean() > 0.5
    np.testing.assert_allclose(result.depth[finite], expected_depth[finite], rtol=1e-5)
    # A broken focal length (a CameraInfo of zeros or NaN) is not used: the FOV is assumed.
    for broken in (0.0, -5.0, float("nan")):
        fallback = engine.process(rgb, focal_px=broken)
        assert fallback.focal_assumed
        np.testing.assert_array_equal(fallback.depth, result.depth)
    # A known focal length: depth scales with it (d = d_c * f / f_c).
    known = engine.process(rgb, focal_px=250.0)
    assert not known.focal_assumed
    finite = np.isfinite(known.depth)
    np.testing.assert_allclose(
        known.depth[finite], (canonical_depth * 250.0 / CANONICAL_FOCAL_PX)[finite], rtol=1e-5
    )
    assert result.depth_units == "meters"
    assert set(result.timings_ms) >= {"dehaze", "depth", "total"}
    assert engine.describe()["model"] == "diacmpn-rt"


def test_engine_max_side_inverts_the_scattering_model_at_full_resolution(rt_checkpoint):
    """Physics head below input resolution (the bilinear path): t upsampled,
    J = (I - A) / max(t, t0) + A on the full-resolution input; canonical depth converted with the
    focal length of the small image."""
    path, dehazer, depth_net = rt_checkpoint
    engine = DehazeEngine(
        EngineConfig(
            checkpoint=str(path),
            max_side=64,
            size_rule="side",
            depth_max_side=0,
            precision="fp32",
            upsampling="bilinear",
            warmup=0,
            depth_from_haze="off",
        )
    )  # the network's own depth
    rgb = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    result = engine.process(rgb, focal_px=180.0)
    small = cv2.resize(rgb, (64, 38), interpolation=cv2.INTER_AREA)
    with torch.inference_mode():
        out = dehazer.forward_physics(torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255)
        canonical_small = depth_net(out.dehazed.clamp(0, 1))[0, 0].numpy()
    transmission = cv2.resize(
        out.transmission[0, 0].numpy(), (200, 120), interpolation=cv2.INTER_LINEAR
    )
    airlight = out.airlight.reshape(3).numpy()
    expected = (rgb / 255.0 - airlight) / np.maximum(transmission, T_MIN)[..., None] + airlight
    assert np.abs(result.dehazed - np.clip(expected, 0, 1) * 255).max() <= 1.0
    np.testing.assert_array_equal(
        result.transmission, out.transmission[0, 0].numpy()
    )  # network resolution
    np.testing.assert_array_equal(result.airlight, airlight)
    metres_small = canonical_small * (180.0 * 64 / 200) / CANONICAL_FOCAL_PX
    expected_depth = cv2.resize(metres_small, (200, 120), interpolation=cv2.INTER_NEAREST)
    finite = np.isfinite(result.depth)
    assert finite.mean() > 0.5
    np.testing.assert_allclose(result.depth[finite], expected_depth[finite], rtol=1e-5)


def test_depth_runs_at_depth_max_side_whatever_max_side_is(rt_checkpoint):
    """Metric depth of one frame is the same at max_side 64 and at native resolution: the depth pass
    runs at depth_max_side in both; with depth_max_side 0 it follows max_side and changes."""
    path, _, _ = rt_checkpoint
    rgb = np.random.default_rng(3).integers(0, 256, (120, 200, 3), dtype=np.uint8)

    def run(max_side, depth_max_side, **kwargs):
        engine = DehazeEngine(
            EngineConfig(
                checkpoint=str(path),
                max_side=max_side,
                depth_max_side=depth_max_side,
                size_rule="side",
                precision="fp32",
                warmup=0,
            )
        )
        return engine.process(rgb, focal_px=180.0, **kwargs)

    small, native = run(64, 64), run(0, 64)
    np.testing.assert_array_equal(native.depth, small.depth)
    assert "depth_pass_dehaze" in native.timings_ms and "depth_pass_dehaze" not in small.timings_ms
    assert native.dehazed.shape == small.dehazed.shape == (120, 200, 3)
    assert np.abs(native.dehazed.astype(int) - small.dehazed).mean() > 0.5, (
        "dehazing still follows max_side"
    )
    assert np.abs(run(0, 0).depth - small.depth)[np.isfinite(small.depth)].max() > 1e-3
    depth_only = run(0, 64, want_dehazed=False)
    assert depth_only.dehazed is None and "dehaze" not in depth_only.timings_ms
    np.testing.assert_array_equal(depth_only.depth, small.depth)
    # t and A come from the pass that made the depth, whether or not the dehazed image was wanted
    # (visibility reads -ln t against the depth).
    assert native.transmission.shape == depth_only.transmission.shape == (38, 64)
    np.testing.assert_array_equal(native.transmission, depth_only.transmission)
    np.testing.assert_array_equal(native.airlight, depth_only.airlight)
    assert run(0, 64, want_depth=False).transmission.shape == (120, 200)
    # Relative depth (DCP) has no metres to keep: one pass at max_side's size.
    dcp = DehazeEngine(EngineConfig(model="dcp", max_side=0, depth_max_side=64, warmup=0)).process(
        rgb
    )
    assert not any(stage.startswith("depth_pass_") for stage in dcp.timings_ms)
    assert dcp.transmission.shape == (120, 200)


def test_engine_max_side_rebuilds_full_resolution_from_the_small_correction(residual_checkpoint):
    """Residual head, bilinear path: full-size output
    = hazy + upsampled(dehazed_small - hazy_small); depth nearest-upsampled, plain metres (no
    canonical camera, so no focal length involved)."""
    path, dehazer, depth_net = residual_checkpoint
    engine = DehazeEngine(
        EngineConfig(
            checkpoint=str(path),
            max_side=64,
            size_rule="side",
            depth_max_side=0,
            precision="fp32",
            upsampling="bilinear",
            warmup=0,
            depth_from_haze="off",
        )
    )  # the network's own depth
    rgb = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    result = engine.process(rgb)
    assert not result.focal_assumed
    small = cv2.resize(rgb, (64, 38), interpolation=cv2.INTER_AREA)
    with torch.inference_mode():
        hazy_small = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
        dehazed_small = dehazer(hazy_small).clamp(0, 1)
        depth_small = depth_net(dehazed_small)[0, 0].numpy()
    correction = (dehazed_small - hazy_small)[0].permute(1, 2, 0).numpy()
    assert np.abs(correction).max() > 0.02, "the test needs a dehazer that changes the image"
    expected = rgb + cv2.resize(correction, (200, 120), interpolation=cv2.INTER_LINEAR) * 255
    assert np.abs(result.dehazed - np.clip(expected, 0, 255)).max() <= 1.0
    expected_depth = cv2.resize(depth_small, (200, 120), interpolation=cv2.INTER_NEAREST)
    finite = np.isfinite(result.depth)
    np.testing.assert_allclose(result.depth[finite], expected_depth[finite], rtol=1e-5)
    # Nearest upsampling invents no depth between neighbours: every value is a network output.
    assert np.isin(result.depth[finite], depth_small).all()


def test_engine_max_side_returns_input_resolution_and_skips_unwanted_work(rt_checkpoint):
    path, _, _ = rt_checkpoint
    engine = DehazeEngine(EngineConfig(checkpoint=str(path), max_side=64, warmup=0))
    result = engine.process(np.full((120, 200), 128, dtype=np.uint8), want_depth=False)
    assert result.dehazed.shape == (120, 200, 3) and result.depth is None
    assert "depth" not in result.timings_ms
    result = engine.process(np.zeros((120, 200, 4), dtype=np.uint8), want_dehazed=False)
    assert result.dehazed is None and result.depth.shape == (120, 200)


def test_engine_depth_outside_trained_range_is_rep117_inf(rt_checkpoint, tmp_path):
    path, _, _ = rt_checkpoint
    ckpt = torch.load(path, weights_only=True)
    ckpt["depth"]["range_m"] = [1e6, 2e6]  # every prediction is "too close" for this range
    narrow = tmp_path / "narrow.pt"
    torch.save(ckpt, narrow)
    depth = (
        DehazeEngine(EngineConfig(checkpoint=str(narrow), warmup=0))
        .process(np.zeros((20, 20, 3), np.uint8))
        .depth
    )
    assert np.all(np.isneginf(depth))


def test_checkpoint_errors_say_what_is_wrong(rt_checkpoint, tmp_path):
    path, _, _ = rt_checkpoint
    with pytest.raises(CheckpointError, match="not found: .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(garbage)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a dehaze_ros checkpoint"):
        load_checkpoint(foreign)

    payload = torch.load(path, weights_only=True)
    payload["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(future)

    payload = torch.load(path, weights_only=True)
    first_key = sorted(payload["dehazer"])[0]
    del payload["dehazer"][first_key]
    payload["dehazer"]["not_a_layer.weight"] = torch.zeros(1)
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(CheckpointError) as excinfo:
        build_models(load_checkpoint(mismatched))
    assert first_key in str(excinfo.value) and "not_a_layer.weight" in str(excinfo.value)

    with pytest.raises(CheckpointError, match="not found"):
        DehazeEngine(EngineConfig(checkpoint=str(tmp_path / "nope.pt")))


class _RunsCode:
    """Pickles to a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unreadable_checkpoints_never_offer_weights_only_false(tmp_path):
    # Issue 10: a directory was "no such file", and foreign files repeated torch's hint to
    # re-run with weights_only=False (arbitrary code execution) to the operator of a robot.
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "best.pt").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=r"is a directory, not a checkpoint file.*holds: best\.pt"
    ):
        load_checkpoint(folder)

    marker = tmp_path / "code_ran"
    malicious = tmp_path / "malicious.pt"
    torch.save({"dehazer": _RunsCode(marker)}, malicious)
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    for path, problem in [
        (malicious, "unsafe to load .*posix.system"),
        (random_bytes, "not a dehaze_ros checkpoint"),
    ]:
        with pytest.raises(CheckpointError, match=problem) as excinfo:
            load_checkpoint(path)
        message = str(excinfo.value)
        assert str(path) in message and "training.export" in message  # how to make one
        assert "weights_only" not in message and "Re-running" not in message, message
    assert not marker.exists(), "loading the malicious checkpoint ran its code"


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "last.pt"
    previous_umask = os.umask(0o027)
    try:
        atomic_torch_save({"step": 1}, target)
    finally:
        os.umask(previous_umask)
    assert target.stat().st_mode & 0o777 == 0o640, (
        "mode of a plain open() under the umask, not mkstemp's 0600"
    )

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"step": 2, "bad": Unpicklable()}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "no temp file may be left behind"
    assert zipfile.is_zipfile(target)


def test_engine_config_and_input_validation():
    for bad, message in [
        (dict(model="yolo"), "model must be one of"),
        (dict(precision="int8"), "precision must be one of"),
        (dict(device="tpu"), "device must be"),
        (dict(max_side=8), "max_side"),
        (dict(depth_max_side=16), "depth_max_side"),
        (dict(warmup=-1), "warmup"),
    ]:
        with pytest.raises(ValueError, match=message):
            DehazeEngine(EngineConfig(**bad))
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="CUDA is not available"):
            DehazeEngine(EngineConfig(device="cuda"))
        with pytest.raises(EngineError, match="needs a CUDA device"):
            DehazeEngine(EngineConfig(device="cpu", precision="fp16", checkpoint="unused.pt"))
    with pytest.raises(ValueError, match="numpy array"):
        as_rgb_uint8([[1, 2, 3]])
    with pytest.raises(ValueError, match="float64"):
        as_rgb_uint8(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"\(4, 4, 2\)"):
        as_rgb_uint8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        as_rgb_uint8(np.zeros((0, 4, 3), np.uint8))
    gray = as_rgb_uint8(np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert gray.shape == (2, 3, 3) and np.all(gray[..., 0] == gray[..., 2])
    assert as_rgb_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255
    assert scaled_size(480, 640, 320) == (240, 320) and scaled_size(100, 50, 320) == (100, 50)


def test_dcp_engine_reports_relative_depth():
    engine = DehazeEngine(EngineConfig(model="dcp", warmup=0))
    result = engine.process(np.full((30, 40, 3), 200, np.uint8))
    assert result.depth_units == "relative" and engine.describe()["model"] == "dcp"
    assert result.dehazed.shape == (30, 40, 3) and np.isfinite(result.depth).all()


def test_engine_guided_recovery_of_a_residual_head_is_the_affine_fit(residual_checkpoint):
    """Default upsampling, J-only head: J_small ~ a I_small + b per channel, applied full size."""
    from dehaze_ros.upsampling import recover_from_dehazed

    path, dehazer, _ = residual_checkpoint
    engine = DehazeEngine(
        EngineConfig(
            checkpoint=str(path), max_side=64, size_rule="side", precision="fp32", warmup=0
        )
    )
    assert engine.describe()["upsampling"] == "guided"
    rgb = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    result = engine.process(rgb, want_depth=False)
    small = cv2.resize(rgb, (64, 38), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    with torch.inference_mode():
        dehazed_small = dehazer(torch.from_numpy(small).permute(2, 0, 1)[None]).clamp(0, 1)
    expected = recover_from_dehazed(
        rgb / np.float32(255), small, dehazed_small[0].permute(1, 2, 0).numpy()
    )
    assert np.abs(result.dehazed - expected * 255).max() <= 1.0
    bilinear = DehazeEngine(
        EngineConfig(
            checkpoint=str(path),
            max_side=64,
            size_rule="side",
            precision="fp32",
            upsampling="bilinear",
            warmup=0,
        )
    ).process(rgb, want_depth=False)
    assert np.abs(result.dehazed.astype(int) - bilinear.dehazed.astype(int)).max() > 10


def test_upsampling_auto_is_each_backends_measured_best_and_an_explicit_mode_wins(
    residual_checkpoint,
):
    path, _, _ = residual_checkpoint
    assert DehazeEngine(EngineConfig(model="dcp", warmup=0)).describe()["upsampling"] == "affine"
    network = DehazeEngine(EngineConfig(checkpoint=str(path), precision="fp32", warmup=0))
    assert network.describe()["upsampling"] == "guided"
    explicit = DehazeEngine(EngineConfig(model="dcp", upsampling="bilinear", max_side=32, warmup=0))
    assert explicit.describe()["upsampling"] == "bilinear"
    rgb = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    auto = DehazeEngine(EngineConfig(model="dcp", max_side=32, warmup=0)).process(
        rgb, want_depth=False
    )
    affine = DehazeEngine(
        EngineConfig(model="dcp", max_side=32, upsampling="affine", warmup=0)
    ).process(rgb, want_depth=False)
    np.testing.assert_array_equal(auto.dehazed, affine.dehazed)
    assert not np.array_equal(auto.dehazed, explicit.process(rgb, want_depth=False).dehazed)


def test_a_failed_warm_up_releases_the_backend_and_num_threads_0_is_torchs_default(rt_checkpoint):
    from dehaze_ros.backends.torch_backend import TorchBackend
    from dehaze_ros.engine import TORCH_DEFAULT_THREADS

    path, _, _ = rt_checkpoint
    backend = TorchBackend(path, "cpu", "fp32")
    # The warm-up frame is 320x240: a max_side the network cannot run at makes it fail for real.
    original_run = backend.run
    closed = []
    backend.close = lambda: closed.append(True)
    backend.run = lambda rgb, *a: original_run(rgb[:, :, :2], *a)  # a broken backend: 2 channels
    with pytest.raises(Exception):
        DehazeEngine(
            EngineConfig(checkpoint=str(path), precision="fp32", warmup=1), backend=backend
        )
    assert closed == [True]
    DehazeEngine(EngineConfig(checkpoint=str(path), precision="fp32", num_threads=1, warmup=0))
    assert torch.get_num_threads() == 1
    DehazeEngine(EngineConfig(checkpoint=str(path), precision="fp32", warmup=0))  # num_threads 0
    assert torch.get_num_threads() == TORCH_DEFAULT_THREADS


def test_a_missing_checkpoint_for_the_onnx_export_is_an_engine_error(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    # No onnx_model: the checkpoint would be exported, but it cannot even be read.
    with pytest.raises(EngineError, match="missing.pt"):
        DehazeEngine(
            EngineConfig(checkpoint=str(tmp_path / "missing.pt"), backend="onnxruntime", warmup=0)
        )


def test_the_ground_plane_gives_the_shipped_network_its_metres_on_a_vehicle_view():
    """The shipped network's own metres are about 0.65x the truth on this wide vehicle view; the
    camera height (and pitch) put them within 10 %. A random network's depth has no ground to
    find."""
    from dehaze_ros.engine import DEFAULT_CHECKPOINT
    from dehaze_ros.metric_scale import GROUND, LEARNED, SUPPORT_PLANE, Mounting, Pinhole
    from dehaze_ros.sim.scenes import vehicle_validation_view

    _, frame = vehicle_validation_view(0)  # 1242 x 375, fx 721, clear air
    camera = Pinhole(frame.K[0, 0], frame.K[1, 1], frame.K[0, 2], frame.K[1, 2])
    # The depth pass at 320 x 97, the side rule, where the figures above were measured.
    engine = DehazeEngine(
        EngineConfig(
            checkpoint=str(DEFAULT_CHECKPOINT),
            device="cpu",
            warmup=0,
            size_rule="side",
            num_threads=1,
            camera_height_m=frame.camera_height_m,
            camera_pitch_deg=frame.camera_pitch_deg,
        )
    )
    truth = frame.depth_m
    scored = np.isfinite(truth) & (truth < 80.0)

    def median_ratio(depth):
        both = scored & np.isfinite(depth)
        return float(np.median(depth[both]) / np.median(truth[both]))

    learned = engine.process(frame.rgb, want_dehazed=False, camera=camera, mounting=Mounting())
    assert learned.scale.source == LEARNED and median_ratio(learned.depth) < 0.8
    ground = engine.process(frame.rgb, want_dehazed=False, camera=camera, stamp_s=0.0)
    assert ground.scale.source == GROUND and not ground.scale.held
    assert 0.9 <= median_ratio(ground.depth) <= 1.1, median_ratio(ground.depth)
    assert (ground.depth_support == SUPPORT_PLANE).mean() > 0.2 and "scale" in ground.timings_ms
    # The factor is the stream's: the same frame again moves nothing; a reset forgets it.
    again = engine.process(frame.rgb, want_dehazed=False, camera=camera, stamp_s=0.1)
    assert again.scale.factor == pytest.approx(ground.scale.factor)
    engine.reset_scale()
    assert (
        engine.process(
            np.full_like(frame.rgb, 128), want_dehazed=False, camera=camera, stamp_s=0.2
        ).scale.source
        == LEARNED
    )  # a grey frame: no ground, nothing held
    engine.close()
    for bad, problem in (
        ({"camera_height_m": -1.0}, "camera_height_m"),
        ({"camera_pitch_deg": 60.0}, "camera_pitch_deg"),
    ):
        with pytest.raises(ValueError, match=problem):
            EngineConfig(**bad).validate()
