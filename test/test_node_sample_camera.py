"""sample_camera in its own process: a hazy stream with CameraInfo, from the renderer or a folder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip(
    "rclpy", reason="rclpy is not installed (pip install -r requirements-ros-pypi.txt)"
)

from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from dehaze_ros.image_conversion import compressed_to_numpy, image_to_numpy  # noqa: E402
from dehaze_ros.sim.scenes import intrinsics  # noqa: E402
from ros_helpers import stamp_of  # noqa: E402


def test_scene_stream_with_camera_info_compressed_copy_and_ground_truth(start_node, probe):
    camera = start_node(
        "dehaze_ros.sim.sample_camera",
        [
            "-r",
            "__ns:=/cam_scene",
            "-p",
            "width:=96",
            "-p",
            "height:=64",
            "-p",
            "rate_hz:=8.0",
            "-p",
            "publish_compressed:=true",
            "-p",
            "frame_id:=test_optical_frame",
            "-p",
            "prerender_frames:=4",
        ],
        name="cam_scene",
    )
    images = probe.record(Image, "/cam_scene/image", reliable=False)
    infos = probe.record(CameraInfo, "/cam_scene/camera_info", reliable=False)
    compressed = probe.record(CompressedImage, "/cam_scene/image/compressed", reliable=False)
    depth = probe.record(Image, "/cam_scene/ground_truth/depth", reliable=False)
    assert probe.spin_until(lambda: len(images) >= 3 and depth and compressed, 60), camera.log()

    _, image = images[-1]
    assert (image.width, image.height, image.encoding) == (96, 64, "rgb8")
    assert image.header.frame_id == "test_optical_frame"
    pixels = image_to_numpy(image)
    assert pixels.std() > 5  # a rendered scene, not a blank frame
    stamps = [stamp_of(msg) for _, msg in images]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

    # CameraInfo carries the header of its image (the two may arrive in either order).
    def info_with_an_image_stamp():
        image_stamps = {stamp_of(msg) for _, msg in images}
        return next((msg for _, msg in infos if stamp_of(msg) in image_stamps), None)

    assert probe.spin_until(lambda: info_with_an_image_stamp() is not None, 10)
    info = info_with_an_image_stamp()
    assert info.header.frame_id == "test_optical_frame" and (info.width, info.height) == (96, 64)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), intrinsics(96, 64))

    _, jpeg = compressed[-1]
    decoded, encoding = compressed_to_numpy(jpeg)
    assert encoding == "rgb8" and decoded.shape == (64, 96, 3)

    _, ground_truth = depth[-1]
    depth_m = image_to_numpy(ground_truth)
    assert ground_truth.encoding == "32FC1" and depth_m.shape == (64, 96)
    assert np.isfinite(depth_m).any() and (depth_m[np.isfinite(depth_m)] > 0).all()


def test_folder_source_loops_over_its_images(start_node, probe, tmp_path):
    colours = [(0, 0, 255), (0, 255, 0)]  # BGR on disk: red, then green
    for index, colour in enumerate(colours):
        cv2.imwrite(str(tmp_path / f"frame_{index}.png"), np.full((20, 30, 3), colour, np.uint8))
    camera = start_node(
        "dehaze_ros.sim.sample_camera",
        [
            "-r",
            "__ns:=/cam_folder",
            "-p",
            "source:=folder",
            "-p",
            f"path:={tmp_path}",
            "-p",
            "rate_hz:=10.0",
            "-p",
            "encoding:=bgr8",
        ],
        name="cam_folder",
    )
    images = probe.record(Image, "/cam_folder/image", reliable=False)
    assert probe.spin_until(lambda: len(images) >= 5, 60), camera.log()
    firsts = [image_to_numpy(msg)[0, 0].tolist() for _, msg in images]
    assert {tuple(value) for value in firsts} == {
        tuple(colour) for colour in colours
    }  # both, looped
    assert images[-1][1].encoding == "bgr8" and (images[-1][1].width, images[-1][1].height) == (
        30,
        20,
    )


def test_bad_source_exits_with_a_message(start_node, tmp_path):
    camera = start_node(
        "dehaze_ros.sim.sample_camera",
        ["-p", "source:=folder", "-p", f"path:={tmp_path / 'nowhere'}"],
        name="cam_bad",
    )
    assert camera.process.wait(60) == 2
    assert f"source folder {tmp_path / 'nowhere'} does not exist" in camera.log()

    # A value outside a declared range is refused by rclpy itself: a message too, no traceback.
    too_long = start_node(
        "dehaze_ros.sim.sample_camera", ["-p", "prerender_frames:=900"], name="cam_loop"
    )
    assert too_long.process.wait(60) == 2
    assert "prerender_frames" in too_long.log() and "Traceback" not in too_long.log(), (
        too_long.log()
    )


def test_prerendered_loop_plays_back_and_forth_at_the_camera_rate():
    from dehaze_ros.sim.sample_camera import loop_index

    # 4 frames at 10 Hz: 0 1 2 3 2 1 0 1 ... (no jump at the loop's ends), one step per 0.1 s.
    shown = [loop_index(k / 10.0, 10.0, 4) for k in range(10)]
    assert shown == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert loop_index(0.1999, 10.0, 4) == 1  # a frame stays until the next period starts
    assert {loop_index(k * 0.37, 15.0, 1) for k in range(20)} == {0}


def test_prerendered_scene_frames_are_the_renderers_frames_at_their_own_times():
    from dehaze_ros.haze import synthesize_haze
    from dehaze_ros.sim.sample_camera import SceneSource, haze_strength
    from dehaze_ros.sim.scenes import SceneRenderer

    source = SceneSource(
        64,
        48,
        seed=3,
        beta_min=0.02,
        beta_max=0.08,
        period_s=30.0,
        airlight=0.85,
        prerender_frames=3,
        rate_hz=5.0,
    )
    renderer = SceneRenderer(width=64, height=48, seed=3)
    for t, k in ((0.0, 0), (0.25, 1), (0.45, 2), (0.65, 1), (0.85, 0)):
        hazy, depth, clear = source.frame(t)
        expected = renderer.render(k / 5.0)  # frame k was rendered at time k / rate_hz
        np.testing.assert_array_equal(depth, expected.depth_m)
        np.testing.assert_array_equal(clear, expected.rgb)
        # The haze is applied live: its density follows the time of publication, not of rendering.
        want, _ = synthesize_haze(
            expected.rgb, expected.depth_m, haze_strength(t, 0.02, 0.08, 30.0), 0.85
        )
        np.testing.assert_array_equal(hazy, (want * 255.0 + 0.5).astype(np.uint8))
    assert not np.array_equal(source.frame(0.0)[1], source.frame(0.25)[1])  # the camera moves
