"""Vehicle-scale outdoor scenes: exact depth, sky +inf, terrain to km, fixed validation views."""

import dataclasses
import math

import numpy as np
import pytest

from dehaze_ros.sim.scenes import (
    SceneRenderer,
    _camera_rotation,
    intrinsics,
    outdoor_validation_views,
    random_outdoor_scene,
    render,
    render_random_outdoor_view,
)


def _level_view(seed: int, width: int, height: int, hfov_deg: float = 70.0):
    scene = random_outdoor_scene(np.random.default_rng(seed))
    position = np.array([0.0, scene.eye[0], scene.eye[1]])
    return scene, render(
        scene, width, height, position, 0.0, 0.0, K=intrinsics(width, height, hfov_deg)
    )


def _without_objects(scene):
    return dataclasses.replace(
        scene,
        box_lo=np.zeros((0, 3)),
        box_hi=np.zeros((0, 3)),
        box_color=np.zeros((0, 3), np.float32),
        box_material=np.zeros(0, np.int32),
        box_accent=np.zeros((0, 3), np.float32),
        box_pattern=np.zeros((0, 5)),
        sphere_center=np.zeros((0, 3)),
        sphere_radius=np.zeros(0),
        sphere_color=np.zeros((0, 3), np.float32),
        sphere_material=np.zeros(0, np.int32),
        sphere_accent=np.zeros((0, 3), np.float32),
        ridge=None,
    )


def _ground_depth(K: np.ndarray, height: int, camera_height: float, pitch: float) -> np.ndarray:
    """Z of the ground plane per image row, +inf at and above the horizon.

    The optical y axis (down) is (.., .., -cos(pitch)) in the z-up world and the optical axis
    rises as sin(pitch) (pitch > 0 looks up), so the ray (x, y, 1) of row v, y = (v - cy) / fy,
    falls by y cos(pitch) - sin(pitch) per unit of Z: Z = h / (y cos(pitch) - sin(pitch)).
    """
    fall = (np.arange(height) - K[1, 2]) / K[1, 1] * math.cos(pitch) - math.sin(pitch)
    with np.errstate(divide="ignore"):
        return np.where(fall > 0, camera_height / fall, np.inf)


def test_ground_plane_depth_is_the_analytic_distance():
    ground_only = _without_objects(random_outdoor_scene(np.random.default_rng(5)))
    width, height = 80, 60
    for camera_height, pitch_deg, hfov in [
        (0.3, -10.0, 100.0),
        (1.5, 0.0, 70.0),
        (2.5, 5.0, 45.0),
        (1.2, -4.0, 90.0),
    ]:
        pitch = math.radians(pitch_deg)
        K = intrinsics(width, height, hfov)
        frame = render(
            ground_only, width, height, np.array([3.0, -1.0, camera_height]), 0.4, pitch, K=K
        )
        expected = np.broadcast_to(
            _ground_depth(K, height, camera_height, pitch)[:, None], (height, width)
        )
        sky = np.isinf(expected)
        assert sky.any() and not sky.all()
        np.testing.assert_array_equal(np.isinf(frame.depth_m), sky)
        np.testing.assert_allclose(frame.depth_m[~sky], expected[~sky], rtol=1e-3)


def test_nothing_is_seen_behind_the_ground():
    """Everything stands on the ground: below the horizon no depth exceeds the ground's."""
    for seed in range(4):
        scene = random_outdoor_scene(np.random.default_rng(seed))
        width, height, pitch = 64, 48, math.radians(-6.0)
        K = intrinsics(width, height, 80.0)
        frame = render(
            scene, width, height, np.array([0.0, scene.eye[0], scene.eye[1]]), 0.2, pitch, K=K
        )
        ground = np.broadcast_to(
            _ground_depth(K, height, scene.eye[1], pitch)[:, None], (height, width)
        )
        below = np.isfinite(ground)
        assert np.all(frame.depth_m[below] <= ground[below] * (1 + 1e-6))
        assert np.mean(frame.depth_m[below] < ground[below] * 0.999) > 0.01, (
            "objects stand on the ground"
        )


def test_sky_is_infinite_and_fills_the_top_of_a_level_view():
    width, height = 64, 48
    top_sky = []
    for seed in range(12):
        scene, frame = _level_view(seed, width, height)
        depth = frame.depth_m
        assert np.all(np.isfinite(depth[height // 2 :])), (
            "below the horizon every ray meets the ground or an object"
        )
        top_sky.append(np.isinf(depth[: height // 4]).mean())
        sky = np.isinf(depth)
        if (
            sky.any()
        ):  # sky pixels show sky colours (a blue or grey gradient, white clouds), not black
            assert frame.rgb[sky].mean() > 100
    assert np.mean(top_sky) > 0.5, top_sky


def test_depth_spans_metres_to_kilometres_and_stays_bounded():
    ranges = []
    for seed in range(8):
        depth = render_random_outdoor_view(np.random.default_rng(seed), 96, 72).depth_m
        finite = depth[np.isfinite(depth)]
        assert finite.size and np.all(finite > 0)
        ranges.append((finite.min(), finite.max()))
    nearest, farthest = np.array(ranges).T
    assert np.all(nearest < 10.0), ranges
    assert np.sum(farthest > 300.0) >= 6, ranges  # a few views face a wall close by
    assert farthest.max() > 1000.0, ranges
    # The ridge around the scene ends the ground: nothing finite lies beyond about 3 km.
    assert np.all(farthest < 3100.0), ranges


def test_distant_terrain_or_skyline_is_visible_down_the_road():
    # Near the horizon the ground of a level camera 2.5 m up or lower is under 700 m away (and
    # under 100 m at 0.3 m): depths beyond that are hills, the ridge and distant towers. A city
    # street's far end may hide them; most views down the road see kilometres.
    farthest = []
    for seed in range(8):
        scene, frame = _level_view(seed, 96, 72, hfov_deg=90.0)
        farthest.append(frame.depth_m[np.isfinite(frame.depth_m)].max())
    assert np.sum(np.array(farthest) > 1000.0) >= 6 and min(farthest) > 100.0, farthest


def test_intrinsics_follow_the_field_of_view():
    width, height = 65, 49  # odd: the principal point is a pixel centre
    frame = render_random_outdoor_view(np.random.default_rng(3), width, height, hfov_deg=80.0)
    assert frame.K[0, 0] == pytest.approx((width / 2) / math.tan(math.radians(40.0)))
    assert frame.K[1, 1] == frame.K[0, 0]
    assert (frame.K[0, 2], frame.K[1, 2]) == (32.0, 24.0)
    hfovs = [
        math.degrees(
            2
            * math.atan(
                width
                / 2
                / render_random_outdoor_view(np.random.default_rng(seed), width, height).K[0, 0]
            )
        )
        for seed in range(10)
    ]
    assert all(45.0 <= hfov <= 100.0 for hfov in hfovs) and np.ptp(hfovs) > 10.0, hfovs
    # The draws do not depend on hfov_deg: the same scene and pose, so the pixel on the optical
    # axis sees the same point whatever the field of view, and a wider one sees more sky and ground.
    narrow = render_random_outdoor_view(np.random.default_rng(3), width, height, hfov_deg=50.0)
    wide = render_random_outdoor_view(np.random.default_rng(3), width, height, hfov_deg=95.0)
    assert narrow.depth_m[24, 32] == wide.depth_m[24, 32]
    assert not np.array_equal(narrow.depth_m, wide.depth_m)
    with pytest.raises(ValueError, match="hfov_deg"):
        render_random_outdoor_view(np.random.default_rng(3), width, height, hfov_deg=180.0)


def test_random_views_are_deterministic_and_well_formed():
    a = render_random_outdoor_view(np.random.default_rng(11), 48, 36)
    b = render_random_outdoor_view(np.random.default_rng(11), 48, 36)
    c = render_random_outdoor_view(np.random.default_rng(12), 48, 36)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    np.testing.assert_array_equal(a.K, b.K)
    assert not np.array_equal(a.depth_m, c.depth_m)
    assert a.rgb.dtype == np.uint8 and a.rgb.shape == (36, 48, 3)
    assert a.depth_m.dtype == np.float32 and a.depth_m.shape == (36, 48)
    assert a.K.shape == (3, 3)
    assert a.rgb.std() > 10, "a textured scene, not a flat image"


def test_validation_views_are_fixed_and_never_training_draws():
    views = outdoor_validation_views(3, 40, 30)
    again = outdoor_validation_views(2, 40, 30)
    for first, second in zip(views, again):  # view i depends on (seed, i) only, not on count
        np.testing.assert_array_equal(first.rgb, second.rgb)
        np.testing.assert_array_equal(first.depth_m, second.depth_m)
    other_seed = outdoor_validation_views(1, 40, 30, seed=1)[0]
    assert not np.array_equal(views[0].depth_m, other_seed.depth_m)
    training = [
        render_random_outdoor_view(np.random.default_rng(seed), 40, 30) for seed in range(10)
    ]
    for view in views:
        assert not any(np.array_equal(view.depth_m, sample.depth_m) for sample in training)
    assert all(np.isinf(view.depth_m).any() and np.isfinite(view.depth_m).any() for view in views)


def _brute_force_depth(scene, width, height, position, yaw, pitch, K):
    """Nearest hit of every ray with the ground, every box, sphere and the ridge: no culling."""
    rotation = _camera_rotation(yaw, pitch)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    dirs = (
        np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(
            -1, 3
        )
        @ rotation.T
    )
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = -position[2] / dirs[:, 2]
        best = np.where(t_ground > 1e-4, t_ground, np.inf)
        t1 = (scene.box_lo[None] - position) / dirs[:, None]
        t2 = (scene.box_hi[None] - position) / dirs[:, None]
        near, far = np.minimum(t1, t2).max(axis=2), np.maximum(t1, t2).min(axis=2)
        best = np.minimum(
            best, np.where((near <= far) & (near > 1e-4), near, np.inf).min(axis=1, initial=np.inf)
        )
        to_center = position - scene.sphere_center
        b = dirs @ to_center.T
        disc = b * b - ((to_center**2).sum(axis=1) - scene.sphere_radius**2)
        t = -b - np.sqrt(np.maximum(disc, 0))
        best = np.minimum(
            best, np.where((disc > 0) & (t > 1e-4), t, np.inf).min(axis=1, initial=np.inf)
        )
        ridge = scene.ridge  # leaving the vertical cylinder |xy| = R, below the silhouette
        a = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
        b = dirs[:, :2] @ position[:2]
        t = (-b + np.sqrt(b * b - a * (position[:2] @ position[:2] - ridge.radius_m**2))) / a
        hit = position + t[:, None] * dirs
        below = hit[:, 2] <= ridge.height(np.arctan2(hit[:, 1], hit[:, 0]))
        best = np.minimum(best, np.where(below, t, np.inf))
    return (best * (dirs @ rotation[:, 2])).reshape(height, width)


def test_screen_space_culling_misses_no_hit():
    """The renderer tests primitives only inside their projected rectangle; compare with all."""
    width, height = 48, 36
    # Looking down the road, back along it, across it, and down at the ground (where no window of
    # a primitive contains sky, so a wrong "already hidden" skip would show).
    for seed, yaw_deg, pitch_deg, hfov in [
        (0, 20.0, -8.0, 100.0),
        (1, 180.0, 3.0, 60.0),
        (2, -75.0, -2.0, 90.0),
        (3, 5.0, -10.0, 45.0),
    ]:
        scene = random_outdoor_scene(np.random.default_rng(seed))
        assert len(scene.box_lo) > 20 and len(scene.sphere_radius) > 2
        position = np.array([1.0, scene.eye[0], scene.eye[1]])
        K = intrinsics(width, height, hfov)
        yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
        frame = render(scene, width, height, position, yaw, pitch, K=K)
        expected = _brute_force_depth(scene, width, height, position, yaw, pitch, K)
        np.testing.assert_array_equal(np.isinf(frame.depth_m), np.isinf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(frame.depth_m[finite], expected[finite], rtol=1e-5)


def test_mountain_peaks_are_hit_up_to_their_tops():
    """The ridge is only tested for rays below its highest peak: aim a narrow view at that peak."""
    width, height = 48, 36
    scene = max(
        (random_outdoor_scene(np.random.default_rng(seed)) for seed in range(8)),
        key=lambda scene: scene.ridge.amplitude_m.sum(),
    )
    scene = dataclasses.replace(_without_objects(scene), ridge=scene.ridge)
    azimuth = np.linspace(-math.pi, math.pi, 20001)
    peak = azimuth[np.argmax(scene.ridge.height(azimuth))]
    position = np.array([0.0, scene.eye[0], scene.eye[1]])
    top = math.atan2(scene.ridge.height(np.array([peak]))[0] - position[2], scene.ridge.radius_m)
    K = intrinsics(width, height, 20.0)
    frame = render(scene, width, height, position, peak, top * 0.8, K=K)
    expected = _brute_force_depth(scene, width, height, position, peak, top * 0.8, K)
    assert np.isfinite(expected[: height // 2]).any(), "the peak rises above the image centre"
    np.testing.assert_array_equal(np.isinf(frame.depth_m), np.isinf(expected))


def test_scene_renderer_drives_down_an_outdoor_scene():
    renderer = SceneRenderer(48, 36, seed=2, vehicle_scale=True)
    first, again = (
        renderer.render(3.0),
        SceneRenderer(48, 36, seed=2, vehicle_scale=True).render(3.0),
    )
    np.testing.assert_array_equal(first.rgb, again.rgb)
    np.testing.assert_array_equal(first.depth_m, again.depth_m)
    assert not np.array_equal(first.depth_m, renderer.render(9.0).depth_m)
    for t in np.arange(0.0, renderer.loop_s, 4.0):  # its path is kept clear: never inside an object
        depth = renderer.render(float(t)).depth_m
        assert depth[np.isfinite(depth)].min() > 0.3
    assert SceneRenderer(48, 36, seed=2).scene.eye is None  # the default scene is unchanged
    with pytest.raises(ValueError, match="exclude each other"):
        SceneRenderer(48, 36, indoor=True, vehicle_scale=True)


def test_frames_carry_the_camera_mounting_a_robot_would_configure():
    """camera_height_m above what the camera stands on, camera_pitch_deg positive looking down:
    the ground's depth follows from them alone (what the ground-plane scale relies on)."""
    ground_only = _without_objects(random_outdoor_scene(np.random.default_rng(5)))
    width, height = 80, 60
    K = intrinsics(width, height, 70.0)
    frame = render(
        ground_only, width, height, np.array([3.0, -1.0, 1.4]), 0.3, math.radians(-4.0), K=K
    )
    assert (frame.camera_height_m, frame.camera_pitch_deg) == pytest.approx((1.4, 4.0))
    expected = _ground_depth(
        K, height, frame.camera_height_m, -math.radians(frame.camera_pitch_deg)
    )
    np.testing.assert_allclose(frame.depth_m[-1], expected[-1], rtol=1e-3)
    # A robot on a raised sidewalk: the height is above the sidewalk, not the road.
    for seed in range(40):
        scene = random_outdoor_scene(np.random.default_rng(seed))
        if scene.eye_surface_z > 0:
            break
    else:
        pytest.fail("no scene of 40 put a robot on a raised sidewalk")
    raised = render(scene, 16, 12, np.array([0.0, scene.eye[0], scene.eye[1]]), 0.0, 0.0)
    assert raised.camera_height_m == pytest.approx(scene.eye[1] - scene.eye_surface_z)


def test_vehicle_views_are_vehicle_cameras_at_native_size_and_fixed():
    from dehaze_ros.sim.scenes import (
        VEHICLE_CAMERAS,
        VEHICLE_HEIGHT_RANGE_M,
        VEHICLE_PITCH_RANGE_DEG,
        vehicle_validation_view,
    )

    for index in (0, 2, 3):
        name, frame = vehicle_validation_view(index)
        camera = VEHICLE_CAMERAS[index % len(VEHICLE_CAMERAS)]
        assert name == camera[0] and frame.rgb.shape == (camera[2], camera[1], 3)
        assert VEHICLE_HEIGHT_RANGE_M[0] <= frame.camera_height_m <= VEHICLE_HEIGHT_RANGE_M[1]
        assert VEHICLE_PITCH_RANGE_DEG[0] <= frame.camera_pitch_deg <= VEHICLE_PITCH_RANGE_DEG[1]
        hfov = math.degrees(2 * math.atan(camera[1] / 2 / frame.K[0, 0]))
        assert camera[3][0] - 1e-6 <= hfov <= camera[3][1] + 1e-6
        # A car on the road: the ground under the camera is the road at z = 0, seen at the bottom.
        bottom = _ground_depth(
            frame.K, camera[2], frame.camera_height_m, -math.radians(frame.camera_pitch_deg)
        )[-1]
        assert np.median(frame.depth_m[-1]) == pytest.approx(bottom, rel=0.02)
    again = vehicle_validation_view(0)[1]
    np.testing.assert_array_equal(again.depth_m, vehicle_validation_view(0)[1].depth_m)
    assert vehicle_validation_view(0, seed=1)[1].camera_height_m != again.camera_height_m


def test_vehicle_windows_are_windows_of_a_deployed_vehicle_frame():
    """Training windows for vehicle cameras: square, on a car or truck, with the focal length of
    a frame 256-640 px wide, anywhere in that frame; the road under the camera is where the
    window's own (off-centre) intrinsics put it."""
    from dehaze_ros.sim.scenes import (
        VEHICLE_HEIGHT_RANGE_M,
        VEHICLE_PITCH_RANGE_DEG,
        render_random_vehicle_window,
    )

    principal_points = []
    for seed in range(6):
        window = render_random_vehicle_window(np.random.default_rng(seed), 48, (256.0, 640.0))
        assert window.rgb.shape == (48, 48, 3)
        assert VEHICLE_HEIGHT_RANGE_M[0] <= window.camera_height_m <= VEHICLE_HEIGHT_RANGE_M[1]
        assert VEHICLE_PITCH_RANGE_DEG[0] <= window.camera_pitch_deg <= VEHICLE_PITCH_RANGE_DEG[1]
        # The narrowest camera (60 degrees) at 256 px up to the widest (90) at 640 px.
        assert 256 / 2 / math.tan(math.radians(45)) - 1e-6 <= window.K[0, 0]
        assert window.K[0, 0] <= 640 / 2 / math.tan(math.radians(30)) + 1e-6
        principal_points.append((window.K[0, 2], window.K[1, 2]))
        ground = _ground_depth(
            window.K, 48, window.camera_height_m, -math.radians(window.camera_pitch_deg)
        )
        bottom = window.depth_m[-1]
        if (
            np.isfinite(ground[-1])
            and np.isfinite(bottom).all()
            and bottom.std() < 1e-3 * ground[-1]
        ):
            # a row of bare road (nothing standing on it): the plane's analytic depth
            assert np.median(bottom) == pytest.approx(ground[-1], rel=0.02)
    # Windows lie anywhere in their frame, not at its centre.
    assert len({round(x) for x, _ in principal_points}) > 3
    # A frame shorter than the window (the wide camera at 320 px: 97 rows) puts the window's
    # centre row on the frame's centre row; a taller one places it anywhere.
    wide_focal = 160 / math.tan(math.radians(81.4 / 2))  # the wide camera's, 320 px wide
    rows = {True: [], False: []}
    for seed in range(12):
        window = render_random_vehicle_window(np.random.default_rng(seed), 100, (320.0, 320.0))
        rows[bool(window.K[0, 0] == pytest.approx(wide_focal))].append(window.K[1, 2])
    assert rows[True] and all(cy == pytest.approx(99 / 2) for cy in rows[True])
    assert any(cy != pytest.approx(99 / 2) for cy in rows[False])
    again = render_random_vehicle_window(np.random.default_rng(3), 48, (256.0, 640.0))
    np.testing.assert_array_equal(
        again.depth_m,
        render_random_vehicle_window(np.random.default_rng(3), 48, (256.0, 640.0)).depth_m,
    )
