"""Procedural scenes: RGB + exact metric depth + pinhole intrinsics, rendered by numpy ray casting.

The built-in data of the project: the demo camera stream, the tests, and an infinite, seeded
training source. Scenes are made of textured planes (ground, walls, ceiling), axis-aligned boxes,
spheres and a sky; shading is Lambertian under a sun plus ambient light. Every pixel's depth is
exact, so haze synthesised with the ASM (``dehaze_ros.haze``) gives pairs with exact ground truth
for dehazing *and* depth.

Frames (REP-103/REP-118 conventions):
* the world is z-up; the camera's optical frame is x right, y down, z forward;
* ``depth_m`` is the Z coordinate in the optical frame (not the range along the ray), float32
  metres, ``+inf`` where a ray sees sky;
* ``K`` is the 3x3 intrinsic matrix of the rendered image (pixel centres at integer + 0.5 offsets
  are not used: pixel (u, v) looks through (u - cx) / fx, (v - cy) / fy, as OpenCV/ROS do).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-4


@dataclass(frozen=True)
class RenderedFrame:
    rgb: np.ndarray        # H x W x 3 uint8, RGB
    depth_m: np.ndarray    # H x W float32, metres along the optical axis, +inf = sky
    K: np.ndarray          # 3 x 3 float64 intrinsics


@dataclass(frozen=True)
class _Plane:
    normal: np.ndarray     # unit normal, axis-aligned
    offset: float          # points p with normal . p = offset
    color_a: np.ndarray
    color_b: np.ndarray
    tile_m: float          # checker tile size
    max_height: float | None = None  # walls end here (metres, world z); None = unbounded


@dataclass
class Scene:
    planes: list[_Plane]
    box_lo: np.ndarray      # N x 3
    box_hi: np.ndarray      # N x 3
    box_color: np.ndarray   # N x 3
    sphere_center: np.ndarray  # M x 3
    sphere_radius: np.ndarray  # M
    sphere_color: np.ndarray   # M x 3
    sky_horizon: np.ndarray
    sky_zenith: np.ndarray
    sun_dir: np.ndarray
    indoor: bool


def intrinsics(width: int, height: int, hfov_deg: float = 70.0) -> np.ndarray:
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def _random_color(rng: np.random.Generator, low: float = 0.15, high: float = 0.95) -> np.ndarray:
    return rng.uniform(low, high, size=3).astype(np.float32)


def random_scene(rng: np.random.Generator, indoor: bool | None = None) -> Scene:
    """A random arrangement: an outdoor street-like scene with sky, or a closed room."""
    if indoor is None:
        indoor = bool(rng.random() < 0.5)
    ground = _Plane(np.array([0.0, 0.0, 1.0]), 0.0, _random_color(rng, 0.2, 0.7),
                    _random_color(rng, 0.2, 0.7), float(rng.uniform(0.5, 3.0)))
    planes = [ground]
    if indoor:
        length, half_width, height = rng.uniform(6, 14), rng.uniform(2.5, 6), rng.uniform(2.4, 3.5)
        wall_specs = [((1, 0, 0), length), ((-1, 0, 0), 2.0), ((0, 1, 0), half_width),
                      ((0, -1, 0), half_width), ((0, 0, 1), height)]
        extent_x, extent_y = (0.5, length - 0.5), (-half_width + 0.3, half_width - 0.3)
        n_boxes, n_spheres = rng.integers(3, 8), rng.integers(1, 4)
        size_range = (0.3, 1.4)
    else:
        side = rng.uniform(6, 20)
        wall_specs = [((0, 1, 0), side), ((0, -1, 0), side)] if rng.random() < 0.6 else []
        extent_x, extent_y = (3.0, 160.0), (-side + 1, side - 1)
        n_boxes, n_spheres = rng.integers(6, 16), rng.integers(2, 6)
        size_range = (0.8, 6.0)
    for normal, offset in wall_specs:
        # Outdoor walls are finite in height so that the sky (infinite depth) stays visible.
        wall_height = None if indoor or normal[2] else float(rng.uniform(3.0, 15.0))
        planes.append(_Plane(np.array(normal, dtype=np.float64), float(offset),
                             _random_color(rng), _random_color(rng), float(rng.uniform(0.3, 2.5)),
                             wall_height))
    centers_xy = np.stack([rng.uniform(*extent_x, n_boxes), rng.uniform(*extent_y, n_boxes)], axis=1)
    sizes = rng.uniform(*size_range, size=(n_boxes, 3))
    if not indoor:
        sizes[:, 2] *= rng.uniform(1.0, 4.0, n_boxes)  # buildings and poles, taller than wide
    box_lo = np.concatenate([centers_xy - sizes[:, :2] / 2, np.zeros((n_boxes, 1))], axis=1)
    box_hi = np.concatenate([centers_xy + sizes[:, :2] / 2, sizes[:, 2:3]], axis=1)
    radius = rng.uniform(size_range[0] / 2, size_range[1] / 2, n_spheres)
    sphere_center = np.stack([rng.uniform(*extent_x, n_spheres), rng.uniform(*extent_y, n_spheres),
                              radius * rng.uniform(1.0, 2.0, n_spheres)], axis=1)
    sun = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.4, 1.5)])
    return Scene(
        planes=planes,
        box_lo=box_lo, box_hi=box_hi,
        box_color=rng.uniform(0.1, 0.95, size=(n_boxes, 3)).astype(np.float32),
        sphere_center=sphere_center, sphere_radius=radius,
        sphere_color=rng.uniform(0.1, 0.95, size=(n_spheres, 3)).astype(np.float32),
        sky_horizon=np.array([0.85, 0.88, 0.92], dtype=np.float32) * rng.uniform(0.8, 1.0),
        sky_zenith=np.array([0.35, 0.55, 0.85], dtype=np.float32) * rng.uniform(0.7, 1.1),
        sun_dir=sun / np.linalg.norm(sun),
        indoor=indoor,
    )


def _camera_rotation(yaw: float, pitch: float) -> np.ndarray:
    """Columns: the optical frame's x (right), y (down), z (forward) axes in world coordinates."""
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


def _hash_noise(points: np.ndarray, cell_m: float) -> np.ndarray:
    """Cheap deterministic white noise per texture cell: gives every surface fine detail."""
    cells = np.floor(points / cell_m)
    value = np.sin(cells @ np.array([12.9898, 78.233, 37.719])) * 43758.5453
    return (value - np.floor(value)).astype(np.float32)


# Corner c of a box takes hi on axis a where bit a of c is set; the 12 edges join corners one bit apart.
_CORNER_BITS = ((np.arange(8)[:, None] >> np.arange(3)) & 1).astype(bool)
_BOX_EDGES = np.array([(c, c | (1 << a)) for c in range(8) for a in range(3) if not c & (1 << a)])
_NEAR_M = 1e-9  # any hit in front of the camera lies beyond this optical-axis distance


def _ground_clip_height(scene: Scene, origin: np.ndarray) -> float:
    """Height below which nothing is visible: an unbounded ground plane under the camera hides it."""
    ground = scene.planes[0] if scene.planes else None
    if (ground is not None and ground.max_height is None and np.array_equal(ground.normal, (0.0, 0.0, 1.0))
            and origin[2] > ground.offset):
        return float(ground.offset)
    return -np.inf


def _screen_rects(lo: np.ndarray, hi: np.ndarray, ground_z: float, origin: np.ndarray,
                  rotation: np.ndarray, K: np.ndarray, width: int, height: int,
                  sphere_radius: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rectangles [v0, v1) x [u0, u1) outside which no ray hits the visible part of each box.

    The visible part is the box above ``ground_z`` (a sphere's, when ``sphere_radius`` is given:
    the cap above it, whose footprint is narrower than the sphere's), clipped to the half-space in
    front of the camera; its image lies inside the bounding rectangle of its projected corners and
    edge/near-plane crossings (one pixel of margin for rounding). Also returns the Euclidean
    distance from the camera to each box: no hit can be nearer. Empty rectangles have v0 == v1.
    """
    rects = np.zeros((len(lo), 4), dtype=np.int64)
    if len(lo) == 0:
        return rects, np.zeros(0)
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    if sphere_radius is not None and np.isfinite(ground_z):
        center = (lo + hi) / 2
        below = center[:, 2] < ground_z
        half = np.sqrt(np.maximum(sphere_radius ** 2 - (ground_z - center[:, 2]) ** 2, 0.0))
        lo[below, :2] = center[below, :2] - half[below, None]
        hi[below, :2] = center[below, :2] + half[below, None]
    lo[:, 2] = np.maximum(lo[:, 2], ground_z)
    corners = np.where(_CORNER_BITS[None], hi[:, None, :], lo[:, None, :])
    cam = (corners - origin) @ rotation  # N x 8 x (right, down, forward)
    a, b = cam[:, _BOX_EDGES[:, 0]], cam[:, _BOX_EDGES[:, 1]]
    crosses = (a[..., 2] < _NEAR_M) != (b[..., 2] < _NEAR_M)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(crosses, (_NEAR_M - a[..., 2]) / (b[..., 2] - a[..., 2]), 0.0)
    points = np.concatenate([cam, a + s[..., None] * (b - a)], axis=1)
    valid = np.concatenate([cam[..., 2] >= _NEAR_M, crosses], axis=1)
    depth = np.maximum(points[..., 2], _NEAR_M)
    u = K[0, 0] * points[..., 0] / depth + K[0, 2]
    v = K[1, 1] * points[..., 1] / depth + K[1, 2]
    u0 = np.floor(np.where(valid, u, np.inf).min(axis=1)) - 1
    u1 = np.ceil(np.where(valid, u, -np.inf).max(axis=1)) + 2
    v0 = np.floor(np.where(valid, v, np.inf).min(axis=1)) - 1
    v1 = np.ceil(np.where(valid, v, -np.inf).max(axis=1)) + 2
    visible = valid.any(axis=1) & (lo[:, 2] <= hi[:, 2]) & (u1 > 0) & (u0 < width) & (v1 > 0) & (v0 < height)
    rects[visible] = np.stack([np.clip(v0, 0, height), np.clip(v1, 0, height),
                               np.clip(u0, 0, width), np.clip(u1, 0, width)], axis=1)[visible].astype(np.int64)
    rects[visible & ((rects[:, 0] >= rects[:, 1]) | (rects[:, 2] >= rects[:, 3])), 1] = 0
    rects[~visible] = 0
    gap = np.linalg.norm(np.maximum(np.maximum(lo - origin, origin - hi), 0.0), axis=1)
    return rects, gap


def _occluded(gap: float, window_t: np.ndarray) -> bool:
    """True when every ray of the window already hit something nearer than the primitive can be."""
    return bool(gap * (1.0 - 1e-9) > window_t.max())


def render(scene: Scene, width: int, height: int, position: np.ndarray, yaw: float, pitch: float,
           K: np.ndarray | None = None) -> RenderedFrame:
    """Ray-cast ``scene`` from a camera at ``position`` (world, metres) with the given yaw/pitch."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    K = intrinsics(width, height) if K is None else K
    rotation = _camera_rotation(yaw, pitch)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    rays_cam = rays_cam.reshape(-1, 3)
    dirs = rays_cam @ rotation.T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    n_rays = dirs.shape[0]
    origin = np.asarray(position, dtype=np.float64)

    # Pass 1: nearest hit per ray. Only distances and which surface won are tracked here;
    # normals and textures are computed once, for the winning surface (pass 2).
    best_t = np.full(n_rays, np.inf)
    surface = np.full(n_rays, -1, dtype=np.int32)
    # 2-D views of the same memory: a primitive is only tested against the pixels of its
    # screen rectangle, which keeps scenes with hundreds of small, distant primitives cheap.
    best_t_image, surface_image = best_t.reshape(height, width), surface.reshape(height, width)
    dirs_image = dirs.reshape(height, width, 3)
    n_planes, n_boxes = len(scene.planes), len(scene.box_lo)
    ground_z = _ground_clip_height(scene, origin)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for index, plane in enumerate(scene.planes):
            denom = dirs @ plane.normal
            t = (plane.offset - origin @ plane.normal) / denom
            hit = (t > _EPS) & (t < best_t)
            if plane.max_height is not None:
                hit &= origin[2] + dirs[:, 2] * t <= plane.max_height
            best_t[hit], surface[hit] = t[hit], index
        # Slab test with one contiguous array per axis: numpy reductions over a length-3 axis
        # are several times slower than elementwise minimum/maximum of three arrays.
        inv_dirs = [np.ascontiguousarray(1.0 / dirs[:, axis]).reshape(height, width) for axis in range(3)]
        rects, gaps = _screen_rects(scene.box_lo, scene.box_hi, ground_z, origin, rotation, K, width, height)
        for index in np.flatnonzero(rects[:, 0] < rects[:, 1]):
            lo, hi = scene.box_lo[index], scene.box_hi[index]
            window = np.s_[rects[index, 0]:rects[index, 1], rects[index, 2]:rects[index, 3]]
            window_t = best_t_image[window]
            if _occluded(gaps[index], window_t):
                continue
            t_near, t_far = np.full(window_t.shape, -np.inf), window_t.copy()
            for axis in range(3):
                t1 = (lo[axis] - origin[axis]) * inv_dirs[axis][window]
                t2 = (hi[axis] - origin[axis]) * inv_dirs[axis][window]
                np.maximum(t_near, np.minimum(t1, t2), out=t_near)
                np.minimum(t_far, np.maximum(t1, t2), out=t_far)
            hit = (t_near <= t_far) & (t_near > _EPS)
            window_t[hit], surface_image[window][hit] = t_near[hit], n_planes + index
        radius = scene.sphere_radius[:, None]
        rects, gaps = _screen_rects(scene.sphere_center - radius, scene.sphere_center + radius, ground_z,
                                    origin, rotation, K, width, height, sphere_radius=scene.sphere_radius)
        for index in np.flatnonzero(rects[:, 0] < rects[:, 1]):
            center, radius = scene.sphere_center[index], scene.sphere_radius[index]
            window = np.s_[rects[index, 0]:rects[index, 1], rects[index, 2]:rects[index, 3]]
            window_t = best_t_image[window]
            if _occluded(gaps[index], window_t):
                continue
            to_center = origin - center
            # A contiguous copy keeps the product bit-identical to the whole-image one (BLAS).
            b = (np.ascontiguousarray(dirs_image[window]).reshape(-1, 3) @ to_center).reshape(window_t.shape)
            disc = b * b - (to_center @ to_center - radius * radius)
            t = -b - np.sqrt(np.maximum(disc, 0))
            hit = (disc > 0) & (t > _EPS) & (t < window_t)
            window_t[hit], surface_image[window][hit] = t[hit], n_planes + n_boxes + index

    # Pass 2: shading of the visible surfaces.
    color = np.empty((n_rays, 3), dtype=np.float32)
    sky = surface < 0
    elevation = np.clip(dirs[sky, 2], 0.0, 1.0)[:, None].astype(np.float32)
    color[sky] = scene.sky_horizon * (1 - elevation) + scene.sky_zenith * elevation
    hit_rays = np.flatnonzero(~sky)
    points = origin + dirs[hit_rays] * best_t[hit_rays, None]
    hit_surface = surface[hit_rays]
    normal = np.zeros_like(points)
    albedo = np.zeros((hit_rays.size, 3), dtype=np.float32)
    tile = np.full(hit_rays.size, 0.5)
    for index, plane in enumerate(scene.planes):
        mine = hit_surface == index
        if not mine.any():
            continue
        normal[mine] = -np.sign(dirs[hit_rays[mine]] @ plane.normal)[:, None] * plane.normal
        axes = np.flatnonzero(plane.normal == 0)
        on_plane = points[mine]
        parity = (np.floor(on_plane[:, axes[0]] / plane.tile_m)
                  + np.floor(on_plane[:, axes[1]] / plane.tile_m)) % 2
        albedo[mine] = np.where(parity[:, None] > 0, plane.color_a, plane.color_b)
        tile[mine] = plane.tile_m
    in_box = (hit_surface >= n_planes) & (hit_surface < n_planes + n_boxes)
    if in_box.any():
        box = hit_surface[in_box] - n_planes
        lo, hi = scene.box_lo[box], scene.box_hi[box]
        on_box = points[in_box]
        # The face hit is the one the point lies on: smallest distance to a slab boundary.
        face_gap = np.concatenate([np.abs(on_box - lo), np.abs(on_box - hi)], axis=1)
        face = face_gap.argmin(axis=1)
        box_normal = np.zeros_like(on_box)
        box_normal[np.arange(face.size), face % 3] = np.where(face < 3, -1.0, 1.0)
        normal[in_box] = box_normal
        albedo[in_box] = scene.box_color[box]
    in_sphere = hit_surface >= n_planes + n_boxes
    if in_sphere.any():
        ball = hit_surface[in_sphere] - n_planes - n_boxes
        normal[in_sphere] = (points[in_sphere] - scene.sphere_center[ball]) / scene.sphere_radius[ball, None]
        albedo[in_sphere] = scene.sphere_color[ball]
        tile[in_sphere] = 0.25
    detail = 0.75 + 0.25 * _hash_noise(points, 0.05)
    stripes = 0.9 + 0.1 * np.sin(points.sum(axis=1) * (2 * math.pi) / tile)
    light = 0.35 + 0.75 * np.clip(normal @ scene.sun_dir, 0.0, 1.0)
    color[hit_rays] = albedo * (detail * stripes * light).astype(np.float32)[:, None]

    forward = rotation[:, 2]
    depth = (best_t * (dirs @ forward)).astype(np.float32)  # range -> optical Z; inf stays inf
    rgb = (np.clip(color, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    return RenderedFrame(rgb=rgb, depth_m=depth.reshape(height, width), K=K)


def render_random_view(rng: np.random.Generator, width: int, height: int) -> RenderedFrame:
    """A new random scene seen from a random pose: one training sample."""
    scene = random_scene(rng)
    if scene.indoor:
        position = np.array([rng.uniform(-1.5, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(1.0, 2.0)])
        pitch = math.radians(rng.uniform(-25, 5))
    else:
        position = np.array([rng.uniform(-2, 2), rng.uniform(-1.5, 1.5), rng.uniform(0.5, 3.0)])
        pitch = math.radians(rng.uniform(-12, 6))
    yaw = math.radians(rng.uniform(-30, 30))
    return render(scene, width, height, position, yaw, pitch)


class SceneRenderer:
    """One random scene and a camera moving through it: a live stream for the demo and tests.

    ``render(t)`` is a pure function of (seed, size, t): the same arguments give the same frame.
    The camera drives forward at ``speed_mps`` along a gently swaying path and loops every
    ``loop_s`` seconds so the stream never runs out of scene.
    """

    def __init__(self, width: int = 640, height: int = 480, seed: int = 0, indoor: bool = False,
                 speed_mps: float = 1.5, loop_s: float = 60.0):
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.scene = random_scene(np.random.default_rng(seed), indoor=indoor)
        self.K = intrinsics(self.width, self.height)
        self.speed_mps, self.loop_s = float(speed_mps), float(loop_s)

    def pose(self, t: float) -> tuple[np.ndarray, float, float]:
        t_loop = t % self.loop_s
        if self.scene.indoor:
            position = np.array([-1.0 + 0.1 * self.speed_mps * t_loop % 6.0, 0.8 * math.sin(0.3 * t), 1.5])
        else:
            position = np.array([self.speed_mps * t_loop, 1.2 * math.sin(0.2 * t), 1.6])
        yaw = math.radians(12.0 * math.sin(0.25 * t))
        pitch = math.radians(-4.0 + 2.0 * math.sin(0.4 * t))
        return position, yaw, pitch

    def render(self, t: float) -> RenderedFrame:
        position, yaw, pitch = self.pose(t)
        return render(self.scene, self.width, self.height, position, yaw, pitch, K=self.K)
