"""Procedural scenes: RGB + exact metric depth + pinhole intrinsics, rendered by numpy ray casting.

The built-in data of the project: the demo camera stream, the tests, and an infinite, seeded
training source. Scenes are made of textured planes (ground, walls, ceiling), axis-aligned boxes,
spheres and a sky; shading is Lambertian under a sun plus ambient light. Every pixel's depth is
exact, so haze synthesised with the ASM (``dehaze_ros.haze``) gives pairs with exact ground truth
for dehazing *and* depth.

Two families of scenes:
* ``random_scene`` / ``render_random_view``: rooms and a short street of boxes, a few metres to
  a few tens of metres (the original training data; unchanged, seed for seed);
* ``random_outdoor_scene`` / ``render_random_outdoor_view`` / ``outdoor_validation_views``:
  vehicle scale. A road (lanes, markings, kerbs, sidewalks) or a field to the horizon; buildings
  with windows, street lights, poles, signs, trees, hedges, parked and moving vehicles; hills and
  a ridge of mountains at 300 m to 3 km, which ends the ground, so every finite depth is below
  about 3 km; a sky with clouds at +inf. Cameras of robots, cars and trucks (0.3-2.5 m up).
  Textures are box-filtered by the pixel footprint, so distant road markings and windows average
  out instead of aliasing into noise.

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
    rgb: np.ndarray  # H x W x 3 uint8, RGB
    depth_m: np.ndarray  # H x W float32, metres along the optical axis, +inf = sky
    K: np.ndarray  # 3 x 3 float64 intrinsics
    # The camera's mounting, as a robot would configure it (EngineConfig.camera_height_m and
    # camera_pitch_deg): metres above the surface it stands on, and the optical axis's tilt below
    # the horizontal in degrees (positive looks down, REP-103's pitch of a camera body; the
    # render() argument is the opposite, positive looks up). The camera never rolls here.
    camera_height_m: float = math.nan
    camera_pitch_deg: float = math.nan


@dataclass(frozen=True)
class _Plane:
    normal: np.ndarray  # unit normal, axis-aligned
    offset: float  # points p with normal . p = offset
    color_a: np.ndarray
    color_b: np.ndarray
    tile_m: float  # checker tile size
    max_height: float | None = None  # walls end here (metres, world z); None = unbounded
    material: str = "checker"  # "checker", or "ground": road and verge textured from Scene.ground


# Materials of boxes and spheres. _FLAT is the original look (flat colour, fine noise and stripes);
# the others bring their own texture and are what the vehicle-scale outdoor scenes are made of.
_FLAT, _PLAIN, _FACADE, _FOLIAGE, _GLASS, _PAVEMENT, _TERRAIN = range(7)


@dataclass(frozen=True)
class _Ground:
    """Texture of a "ground" plane: a road along world x, centred on y = 0, and its verge."""

    road_half_width: float  # 0: no road
    road_color: np.ndarray
    dirt_road: bool  # ragged edges, no markings
    lines: tuple[tuple[float, float, bool, bool], ...]  # (y, width, dashed, yellow) of each marking
    dash_m: float  # dash length; dashes repeat every dash_period_m
    dash_period_m: float
    marking_color: np.ndarray
    verge_a: np.ndarray  # grass, dirt: the verge and fields mix the two in patches
    verge_b: np.ndarray
    patch_m: float


@dataclass(frozen=True)
class _Ridge:
    """Hills or mountains all around: a vertical cylinder of ``radius_m`` about the world z axis,
    solid up to a silhouette made of ridged sines of the azimuth.

    It also bounds every finite depth: a ray just below the horizon meets it at kilometres instead
    of meeting the ground plane at thousands of kilometres.
    """

    radius_m: float
    base_m: float
    amplitude_m: np.ndarray  # K
    frequency: np.ndarray  # K, whole cycles per turn so the silhouette closes
    phase: np.ndarray  # K
    color_a: np.ndarray
    color_b: np.ndarray
    snow_m: float  # snow above this height (inf: none)

    def height(self, azimuth: np.ndarray) -> np.ndarray:
        ridged = 1.0 - np.abs(np.sin(0.5 * self.frequency * azimuth[..., None] + self.phase))
        return self.base_m + ridged @ self.amplitude_m


@dataclass
class Scene:
    planes: list[_Plane]
    box_lo: np.ndarray  # N x 3
    box_hi: np.ndarray  # N x 3
    box_color: np.ndarray  # N x 3
    sphere_center: np.ndarray  # M x 3
    sphere_radius: np.ndarray  # M
    sphere_color: np.ndarray  # M x 3
    sky_horizon: np.ndarray
    sky_zenith: np.ndarray
    sun_dir: np.ndarray
    indoor: bool
    # Used by the vehicle-scale outdoor scenes (random_outdoor_scene); the defaults give the
    # original look, so scenes from random_scene render exactly as they always have.
    box_material: np.ndarray | None = None  # N ints (_FLAT, _PLAIN, ...); None: all _FLAT
    box_accent: np.ndarray | None = None  # N x 3 second colour: windows, vehicle glass, leaves
    # N x 5 facade: window spacing, floor height (m), window width and height fractions, shop
    # floor (m); glass: column 4 is where the glass starts (share of height)
    box_pattern: np.ndarray | None = None
    sphere_material: np.ndarray | None = None  # M ints
    sphere_accent: np.ndarray | None = None  # M x 3
    ground: _Ground | None = None
    ridge: _Ridge | None = None
    clouds: tuple[float, float, float] | None = (
        None  # cover in [0, 1], x and y shift of the pattern (m)
    )
    eye: np.ndarray | None = None  # (y, z) where a vehicle's or robot's camera stands at x = 0
    eye_surface_z: float = 0.0  # height of what it stands on there (a raised sidewalk)


def intrinsics(width: int, height: int, hfov_deg: float = 70.0) -> np.ndarray:
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def _random_color(rng: np.random.Generator, low: float = 0.15, high: float = 0.95) -> np.ndarray:
    return rng.uniform(low, high, size=3).astype(np.float32)


def random_scene(rng: np.random.Generator, indoor: bool | None = None) -> Scene:
    """A random arrangement: an outdoor street-like scene with sky, or a closed room."""
    if indoor is None:
        indoor = bool(rng.random() < 0.5)
    ground = _Plane(
        np.array([0.0, 0.0, 1.0]),
        0.0,
        _random_color(rng, 0.2, 0.7),
        _random_color(rng, 0.2, 0.7),
        float(rng.uniform(0.5, 3.0)),
    )
    planes = [ground]
    if indoor:
        length, half_width, height = rng.uniform(6, 14), rng.uniform(2.5, 6), rng.uniform(2.4, 3.5)
        wall_specs = [
            ((1, 0, 0), length),
            ((-1, 0, 0), 2.0),
            ((0, 1, 0), half_width),
            ((0, -1, 0), half_width),
            ((0, 0, 1), height),
        ]
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
        planes.append(
            _Plane(
                np.array(normal, dtype=np.float64),
                float(offset),
                _random_color(rng),
                _random_color(rng),
                float(rng.uniform(0.3, 2.5)),
                wall_height,
            )
        )
    centers_xy = np.stack(
        [rng.uniform(*extent_x, n_boxes), rng.uniform(*extent_y, n_boxes)], axis=1
    )
    sizes = rng.uniform(*size_range, size=(n_boxes, 3))
    if not indoor:
        sizes[:, 2] *= rng.uniform(1.0, 4.0, n_boxes)  # buildings and poles, taller than wide
    box_lo = np.concatenate([centers_xy - sizes[:, :2] / 2, np.zeros((n_boxes, 1))], axis=1)
    box_hi = np.concatenate([centers_xy + sizes[:, :2] / 2, sizes[:, 2:3]], axis=1)
    radius = rng.uniform(size_range[0] / 2, size_range[1] / 2, n_spheres)
    sphere_center = np.stack(
        [
            rng.uniform(*extent_x, n_spheres),
            rng.uniform(*extent_y, n_spheres),
            radius * rng.uniform(1.0, 2.0, n_spheres),
        ],
        axis=1,
    )
    sun = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.4, 1.5)])
    return Scene(
        planes=planes,
        box_lo=box_lo,
        box_hi=box_hi,
        box_color=rng.uniform(0.1, 0.95, size=(n_boxes, 3)).astype(np.float32),
        sphere_center=sphere_center,
        sphere_radius=radius,
        sphere_color=rng.uniform(0.1, 0.95, size=(n_spheres, 3)).astype(np.float32),
        sky_horizon=np.array([0.85, 0.88, 0.92], dtype=np.float32) * rng.uniform(0.8, 1.0),
        sky_zenith=np.array([0.35, 0.55, 0.85], dtype=np.float32) * rng.uniform(0.7, 1.1),
        sun_dir=sun / np.linalg.norm(sun),
        indoor=indoor,
    )


def _camera_rotation(yaw: float, pitch: float) -> np.ndarray:
    """Columns: the optical frame's x (right), y (down), z (forward) axes in world coordinates."""
    forward = np.array(
        [math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)]
    )
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


def _hash_noise(points: np.ndarray, cell_m: float) -> np.ndarray:
    """Cheap deterministic white noise per texture cell: gives every surface fine detail."""
    cells = np.floor(points / cell_m)
    value = np.sin(cells @ np.array([12.9898, 78.233, 37.719])) * 43758.5453
    return (value - np.floor(value)).astype(np.float32)


def _lattice_noise(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray | None = None) -> np.ndarray:
    """White noise in [0, 1) per integer lattice point: an integer hash, ten times cheaper than the
    sine hash of _hash_noise (which stays, so the original scenes keep their exact look)."""
    h = (ix.astype(np.int64).astype(np.uint32) * np.uint32(0x165667B1)) ^ (
        iy.astype(np.int64).astype(np.uint32) * np.uint32(0x27D4EB2F)
    )
    if iz is not None:
        h ^= iz.astype(np.int64).astype(np.uint32) * np.uint32(0x9E3779B1)
    h = (h ^ (h >> np.uint32(15))) * np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    return h * (1.0 / 4294967296.0)


def _cell_noise(points: np.ndarray, cell_m: float) -> np.ndarray:
    """White noise in [0, 1) per cubic cell of ``cell_m`` metres."""
    cells = np.floor(points / cell_m)
    return _lattice_noise(cells[:, 0], cells[:, 1], cells[:, 2])


def _value_noise(x: np.ndarray, y: np.ndarray, cell_m: float) -> np.ndarray:
    """Smooth noise in [0, 1]: lattice noise every ``cell_m`` metres, smoothstep-interpolated."""
    gx, gy = x / cell_m, y / cell_m
    ix, iy = np.floor(gx), np.floor(gy)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = _lattice_noise(ix, iy), _lattice_noise(ix + 1, iy)
    c, d = _lattice_noise(ix, iy + 1), _lattice_noise(ix + 1, iy + 1)
    return a + (b - a) * fx + (c - a) * fy + (a - b - c + d) * fx * fy


def _fbm(x: np.ndarray, y: np.ndarray, cell_m: float, octaves: int) -> np.ndarray:
    """Value noise summed over octaves (halving cell, halving weight): patchy, natural-looking."""
    total, weight = np.zeros_like(x), 0.0
    for octave in range(octaves):
        scale = 0.5**octave
        # Each octave is shifted so the lattices do not line up.
        total += scale * _value_noise(
            x + 37.1 * octave * cell_m, y - 19.7 * octave * cell_m, cell_m * scale
        )
        weight += scale
    return total / weight


def _fade(footprint: np.ndarray, feature_m: float) -> np.ndarray:
    """Contrast left to a detail of ``feature_m`` seen with the pixel footprint: 1 when it spans
    two pixels or more, 0 when it is smaller than one (it would only alias)."""
    return np.clip(2.0 - 2.0 * footprint / feature_m, 0.0, 1.0)


def _band_coverage(coord: np.ndarray, low: float, high: float, footprint: np.ndarray) -> np.ndarray:
    """Share of the pixel footprint [coord +- footprint / 2] inside [low, high]: a box filter."""
    half = np.maximum(footprint, 1e-6) / 2
    return np.clip(np.minimum(coord + half, high) - np.maximum(coord - half, low), 0.0, None) / (
        2 * half
    )


def _periodic_coverage(coord: np.ndarray, period, start, stop, footprint: np.ndarray) -> np.ndarray:
    """Share of the pixel footprint inside the bands [start, stop) + k * period (rows, dashes)."""
    width = stop - start

    def integral(x):  # measure of the bands below x
        cycles = np.floor(x / period)
        return cycles * width + np.clip(x - cycles * period - start, 0.0, width)

    half = np.maximum(footprint, 1e-6) / 2
    return np.clip((integral(coord + half) - integral(coord - half)) / (2 * half), 0.0, 1.0)


def _ground_albedo(
    ground: _Ground, points: np.ndarray, footprint: np.ndarray, dir_z: np.ndarray
) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    # Across the view (y) a pixel spans the head-on footprint; along it (x) the ground is
    # foreshortened by the grazing angle, so the footprint there grows towards the horizon.
    across, along = footprint, footprint / np.maximum(np.abs(dir_z), 1e-3)
    if ground.road_half_width > 0:
        edge_y = np.abs(y)
        if ground.dirt_road:
            edge_y = edge_y + 0.6 * (_value_noise(x, y, 2.0) - 0.5)
        on_road = _band_coverage(edge_y, -1.0, ground.road_half_width, across)
    else:
        on_road = np.zeros_like(x)
    albedo = np.zeros((x.size, 3), dtype=np.float32)
    # Each texture only where it shows: the road and the verge share just the pixels of the edge.
    verge = np.flatnonzero(on_road < 1)
    vx, vy, v_along = x[verge], y[verge], along[verge]
    patches = _fbm(vx, vy, ground.patch_m, 2)
    mix = 0.5 + (np.clip((patches - 0.35) / 0.3, 0, 1) - 0.5) * _fade(v_along, ground.patch_m)
    # Tufts (smooth, 0.3 m) and blades (single pixels up close): blocky cells of one size would
    # read as tiles.
    grain = (
        1
        + 0.45 * (_value_noise(vx, vy, 0.3) - 0.5) * _fade(v_along, 0.3)
        + 0.3
        * (_lattice_noise(np.floor(vx / 0.04), np.floor(vy / 0.04)) - 0.5)
        * _fade(v_along, 0.04)
    )
    albedo[verge] = (ground.verge_a * (1 - mix[:, None]) + ground.verge_b * mix[:, None]) * grain[
        :, None
    ]
    road = np.flatnonzero(on_road > 0)
    if road.size:
        rx, ry, r_along, r_across = x[road], y[road], along[road], across[road]
        wear = 0.88 + 0.24 * _value_noise(rx, ry, 4.0)
        grit = 1 + 0.3 * (_lattice_noise(np.floor(rx / 0.05), np.floor(ry / 0.05)) - 0.5) * _fade(
            r_along, 0.05
        )
        surface = ground.road_color * (wear * grit)[:, None]
        for line_y, line_width, dashed, yellow in ground.lines:
            paint = _band_coverage(ry, line_y - line_width / 2, line_y + line_width / 2, r_across)
            if dashed:
                paint = paint * _periodic_coverage(
                    rx, ground.dash_period_m, 0.0, ground.dash_m, r_along
                )
            marking = (
                np.array([0.85, 0.68, 0.15], dtype=np.float32) if yellow else ground.marking_color
            )
            surface = surface * (1 - paint[:, None]) + marking * paint[:, None]
        cover = on_road[road, None]
        albedo[road] = albedo[road] * (1 - cover) + surface * cover
    return albedo


def _grain(points: np.ndarray, footprint: np.ndarray, cell_m: float = 0.05) -> np.ndarray:
    """Fine surface noise in [-0.5, 0.5], faded out where a pixel spans more than a cell."""
    return (_cell_noise(points, cell_m) - 0.5) * _fade(footprint, cell_m)


def _shade_textured(
    scene: Scene,
    boxes: bool,
    material: np.ndarray,
    ids: np.ndarray,
    rows: np.ndarray,
    points: np.ndarray,
    footprint: np.ndarray,
    hit_dirs: np.ndarray,
    face_axis: np.ndarray,
    albedo: np.ndarray,
    normal: np.ndarray,
) -> None:
    """Albedo (for foliage also bent normals) of the hits ``rows`` on textured objects ``ids``.

    Each material gathers only what its texture needs: at 640 x 480 a facade filling the view is
    300 000 hits, and every extra array pass over them costs milliseconds.
    """
    color = scene.box_color if boxes else scene.sphere_color
    accent = scene.box_accent if boxes else scene.sphere_accent
    for kind in np.unique(material):
        pick = material == kind
        r, i = rows[pick], ids[pick]
        on, fp = points[r], footprint[r]
        if kind == _FLAT:
            continue
        if kind == _PLAIN:
            albedo[r] = color[i] * (1 + 0.15 * _grain(on, fp))[:, None]
        elif (
            kind == _GLASS
        ):  # vehicle windows all round above a sill, paint below it and on the roof
            lo_z, hi_z = scene.box_lo[i, 2], scene.box_hi[i, 2]
            up = np.clip((on[:, 2] - lo_z) / np.maximum(hi_z - lo_z, 1e-3), 0, 1)
            paint = (face_axis[r] == 2) | (up < scene.box_pattern[i, 4])
            # Glass mirrors the bright sky above and the dark road below: lighter towards the top.
            albedo[r] = np.where(paint[:, None], color[i], accent[i] * (0.8 + 0.6 * up)[:, None])
        elif kind == _FACADE:
            incidence = np.abs(np.sum(hit_dirs[r] * normal[r], axis=1))
            albedo[r] = _facade_albedo(scene, i, on, face_axis[r], fp, incidence)
        elif kind == _FOLIAGE:
            # Clumps of leaves (coarse) and single leaves (fine); far away both average out.
            tint = 0.5 + _grain(on + 0.37, fp, 0.6)
            leaf = 0.6 + 0.7 * (0.5 + _grain(on, fp, 0.12))
            albedo[r] = (color[i] * (1 - tint[:, None]) + accent[i] * tint[:, None]) * leaf[:, None]
            normal[r] = _leafy_normals(normal[r], on)
        elif kind == _PAVEMENT:  # paving slabs on top, a plain kerb face
            slab = 0.45
            joints = 1 - (1 - _periodic_coverage(on[:, 0], slab, 0.0, 0.03, fp)) * (
                1 - _periodic_coverage(on[:, 1], slab, 0.0, 0.03, fp)
            )
            shade = np.where(face_axis[r] == 2, 1 - 0.35 * joints, 0.8) * (1 + 0.2 * _grain(on, fp))
            albedo[r] = color[i] * shade[:, None]
        elif kind == _TERRAIN:
            mix = _fbm(on[:, 0], on[:, 1], 40.0, 3)
            mix = 0.5 + (np.clip((mix - 0.3) / 0.4, 0, 1) - 0.5) * _fade(fp, 20.0)
            rough = 1 + 0.5 * _grain(on, fp, 3.0)
            albedo[r] = (color[i] * (1 - mix[:, None]) + accent[i] * mix[:, None]) * rough[:, None]
        else:
            raise ValueError(f"unknown material {kind}")


def _facade_albedo(
    scene: Scene,
    box: np.ndarray,
    points: np.ndarray,
    face_axis: np.ndarray,
    footprint: np.ndarray,
    incidence: np.ndarray,
) -> np.ndarray:
    """Walls with rows of windows (and a shop floor of large windows), roofs on top."""
    spacing, floor_m, window_w, window_h, shop_m = scene.box_pattern[box].T
    lo, hi = scene.box_lo[box], scene.box_hi[box]
    # Along the wall: x on walls facing +-y, y on walls facing +-x. A whole number of window
    # bays per wall, so windows sit symmetrically between the corners.
    across_x = face_axis == 0
    along = np.where(across_x, points[:, 1] - lo[:, 1], points[:, 0] - lo[:, 0])
    wall_length = np.where(across_x, hi[:, 1] - lo[:, 1], hi[:, 0] - lo[:, 0])
    bay = wall_length / np.maximum(np.round(wall_length / spacing), 1)
    up = points[:, 2] - lo[:, 2]
    slanted = footprint / np.maximum(incidence, 0.15)  # walls seen at a slant are foreshortened
    columns = _periodic_coverage(
        along, bay, bay * (1 - window_w) / 2, bay * (1 + window_w) / 2, slanted
    )
    storeys = _periodic_coverage(
        up - shop_m, floor_m, floor_m * 0.3, floor_m * (0.3 + window_h), footprint
    )
    glass_cover = (
        columns * storeys * _band_coverage(up, shop_m, hi[:, 2] - lo[:, 2] - 0.8, footprint)
    )
    shops = np.flatnonzero(shop_m > 0)
    if shops.size:
        glass_cover[shops] += _periodic_coverage(
            along[shops], bay[shops], bay[shops] * 0.08, bay[shops] * 0.92, slanted[shops]
        ) * _band_coverage(up[shops], 0.4, shop_m[shops] - 0.6, footprint[shops])
    # Each pane reflects or shows a different room: a brightness per window.
    pane = _lattice_noise(
        np.floor(along / bay) + 1000.0 * face_axis, np.floor((up - shop_m) / floor_m), box
    )
    pane = 0.55 + 0.9 * (0.5 + (pane - 0.5) * _fade(footprint, 2.0))
    glass_cover = np.clip(glass_cover, 0, 1)[:, None]
    wall = scene.box_color[box] * (1 + 0.12 * _grain(points, footprint))[:, None]
    albedo = wall * (1 - glass_cover) + scene.box_accent[box] * (pane[:, None] * glass_cover)
    roof = face_axis == 2
    albedo[roof] = scene.box_color[box[roof]] * 0.45 + 0.12
    return albedo.astype(np.float32)


def _leafy_normals(normal: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Foliage normals tilted at random per leaf-sized cell: lit and shaded leaves side by side."""
    tilt = (
        np.stack([_cell_noise(points + offset, 0.2) for offset in (0.0, 0.31, 0.73)], axis=1) - 0.5
    )
    bent = normal + 1.2 * tilt
    return bent / np.linalg.norm(bent, axis=1, keepdims=True)


def _hit_ridge(
    ridge: _Ridge,
    origin: np.ndarray,
    dirs: np.ndarray,
    best_t: np.ndarray,
    surface: np.ndarray,
    surface_id: int,
) -> None:
    offset = math.hypot(origin[0], origin[1])
    reach = ridge.radius_m - offset  # nothing on the cylinder is nearer than this
    top = ridge.base_m + float(ridge.amplitude_m.sum()) - origin[2]
    # Only rays that pass below the highest peak and hit nothing nearer can reach the ridge: the
    # band around the horizon.
    candidates = np.flatnonzero(
        (dirs[:, 2] <= top / math.hypot(top, reach) + 1e-9) & (best_t > reach)
    )
    d = dirs[candidates]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = origin[0] * d[:, 0] + origin[1] * d[:, 1]
    t = (-b + np.sqrt(b * b - a * (offset * offset - ridge.radius_m**2))) / a  # the way out
    hit_x, hit_y = origin[0] + t * d[:, 0], origin[1] + t * d[:, 1]
    hit = (t < best_t[candidates]) & (
        origin[2] + t * d[:, 2] <= ridge.height(np.arctan2(hit_y, hit_x))
    )
    best_t[candidates[hit]], surface[candidates[hit]] = t[hit], surface_id


def _ridge_surface(
    ridge: _Ridge, points: np.ndarray, footprint: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    azimuth = np.arctan2(points[:, 1], points[:, 0])
    radial = np.stack([np.cos(azimuth), np.sin(azimuth), np.zeros_like(azimuth)], axis=1)
    tangent = np.stack([-np.sin(azimuth), np.cos(azimuth), np.zeros_like(azimuth)], axis=1)
    step = 1e-3
    slope = (ridge.height(azimuth + step) - ridge.height(azimuth - step)) / (
        2 * step * ridge.radius_m
    )
    # The cylinder is flat; a normal that leans with the silhouette's slope shades the flanks of
    # each peak differently, as the sun lights real mountainsides.
    normal = -radial + 0.6 * np.array([0.0, 0.0, 1.0]) - np.clip(slope, -3, 3)[:, None] * tangent
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    arc, z = azimuth * ridge.radius_m, points[:, 2]
    mix = 0.5 + (_fbm(arc, 2.5 * z, 60.0, 3) - 0.5) * _fade(footprint, 30.0)
    albedo = ridge.color_a * (1 - mix[:, None]) + ridge.color_b * mix[:, None]
    albedo = albedo * (0.75 + 0.25 * np.clip(z / ridge.height(azimuth), 0, 1))[:, None]
    snow = z > ridge.snow_m + 60.0 * (mix - 0.5)
    albedo[snow] = np.array([0.88, 0.9, 0.93])
    return normal, albedo.astype(np.float32)


def _clouds_and_sun(
    scene: Scene, origin: np.ndarray, dirs: np.ndarray, sky: np.ndarray
) -> np.ndarray:
    """Clouds on a layer 1.5 km up and a glow around the sun, painted on the sky (still at +inf)."""
    cover, shift_x, shift_y = scene.clouds
    up = dirs[:, 2]
    reach = 1500.0 / np.maximum(up, 0.03)
    x, y = origin[0] + shift_x + dirs[:, 0] * reach, origin[1] + shift_y + dirs[:, 1] * reach
    density = _fbm(x, y, 900.0, 3)
    cloud = np.clip((density - (1.0 - cover)) / 0.2, 0, 1) * np.clip(up * 8, 0, 1)
    puff = (0.78 + 0.22 * _value_noise(x, y, 250.0))[:, None] * np.array([0.96, 0.96, 0.98])
    glow = 0.25 * np.clip(dirs @ scene.sun_dir, 0, 1) ** 24
    return (sky * (1 - cloud[:, None]) + puff * cloud[:, None] + glow[:, None]).astype(np.float32)


# Corner c of a box takes hi on axis a where bit a of c is set; edges join corners 1 bit apart.
_CORNER_BITS = ((np.arange(8)[:, None] >> np.arange(3)) & 1).astype(bool)
_BOX_EDGES = np.array([(c, c | (1 << a)) for c in range(8) for a in range(3) if not c & (1 << a)])
_NEAR_M = 1e-9  # any hit in front of the camera lies beyond this optical-axis distance


def _ground_clip_height(scene: Scene, origin: np.ndarray) -> float:
    """Height below which an unbounded ground plane under the camera hides everything."""
    ground = scene.planes[0] if scene.planes else None
    if (
        ground is not None
        and ground.max_height is None
        and np.array_equal(ground.normal, (0.0, 0.0, 1.0))
        and origin[2] > ground.offset
    ):
        return float(ground.offset)
    return -np.inf


def _screen_rects(
    lo: np.ndarray,
    hi: np.ndarray,
    ground_z: float,
    origin: np.ndarray,
    rotation: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    sphere_radius: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
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
        half = np.sqrt(np.maximum(sphere_radius**2 - (ground_z - center[:, 2]) ** 2, 0.0))
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
    visible = (
        valid.any(axis=1)
        & (lo[:, 2] <= hi[:, 2])
        & (u1 > 0)
        & (u0 < width)
        & (v1 > 0)
        & (v0 < height)
    )
    rects[visible] = np.stack(
        [
            np.clip(v0, 0, height),
            np.clip(v1, 0, height),
            np.clip(u0, 0, width),
            np.clip(u1, 0, width),
        ],
        axis=1,
    )[visible].astype(np.int64)
    rects[visible & ((rects[:, 0] >= rects[:, 1]) | (rects[:, 2] >= rects[:, 3])), 1] = 0
    rects[~visible] = 0
    gap = np.linalg.norm(np.maximum(np.maximum(lo - origin, origin - hi), 0.0), axis=1)
    return rects, gap


def _occluded(gap: float, window_t: np.ndarray) -> bool:
    """True when every ray of the window already hit something nearer than the primitive can be."""
    return bool(gap * (1.0 - 1e-9) > window_t.max())


def render(
    scene: Scene,
    width: int,
    height: int,
    position: np.ndarray,
    yaw: float,
    pitch: float,
    K: np.ndarray | None = None,
) -> RenderedFrame:
    """Ray-cast ``scene`` from a camera at ``position`` (world, metres) with the given yaw/pitch."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    K = intrinsics(width, height) if K is None else K
    rotation = _camera_rotation(yaw, pitch)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays_cam = np.stack(
        [(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1
    )
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
        ridge_id = n_planes + n_boxes + len(scene.sphere_radius)
        if scene.ridge is not None:
            _hit_ridge(scene.ridge, origin, dirs, best_t, surface, ridge_id)
        # Slab test with one contiguous array per axis: numpy reductions over a length-3 axis
        # are several times slower than elementwise minimum/maximum of three arrays.
        inv_dirs = [
            np.ascontiguousarray(1.0 / dirs[:, axis]).reshape(height, width) for axis in range(3)
        ]
        rects, gaps = _screen_rects(
            scene.box_lo, scene.box_hi, ground_z, origin, rotation, K, width, height
        )
        for index in np.flatnonzero(rects[:, 0] < rects[:, 1]):
            lo, hi = scene.box_lo[index], scene.box_hi[index]
            window = np.s_[rects[index, 0] : rects[index, 1], rects[index, 2] : rects[index, 3]]
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
        rects, gaps = _screen_rects(
            scene.sphere_center - radius,
            scene.sphere_center + radius,
            ground_z,
            origin,
            rotation,
            K,
            width,
            height,
            sphere_radius=scene.sphere_radius,
        )
        for index in np.flatnonzero(rects[:, 0] < rects[:, 1]):
            center, radius = scene.sphere_center[index], scene.sphere_radius[index]
            window = np.s_[rects[index, 0] : rects[index, 1], rects[index, 2] : rects[index, 3]]
            window_t = best_t_image[window]
            if _occluded(gaps[index], window_t):
                continue
            to_center = origin - center
            # A contiguous copy keeps the product bit-identical to the whole-image one (BLAS).
            b = (np.ascontiguousarray(dirs_image[window]).reshape(-1, 3) @ to_center).reshape(
                window_t.shape
            )
            disc = b * b - (to_center @ to_center - radius * radius)
            t = -b - np.sqrt(np.maximum(disc, 0))
            hit = (disc > 0) & (t > _EPS) & (t < window_t)
            window_t[hit], surface_image[window][hit] = t[hit], n_planes + n_boxes + index

    # Pass 2: shading of the visible surfaces.
    color = np.empty((n_rays, 3), dtype=np.float32)
    sky = surface < 0
    elevation = np.clip(dirs[sky, 2], 0.0, 1.0)[:, None].astype(np.float32)
    color[sky] = scene.sky_horizon * (1 - elevation) + scene.sky_zenith * elevation
    if scene.clouds is not None:
        color[sky] = _clouds_and_sun(scene, origin, dirs[sky], color[sky])
    hit_rays = np.flatnonzero(~sky)
    points = origin + dirs[hit_rays] * best_t[hit_rays, None]
    hit_surface = surface[hit_rays]
    normal = np.zeros_like(points)
    albedo = np.zeros((hit_rays.size, 3), dtype=np.float32)
    tile = np.full(hit_rays.size, 0.5)
    # Hits whose material brings its own texture; the rest get the original noise and stripes.
    own_texture = np.zeros(hit_rays.size, dtype=bool)
    # Metres one pixel spans at the hit, seen head-on: textures finer than this are averaged
    # (box-filtered) instead of aliasing into noise far away.
    footprint = best_t[hit_rays] / K[0, 0]
    hit_dirs = dirs[hit_rays]
    face_axis = np.full(
        hit_rays.size, -1, dtype=np.int8
    )  # axis of a box face's normal; -1 elsewhere
    for index, plane in enumerate(scene.planes):
        mine = hit_surface == index
        if not mine.any():
            continue
        normal[mine] = -np.sign(dirs[hit_rays[mine]] @ plane.normal)[:, None] * plane.normal
        if plane.material == "ground":
            albedo[mine] = _ground_albedo(
                scene.ground, points[mine], footprint[mine], hit_dirs[mine, 2]
            )
            own_texture[mine] = True
            continue
        axes = np.flatnonzero(plane.normal == 0)
        on_plane = points[mine]
        parity = (
            np.floor(on_plane[:, axes[0]] / plane.tile_m)
            + np.floor(on_plane[:, axes[1]] / plane.tile_m)
        ) % 2
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
        face_axis[in_box] = face % 3
        if scene.box_material is not None:
            _shade_textured(
                scene,
                True,
                scene.box_material[box],
                box,
                np.flatnonzero(in_box),
                points,
                footprint,
                hit_dirs,
                face_axis,
                albedo,
                normal,
            )
            own_texture[in_box] = scene.box_material[box] != _FLAT
    in_sphere = (hit_surface >= n_planes + n_boxes) & (hit_surface < ridge_id)
    if in_sphere.any():
        ball = hit_surface[in_sphere] - n_planes - n_boxes
        normal[in_sphere] = (points[in_sphere] - scene.sphere_center[ball]) / scene.sphere_radius[
            ball, None
        ]
        albedo[in_sphere] = scene.sphere_color[ball]
        tile[in_sphere] = 0.25
        if scene.sphere_material is not None:
            _shade_textured(
                scene,
                False,
                scene.sphere_material[ball],
                ball,
                np.flatnonzero(in_sphere),
                points,
                footprint,
                hit_dirs,
                face_axis,
                albedo,
                normal,
            )
            own_texture[in_sphere] = scene.sphere_material[ball] != _FLAT
    in_ridge = hit_surface == ridge_id
    if in_ridge.any():
        normal[in_ridge], albedo[in_ridge] = _ridge_surface(
            scene.ridge, points[in_ridge], footprint[in_ridge]
        )
        own_texture[in_ridge] = True
    light = 0.35 + 0.75 * np.clip(normal @ scene.sun_dir, 0.0, 1.0)
    if not own_texture.any():
        detail = 0.75 + 0.25 * _hash_noise(points, 0.05)
        stripes = 0.9 + 0.1 * np.sin(points.sum(axis=1) * (2 * math.pi) / tile)
        color[hit_rays] = albedo * (detail * stripes * light).astype(np.float32)[:, None]
    else:
        legacy = np.flatnonzero(~own_texture)
        shade = light.copy()
        detail = 0.75 + 0.25 * _hash_noise(points[legacy], 0.05)
        stripes = 0.9 + 0.1 * np.sin(points[legacy].sum(axis=1) * (2 * math.pi) / tile[legacy])
        shade[legacy] = detail * stripes * light[legacy]
        color[hit_rays] = albedo * shade.astype(np.float32)[:, None]

    forward = rotation[:, 2]
    depth = (best_t * (dirs @ forward)).astype(np.float32)  # range -> optical Z; inf stays inf
    rgb = (np.clip(color, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    # Height above what the camera stands on: the outdoor scenes say where that is (a robot on a
    # raised sidewalk); elsewhere the ground plane at z = 0 (rooms, the original streets).
    surface_z = scene.eye_surface_z if scene.eye is not None else 0.0
    return RenderedFrame(
        rgb=rgb,
        depth_m=depth.reshape(height, width),
        K=K,
        camera_height_m=float(origin[2] - surface_z),
        camera_pitch_deg=-math.degrees(pitch),
    )


def render_random_view(
    rng: np.random.Generator, width: int, height: int, hfov_deg: float | None = None
) -> RenderedFrame:
    """A new random scene seen from a random pose: one training sample. ``hfov_deg`` None: the
    default field of view of ``intrinsics``; the scene and pose do not depend on it."""
    scene = random_scene(rng)
    if scene.indoor:
        position = np.array([rng.uniform(-1.5, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(1.0, 2.0)])
        pitch = math.radians(rng.uniform(-25, 5))
    else:
        position = np.array([rng.uniform(-2, 2), rng.uniform(-1.5, 1.5), rng.uniform(0.5, 3.0)])
        pitch = math.radians(rng.uniform(-12, 6))
    yaw = math.radians(rng.uniform(-30, 30))
    K = None if hfov_deg is None else intrinsics(width, height, hfov_deg)
    return render(scene, width, height, position, yaw, pitch, K=K)


# ---------------------------------------------------------------------------------------------
# Vehicle-scale outdoor scenes: roads, buildings, poles, trees, vehicles, terrain to kilometres.
# ---------------------------------------------------------------------------------------------

_OUTDOOR_KINDS = ("urban", "suburban", "rural", "field")
# Keeps validation scenes out of every training stream: default_rng(int) never seeds from a
# three-word entropy list that starts with this.
_OUTDOOR_VALIDATION_STREAM = 0x0D7A_5E1F
_WALL_COLORS = np.array(
    [
        [0.62, 0.36, 0.28],
        [0.72, 0.70, 0.66],
        [0.82, 0.78, 0.68],
        [0.90, 0.89, 0.86],
        [0.45, 0.44, 0.43],
        [0.70, 0.56, 0.42],
        [0.55, 0.60, 0.64],
        [0.80, 0.70, 0.55],
    ]
)
_PAINT_COLORS = np.array(
    [
        [0.92, 0.92, 0.92],
        [0.08, 0.08, 0.09],
        [0.62, 0.63, 0.65],
        [0.35, 0.36, 0.38],
        [0.65, 0.08, 0.07],
        [0.12, 0.22, 0.50],
        [0.20, 0.35, 0.25],
        [0.85, 0.70, 0.20],
    ]
)


def _jitter(rng: np.random.Generator, base, spread: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(base) * rng.uniform(1 - spread, 1 + spread, 3), 0.0, 1.0).astype(
        np.float32
    )


class _OutdoorBuilder:
    """Collects an outdoor scene's boxes and spheres; keeps the camera's path clear of them."""

    def __init__(self, rng: np.random.Generator, corridor_lo: np.ndarray, corridor_hi: np.ndarray):
        self.rng = rng
        self.corridor = (corridor_lo, corridor_hi)
        self.boxes: list[tuple] = []
        self.spheres: list[tuple] = []

    def fits(self, lo, hi) -> bool:
        """False when the bounds (of a whole object: all its parts) would block the camera's way."""
        return not (
            np.all(np.asarray(lo) < self.corridor[1]) and np.all(np.asarray(hi) > self.corridor[0])
        )

    def box(
        self,
        lo,
        hi,
        color,
        material=_PLAIN,
        accent=(0.0, 0.0, 0.0),
        pattern=(1.0, 1.0, 0.0, 0.0, 0.0),
    ):
        self.boxes.append((lo, hi, color, material, accent, pattern))

    def sphere(self, center, radius, color, material=_FOLIAGE, accent=(0.0, 0.0, 0.0)):
        self.spheres.append((center, radius, color, material, accent))

    def building(self, x0, x1, y0, y1, height, kind):
        rng = self.rng
        if not self.fits((x0, y0, 0), (x1, y1, height)):
            return
        wall = _jitter(rng, _WALL_COLORS[rng.integers(len(_WALL_COLORS))])
        glass = _jitter(
            rng, rng.choice([[0.12, 0.16, 0.22], [0.25, 0.32, 0.40], [0.10, 0.10, 0.12]]), 0.2
        )
        if kind == "tower" and rng.random() < 0.4:  # glass curtain wall
            wall, glass = glass * 1.6, glass
        shop = rng.uniform(3.5, 4.5) if kind == "urban" and rng.random() < 0.5 else 0.0
        pattern = (
            rng.uniform(2.2, 4.0),
            rng.uniform(2.9, 3.6),
            rng.uniform(0.35, 0.7),
            rng.uniform(0.4, 0.65),
            shop,
        )
        self.box((x0, y0, 0.0), (x1, y1, height), wall, _FACADE, glass, pattern)

    def tree(self, x, y, scale=1.0, conifer=False):
        rng = self.rng
        trunk_h, trunk_w = rng.uniform(1.5, 3.5) * scale, rng.uniform(0.2, 0.45) * scale
        crown = rng.uniform(1.4, 3.2) * scale
        if conifer:
            radii = crown * np.array([0.75, 0.55, 0.35])
            centers = [(x, y, trunk_h + crown * (0.4 + 0.75 * k)) for k in range(3)]
        else:
            count = int(rng.integers(2, 5))
            radii = crown * rng.uniform(0.6, 1.0, count)
            centers = [
                (
                    x + rng.uniform(-0.6, 0.6) * crown,
                    y + rng.uniform(-0.6, 0.6) * crown,
                    trunk_h + crown * rng.uniform(0.5, 1.1),
                )
                for _ in range(count)
            ]
        centers = np.array(centers)
        lo = np.minimum((centers - radii[:, None]).min(axis=0), (x - trunk_w, y - trunk_w, 0))
        hi = (centers + radii[:, None]).max(axis=0)
        if not self.fits(lo, hi):
            return
        self.box(
            (x - trunk_w / 2, y - trunk_w / 2, 0.0),
            (x + trunk_w / 2, y + trunk_w / 2, trunk_h + crown * 0.5),
            _jitter(rng, (0.30, 0.22, 0.15), 0.2),
        )
        leaves = _jitter(rng, (0.10, 0.22, 0.06) if conifer else (0.16, 0.32, 0.09), 0.25)
        light = _jitter(rng, (0.35, 0.45, 0.15), 0.2)
        for center, radius in zip(centers, radii):
            self.sphere(center, radius, leaves, _FOLIAGE, light)

    def bush(self, x, y, radius):
        if self.fits((x - radius, y - radius, 0), (x + radius, y + radius, radius)):
            self.sphere(
                (x, y, radius * self.rng.uniform(0.1, 0.5)),
                radius,
                _jitter(self.rng, (0.15, 0.28, 0.08), 0.25),
                _FOLIAGE,
                _jitter(self.rng, (0.30, 0.40, 0.12), 0.2),
            )

    def paint(self):
        # White, silver, grey and black are most cars; colours are the rest.
        choice = self.rng.choice(
            len(_PAINT_COLORS), p=[0.24, 0.2, 0.16, 0.12, 0.08, 0.08, 0.06, 0.06]
        )
        return _jitter(self.rng, _PAINT_COLORS[choice], 0.05)

    def vehicle(self, x, y, heading, kind):
        """A car, van or truck centred at (x, y), facing +x (heading 1) or -x (heading -1)."""
        rng = self.rng
        if kind == "truck":
            length, width, body_top = (
                rng.uniform(7.0, 12.0),
                rng.uniform(2.3, 2.55),
                rng.uniform(2.8, 3.6),
            )
            floor, cabin_top, cabin_len = 0.55, rng.uniform(2.6, 3.0), 2.2
        elif kind == "van":
            length, width, body_top = (
                rng.uniform(4.4, 5.5),
                rng.uniform(1.85, 2.05),
                rng.uniform(1.0, 1.2),
            )
            floor, cabin_top, cabin_len = 0.35, rng.uniform(1.9, 2.3), length * 0.75
        else:
            length, width, body_top = (
                rng.uniform(3.8, 4.9),
                rng.uniform(1.7, 1.9),
                rng.uniform(0.85, 1.0),
            )
            floor, cabin_top, cabin_len = (
                0.3,
                rng.uniform(1.38, 1.55),
                length * rng.uniform(0.45, 0.6),
            )
        lo, hi = (
            (x - length / 2, y - width / 2, 0.0),
            (x + length / 2, y + width / 2, max(body_top, cabin_top)),
        )
        if not self.fits(lo, hi):
            return
        paint = self.paint()
        glass = _jitter(rng, (0.10, 0.12, 0.15), 0.3)
        tyre = np.array([0.05, 0.05, 0.06], dtype=np.float32)
        for axle in (-0.33, 0.33):  # wheels: a dark block per axle, a little wider than the body
            ax = x + axle * length
            self.box(
                (ax - 0.33, y - width / 2 - 0.02, 0.0),
                (ax + 0.33, y + width / 2 + 0.02, 0.66),
                tyre,
            )
        if kind == "truck":  # a box body behind a glazed cab
            cab_x = x + heading * (length / 2 - cabin_len / 2)
            body_x = x - heading * cabin_len / 2
            self.box(
                (cab_x - cabin_len / 2, y - width / 2, floor),
                (cab_x + cabin_len / 2, y + width / 2, cabin_top),
                paint,
                _GLASS,
                glass,
                (1.0, 1.0, 0.0, 0.0, 0.5),
            )
            self.box(
                (body_x - (length - cabin_len) / 2, y - width / 2, floor),
                (body_x + (length - cabin_len) / 2 - 0.1, y + width / 2, body_top),
                self.paint(),
            )
            return
        self.box(
            (x - length / 2, y - width / 2, floor), (x + length / 2, y + width / 2, body_top), paint
        )
        cabin_x = x - heading * length * 0.06
        self.box(
            (cabin_x - cabin_len / 2, y - width / 2 + 0.08, body_top - 0.01),
            (cabin_x + cabin_len / 2, y + width / 2 - 0.08, cabin_top),
            paint,
            _GLASS,
            glass,
        )

    def street_light(self, x, y, toward_road):
        rng = self.rng
        height, arm = rng.uniform(6.0, 9.0), rng.uniform(1.2, 2.5)
        y_end = y + toward_road * arm
        if not self.fits(
            (x - 0.3, min(y, y_end) - 0.3, 0), (x + 0.3, max(y, y_end) + 0.3, height + 0.2)
        ):
            return
        metal = _jitter(
            rng, rng.choice([[0.45, 0.46, 0.48], [0.18, 0.19, 0.2], [0.3, 0.35, 0.3]]), 0.1
        )
        self.box((x - 0.09, y - 0.09, 0.0), (x + 0.09, y + 0.09, height), metal)
        self.box((x - 0.05, min(y, y_end), height - 0.12), (x + 0.05, max(y, y_end), height), metal)
        self.box(
            (x - 0.25, y_end - 0.35, height - 0.25), (x + 0.25, y_end + 0.35, height - 0.05), metal
        )

    def utility_pole(self, x, y):
        rng = self.rng
        height = rng.uniform(8.0, 11.0)
        if not self.fits((x - 0.2, y - 1.0, 0), (x + 0.2, y + 1.0, height)):
            return
        wood = _jitter(rng, (0.32, 0.27, 0.22), 0.15)
        self.box((x - 0.13, y - 0.13, 0.0), (x + 0.13, y + 0.13, height), wood)
        self.box((x - 0.06, y - 1.0, height - 0.8), (x + 0.06, y + 1.0, height - 0.65), wood)

    def sign(self, x, y):
        rng = self.rng
        height, size = rng.uniform(2.0, 2.8), rng.uniform(0.5, 0.9)
        if not self.fits((x - 0.1, y - size / 2, 0), (x + 0.1, y + size / 2, height + size)):
            return
        self.box(
            (x - 0.04, y - 0.04, 0.0), (x + 0.04, y + 0.04, height), np.float32([0.55, 0.56, 0.58])
        )
        face = rng.choice(
            [
                [0.9, 0.9, 0.9],
                [0.1, 0.25, 0.6],
                [0.75, 0.1, 0.1],
                [0.9, 0.75, 0.1],
                [0.1, 0.45, 0.2],
            ]
        )
        self.box(
            (x - 0.03, y - size / 2, height),
            (x + 0.03, y + size / 2, height + size),
            _jitter(rng, face, 0.05),
        )


def random_outdoor_scene(rng: np.random.Generator, path_length_m: float = 0.0) -> Scene:
    """A random vehicle-scale outdoor scene: a road along +x (or an open field), buildings, poles,
    trees and bushes, vehicles, hills and a ridge of mountains at kilometres, a sky with clouds.

    Kinds: urban street, suburban road, rural road, field. ``Scene.eye`` is where the camera
    stands at x = 0: in a lane (car, truck: 1.1-2.5 m up) or on the sidewalk or verge (robot:
    0.3-1.0 m up); nothing stands in the way from x = -4 m to ``path_length_m`` + 8 m, so a
    camera may also drive that far (SceneRenderer).
    """
    kind = _OUTDOOR_KINDS[rng.choice(len(_OUTDOOR_KINDS), p=[0.35, 0.25, 0.25, 0.15])]
    far_x = path_length_m + 260.0

    # Road cross-section (metres from the centre line, y > 0 is the left of a camera facing +x).
    lanes, lane_width, parking, sidewalk, kerb = 0, 3.0, 0.0, 0.0, 0.0
    dirt_road = False
    if kind == "field":
        dirt_road = bool(rng.random() < 0.6)
        half = rng.uniform(1.2, 2.2) if dirt_road else 0.0
    else:
        lanes = int(rng.choice([2, 2, 3, 4])) if kind == "urban" else 2
        lane_width = rng.uniform(2.9, 3.6)
        if kind != "rural" and rng.random() < 0.6:
            parking = rng.uniform(2.0, 2.5)
        half = (
            lanes * lane_width / 2 + parking + (rng.uniform(0.3, 1.2) if kind == "rural" else 0.0)
        )
        if kind == "urban" or (kind == "suburban" and rng.random() < 0.7):
            sidewalk = rng.uniform(2.0, 5.0) if kind == "urban" else rng.uniform(1.5, 2.5)
            kerb = rng.uniform(0.1, 0.18)
    lines = []
    if lanes:
        line_width = rng.uniform(0.1, 0.2)
        yellow_centre = bool(rng.random() < 0.3)
        for k in range(1, lanes):
            centre = k == lanes // 2
            double = centre and yellow_centre  # a double yellow line, drawn as one wide band
            lines.append(
                (
                    -lanes * lane_width / 2 + k * lane_width,
                    line_width * (2.2 if double else 1.0),
                    not (centre and rng.random() < 0.4),
                    double,
                )
            )
        if kind == "rural" or rng.random() < 0.5:
            edge = lanes * lane_width / 2 - 0.15
            lines += [(-edge, line_width, False, False), (edge, line_width, False, False)]
    grass, dirt = _jitter(rng, (0.24, 0.36, 0.12), 0.2), _jitter(rng, (0.45, 0.38, 0.28), 0.15)
    if rng.random() < 0.3:  # dry season
        grass = _jitter(rng, (0.52, 0.47, 0.28), 0.1)
    if dirt_road:
        road_color = _jitter(rng, (0.5, 0.42, 0.32), 0.1)
    else:
        road_color = _jitter(rng, [rng.uniform(0.17, 0.34)] * 3, 0.05)
    ground = _Ground(
        road_half_width=float(half),
        road_color=road_color,
        dirt_road=dirt_road,
        lines=tuple(lines),
        dash_m=rng.uniform(2.0, 4.0),
        dash_period_m=rng.uniform(8.0, 13.0),
        marking_color=_jitter(rng, (0.9, 0.9, 0.88), 0.04),
        verge_a=grass,
        verge_b=dirt if kind in ("rural", "field") else _jitter(rng, grass * 0.8, 0.1),
        patch_m=rng.uniform(3.0, 15.0),
    )

    # Camera platform and where it stands.
    platform = ("robot", "car", "truck")[rng.choice(3, p=[0.35, 0.5, 0.15])]
    eye_height = rng.uniform(
        *{"robot": (0.3, 1.0), "car": (1.1, 1.8), "truck": (1.9, 2.5)}[platform]
    )
    side = 1.0 if rng.random() < 0.5 else -1.0
    surface_z = 0.0
    if kind == "field":
        eye_y = rng.uniform(-half, half) if dirt_road else rng.uniform(-3.0, 3.0)
    elif platform == "robot" and sidewalk:
        eye_y, surface_z = side * (half + rng.uniform(0.6, sidewalk - 0.6)), kerb
    elif platform == "robot":
        eye_y = side * (half - rng.uniform(0.5, 1.0))
    else:  # keeps to the right, mostly: lanes at y < 0 run along +x
        lane = int(rng.integers(lanes // 2)) if rng.random() < 0.8 else int(rng.integers(lanes))
        eye_y = -lanes * lane_width / 2 + (lane + 0.5) * lane_width + rng.uniform(-0.3, 0.3)
    eye = np.array([eye_y, surface_z + eye_height])
    build = _OutdoorBuilder(
        rng,
        np.array([-4.0, eye_y - 1.4, -1.0]),
        np.array([path_length_m + 8.0, eye_y + 1.4, eye[1] + 1.0]),
    )

    if (
        sidewalk
    ):  # raised sidewalks, their ends hidden beyond the ridge; the kerb is their road-side face
        pavement = _jitter(rng, [rng.uniform(0.5, 0.7)] * 3, 0.04)
        for sign in (-1.0, 1.0):
            y0, y1 = sorted((sign * half, sign * (half + sidewalk)))
            build.box((-3500.0, y0, 0.0), (path_length_m + 3500.0, y1, kerb), pavement, _PAVEMENT)

    # Buildings along both sides.
    for sign in (-1.0, 1.0):
        front = half + sidewalk
        if kind in ("urban", "suburban"):
            x = rng.uniform(-60.0, -30.0)
            while x < far_x:
                if kind == "urban":  # terraces and blocks, 6-50 m high (log-uniform: most are low)
                    width, depth = rng.uniform(10, 30), rng.uniform(10, 25)
                    gap = 0.0 if rng.random() < 0.5 else rng.uniform(2, 12)
                    height, setback = (
                        math.exp(rng.uniform(math.log(6), math.log(50))),
                        rng.uniform(0.0, 1.5),
                    )
                else:
                    width, gap, depth = rng.uniform(8, 16), rng.uniform(6, 20), rng.uniform(8, 12)
                    height, setback = rng.uniform(4.5, 9.0), rng.uniform(5.0, 15.0)
                y_near = front + setback
                build.building(
                    x, x + width, *sorted((sign * y_near, sign * (y_near + depth))), height, kind
                )
                x += width + gap
        else:
            for _ in range(int(rng.integers(0, 5 if kind == "rural" else 3))):
                x, y = rng.uniform(5.0, far_x), sign * rng.uniform(front + 12.0, 150.0)
                width, depth = rng.uniform(8, 30), rng.uniform(8, 25)
                build.building(
                    x, x + width, *sorted((y, y + sign * depth)), rng.uniform(4.0, 12.0), kind
                )
    if kind == "urban" or (kind == "suburban" and rng.random() < 0.3):  # a distant skyline
        for _ in range(int(rng.integers(8, 25))):
            bearing, distance = rng.uniform(-1.2, 1.2), rng.uniform(300.0, 1500.0)
            x, y, width = (
                distance * math.cos(bearing),
                distance * math.sin(bearing),
                rng.uniform(15, 45),
            )
            build.building(
                x - width / 2,
                x + width / 2,
                y - width / 2,
                y + width / 2,
                rng.uniform(30, 180),
                "tower",
            )

    # Poles, lights and signs.
    if kind in ("urban", "suburban") and rng.random() < 0.85:
        spacing = rng.uniform(22.0, 40.0)
        for sign in (-1.0, 1.0):
            for x in np.arange(rng.uniform(-30.0, 0.0), far_x, spacing):
                build.street_light(x, sign * (half + 0.5), -sign)
    elif kind == "rural" and rng.random() < 0.7:
        sign, spacing = (1.0 if rng.random() < 0.5 else -1.0), rng.uniform(35.0, 60.0)
        for x in np.arange(rng.uniform(-40.0, 0.0), far_x, spacing):
            build.utility_pole(x, sign * (half + rng.uniform(2.0, 5.0)))
    if kind != "field":
        for _ in range(int(rng.integers(0, 5))):
            sign = 1.0 if rng.random() < 0.5 else -1.0
            build.sign(rng.uniform(5.0, 120.0), sign * (half + rng.uniform(0.5, 1.5)))

    # Vegetation.
    if kind == "urban" and sidewalk > 2.5 and rng.random() < 0.5:
        spacing = rng.uniform(8.0, 16.0)
        for sign in (-1.0, 1.0):
            for x in np.arange(rng.uniform(-20.0, 0.0), 150.0, spacing):
                build.tree(x, sign * (half + rng.uniform(0.8, 1.4)), rng.uniform(0.7, 1.0))
    counts = {"urban": (0, 0), "suburban": (15, 35), "rural": (10, 40), "field": (15, 45)}[kind]
    for _ in range(int(rng.integers(*counts)) if counts[1] else 0):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        lateral = half + (
            sidewalk + rng.uniform(3.0, 40.0) if kind == "suburban" else rng.uniform(3.0, 150.0)
        )
        if kind == "field" and rng.random() < 0.4:
            lateral = rng.uniform(2.0, 40.0)
        build.tree(
            rng.uniform(-30.0, min(far_x, 220.0)),
            sign * lateral,
            rng.uniform(0.8, 1.6),
            conifer=bool(rng.random() < 0.3),
        )
    for _ in range(int(rng.integers(0, 25)) if kind != "urban" else 0):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        build.bush(
            rng.uniform(-10.0, 150.0),
            sign * (half + sidewalk + rng.uniform(1.0, 40.0)),
            rng.uniform(0.4, 1.4),
        )
    if kind == "suburban" and rng.random() < 0.6:  # hedges along the front gardens
        for sign in (-1.0, 1.0):
            x = rng.uniform(-20.0, 0.0)
            while x < 150.0:
                length, y = rng.uniform(5.0, 15.0), sign * (half + sidewalk + rng.uniform(0.5, 2.0))
                thickness, height = rng.uniform(0.7, 1.2), rng.uniform(0.8, 1.6)
                lo, hi = (
                    (x, min(y, y + sign * thickness), 0.0),
                    (x + length, max(y, y + sign * thickness), height),
                )
                if build.fits(lo, hi):
                    build.box(
                        lo,
                        hi,
                        _jitter(rng, (0.13, 0.26, 0.08), 0.2),
                        _FOLIAGE,
                        _jitter(rng, (0.3, 0.4, 0.12), 0.2),
                    )
                x += length + rng.uniform(3.0, 12.0)

    # Vehicles: traffic in the lanes, parked along the kerb.
    kinds, weights = ("car", "van", "truck"), [0.72, 0.18, 0.10]
    for lane in range(lanes):
        lane_y = -lanes * lane_width / 2 + (lane + 0.5) * lane_width
        heading = 1.0 if lane_y < 0 else -1.0
        x = rng.uniform(3.0, 15.0)
        while x < 90.0:
            if rng.random() < 0.6:
                build.vehicle(
                    x, lane_y + rng.uniform(-0.3, 0.3), heading, kinds[rng.choice(3, p=weights)]
                )
            x += rng.uniform(10.0, 40.0)
    if parking:
        for sign in (-1.0, 1.0):
            x = rng.uniform(-20.0, -10.0)
            while x < 100.0:
                if rng.random() < 0.7:
                    build.vehicle(
                        x, sign * (half - parking / 2), -sign, kinds[rng.choice(2, p=[0.8, 0.2])]
                    )
                x += rng.uniform(5.5, 9.0)
    if kind == "field":
        for _ in range(int(rng.integers(0, 3))):
            build.vehicle(
                rng.uniform(5.0, 60.0),
                rng.uniform(-30.0, 30.0),
                1.0 if rng.random() < 0.5 else -1.0,
                kinds[rng.choice(3, p=weights)],
            )

    # Terrain: hills (spherical caps) from 300 m out, and a ridge all around at 2-3 km.
    ridge_radius = rng.uniform(2000.0, 3000.0)
    for _ in range(int(rng.integers(0, 4) if kind == "urban" else rng.integers(2, 9))):
        cap_height = rng.uniform(15.0, 150.0)
        cap_radius = min(cap_height / rng.uniform(0.08, 0.35), 700.0)
        # Far enough that the camera is never under the hill, inside the ridge.
        nearest = max(300.0, cap_radius + 150.0)
        distance = rng.uniform(nearest, max(ridge_radius - cap_radius - 100.0, nearest + 10.0))
        bearing = rng.uniform(-1.75, 1.75)
        sphere_radius = (cap_radius**2 + cap_height**2) / (2 * cap_height)
        build.sphere(
            (
                distance * math.cos(bearing),
                distance * math.sin(bearing),
                cap_height - sphere_radius,
            ),
            sphere_radius,
            _jitter(rng, (0.22, 0.32, 0.14), 0.2),
            _TERRAIN,
            _jitter(rng, (0.40, 0.38, 0.25), 0.2),
        )
    mountains = bool(rng.random() < 0.5)
    # Amplitude falling as 1 / frequency (a natural skyline's spectrum): broad massifs carrying
    # smaller peaks, not a row of equal teeth.
    frequency = np.round(np.exp(rng.uniform(math.log(3), math.log(150), 8)))
    amplitude = rng.uniform(0.3, 1.0, 8) / frequency
    amplitude *= (
        rng.uniform(150.0, 600.0) if mountains else rng.uniform(20.0, 120.0)
    ) / amplitude.sum()
    ridge = _Ridge(
        radius_m=float(ridge_radius),
        base_m=float(rng.uniform(8.0, 40.0)),
        amplitude_m=amplitude,
        frequency=frequency,
        phase=rng.uniform(0, math.pi, 8),
        color_a=_jitter(rng, (0.30, 0.36, 0.33), 0.15),
        color_b=_jitter(rng, (0.42, 0.42, 0.38), 0.15),
        snow_m=float(rng.uniform(250.0, 500.0)) if mountains and rng.random() < 0.5 else math.inf,
    )

    # Sky and sun.
    overcast = bool(rng.random() < 0.2)
    if overcast:
        grey = rng.uniform(0.6, 0.85)
        sky_horizon, sky_zenith, clouds = np.float32([grey] * 3), np.float32([grey * 0.9] * 3), None
    else:
        sky_horizon = _jitter(rng, (0.82, 0.87, 0.93), 0.06)
        sky_zenith = _jitter(rng, (0.30, 0.50, 0.85), 0.15)
        clouds = (
            (
                float(rng.uniform(0.0, 0.7)),
                float(rng.uniform(-1e4, 1e4)),
                float(rng.uniform(-1e4, 1e4)),
            )
            if rng.random() < 0.7
            else None
        )
    sun_elevation, sun_azimuth = (
        math.radians(rng.uniform(15.0, 65.0)),
        rng.uniform(0.0, 2 * math.pi),
    )
    sun = np.array(
        [
            math.cos(sun_elevation) * math.cos(sun_azimuth),
            math.cos(sun_elevation) * math.sin(sun_azimuth),
            math.sin(sun_elevation),
        ]
    )

    boxes, spheres = build.boxes, build.spheres
    return Scene(
        planes=[_Plane(np.array([0.0, 0.0, 1.0]), 0.0, grass, grass, 1.0, material="ground")],
        box_lo=np.array([b[0] for b in boxes], dtype=np.float64).reshape(-1, 3),
        box_hi=np.array([b[1] for b in boxes], dtype=np.float64).reshape(-1, 3),
        box_color=np.array([b[2] for b in boxes], dtype=np.float32).reshape(-1, 3),
        sphere_center=np.array([b[0] for b in spheres], dtype=np.float64).reshape(-1, 3),
        sphere_radius=np.array([b[1] for b in spheres], dtype=np.float64),
        sphere_color=np.array([b[2] for b in spheres], dtype=np.float32).reshape(-1, 3),
        sky_horizon=sky_horizon,
        sky_zenith=sky_zenith,
        sun_dir=sun,
        indoor=False,
        box_material=np.array([b[3] for b in boxes], dtype=np.int32),
        box_accent=np.array([b[4] for b in boxes], dtype=np.float32).reshape(-1, 3),
        box_pattern=np.array([b[5] for b in boxes], dtype=np.float64).reshape(-1, 5),
        sphere_material=np.array([b[3] for b in spheres], dtype=np.int32),
        sphere_accent=np.array([b[4] for b in spheres], dtype=np.float32).reshape(-1, 3),
        ground=ground,
        ridge=ridge,
        clouds=clouds,
        eye=eye,
        eye_surface_z=float(surface_z),
    )


def render_random_outdoor_view(
    rng: np.random.Generator, width: int, height: int, hfov_deg: float | None = None
) -> RenderedFrame:
    """A new random vehicle-scale outdoor scene seen from a car, truck or robot: one sample.

    The camera stands 0.3-2.5 m above the road, sidewalk or field, pitched -10..+5 degrees,
    yawed mostly along the road; its horizontal field of view is ``hfov_deg``, or drawn from
    45-100 degrees (``K`` is the exact intrinsics of the image). Depth runs from the ground at
    the camera's feet to the terrain at up to about 3 km; sky is +inf. The draws do not depend on
    the image size or on ``hfov_deg``: the same rng state gives the same scene and pose.

    Cost on one CPU core (OMP_NUM_THREADS=1, CPU time over 40 views, the project's 2-core dev
    machine with a training run on the other core): 256 x 256 median 30 ms (p90 33, max 38);
    640 x 480 median 132 ms (p90 148, max 208). render_random_view there: 13 and 79 ms.
    """
    if hfov_deg is not None and not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"hfov_deg must be in (0, 180) degrees, got {hfov_deg}")
    scene = random_outdoor_scene(rng)
    position = np.array([rng.uniform(-1.0, 1.0), scene.eye[0], scene.eye[1]])
    yaw = rng.uniform(-10.0, 10.0) if rng.random() < 0.7 else rng.uniform(-50.0, 50.0)
    pitch = rng.uniform(-10.0, 5.0)
    drawn_hfov = rng.uniform(45.0, 100.0)
    K = intrinsics(width, height, drawn_hfov if hfov_deg is None else hfov_deg)
    return render(scene, width, height, position, math.radians(yaw), math.radians(pitch), K=K)


def outdoor_validation_view(index: int, width: int, height: int, seed: int = 0) -> RenderedFrame:
    """Outdoor validation view ``index``: depends only on (seed, index) and the image size, on a
    seed stream that no training rng (default_rng(int)) uses."""
    return render_random_outdoor_view(
        np.random.default_rng([_OUTDOOR_VALIDATION_STREAM, seed, index]), width, height
    )


def outdoor_validation_views(
    count: int, width: int, height: int, seed: int = 0
) -> list[RenderedFrame]:
    """Fixed outdoor views with their depth, for validation (``outdoor_validation_view``)."""
    return [outdoor_validation_view(index, width, height, seed) for index in range(count)]


# Cameras of vehicles (issue 26): a KITTI-like wide stereo camera (1242 x 375, fx 721 px), a 16:9
# and a 4:3 one; (width, height, (lowest, highest) horizontal field of view in degrees).
VEHICLE_CAMERAS = (
    ("wide", 1242, 375, (81.4, 81.4)),
    ("16:9", 1280, 720, (70.0, 90.0)),
    ("4:3", 640, 480, (60.0, 90.0)),
)
VEHICLE_HEIGHT_RANGE_M = (1.2, 2.0)
VEHICLE_PITCH_RANGE_DEG = (-5.0, 5.0)  # positive looks down (RenderedFrame.camera_pitch_deg)
_VEHICLE_VALIDATION_STREAM = 0x0D7A_5E20


def vehicle_scene(rng: np.random.Generator, path_length_m: float = 0.0) -> Scene:
    """A random outdoor scene (random_outdoor_scene) whose camera is a car's or a truck's on the
    road: scenes drawn for a robot (below 1.1 m, or on a raised sidewalk) are drawn again, so the
    clear corridor above the road reaches at least 2.1 m and any vehicle height up to 2 m fits."""
    while True:
        scene = random_outdoor_scene(rng, path_length_m)
        if scene.eye[1] >= 1.1 and scene.eye_surface_z == 0.0:
            return scene


def vehicle_validation_view(index: int, seed: int = 0) -> tuple[str, RenderedFrame]:
    """Vehicle validation view ``index`` at its camera's native size: (camera name, frame).

    Cameras cycle through VEHICLE_CAMERAS; the height above the road (1.2-2.0 m), the pitch
    (-5..+5 degrees), the yaw (mostly along the road) and the field of view are drawn on a seed
    stream of its own, so the views depend on (seed, index) alone and no training rng renders them.
    """
    name, width, height, hfov_range = VEHICLE_CAMERAS[index % len(VEHICLE_CAMERAS)]
    rng = np.random.default_rng([_VEHICLE_VALIDATION_STREAM, seed, index])
    scene, camera_height, pitch_down, yaw = _vehicle_pose(rng)
    hfov = rng.uniform(*hfov_range)
    position = np.array([rng.uniform(-1.0, 1.0), scene.eye[0], camera_height])
    K = intrinsics(width, height, hfov)
    return name, render(
        scene, width, height, position, math.radians(yaw), math.radians(-pitch_down), K=K
    )


def _vehicle_pose(rng: np.random.Generator) -> tuple[Scene, float, float, float]:
    """A vehicle scene and its camera: (scene, height above the road in m, pitch down and yaw in
    degrees), drawn in this order (vehicle_validation_view's views depend on it)."""
    scene = vehicle_scene(rng)
    camera_height = rng.uniform(*VEHICLE_HEIGHT_RANGE_M)
    pitch_down = rng.uniform(*VEHICLE_PITCH_RANGE_DEG)
    yaw = rng.uniform(-8.0, 8.0) if rng.random() < 0.8 else rng.uniform(-25.0, 25.0)
    return scene, camera_height, pitch_down, yaw


def render_random_vehicle_window(
    rng: np.random.Generator, size: int, frame_width_range_px: tuple[float, float]
) -> RenderedFrame:
    """A ``size`` x ``size`` window of a random vehicle camera's frame: one training sample.

    The camera is one of VEHICLE_CAMERAS (wide 1242x375-like, 16:9, 4:3) on a car or truck
    (1.2-2.0 m above the road, pitch -5..+5 degrees, as the vehicle validation views, on the
    caller's rng so no validation view is drawn). Its frame is drawn ``frame_width_range_px``
    wide, the width the engine runs the networks at, so the window's focal length and pixel scale
    are a deployed frame's; the window lies at a random place in the frame. Where the frame is
    less than ``size`` tall (a wide camera at 320 px: 97 rows) or wide, the window is centred on
    it in that direction and shows what the camera would see beyond the frame's edges.
    """
    _, width, height, hfov_range = VEHICLE_CAMERAS[int(rng.integers(len(VEHICLE_CAMERAS)))]
    scene, camera_height, pitch_down, yaw = _vehicle_pose(rng)
    frame_width = rng.uniform(*frame_width_range_px)
    frame_height = frame_width * height / width
    focal = (frame_width / 2.0) / math.tan(math.radians(rng.uniform(*hfov_range)) / 2.0)
    # Anywhere in the frame; centred on a side the window is longer than.
    left = (
        rng.uniform(0.0, frame_width - size) if frame_width >= size else (frame_width - size) / 2.0
    )
    top = (
        rng.uniform(0.0, frame_height - size)
        if frame_height >= size
        else (frame_height - size) / 2.0
    )
    K = np.array(
        [
            [focal, 0.0, (frame_width - 1) / 2.0 - left],
            [0.0, focal, (frame_height - 1) / 2.0 - top],
            [0.0, 0.0, 1.0],
        ]
    )
    position = np.array([rng.uniform(-1.0, 1.0), scene.eye[0], camera_height])
    return render(scene, size, size, position, math.radians(yaw), math.radians(-pitch_down), K=K)


class SceneRenderer:
    """One random scene and a camera moving through it: a live stream for the demo and tests.

    ``render(t)`` is a pure function of (seed, size, t): the same arguments give the same frame.
    The camera drives forward at ``speed_mps`` along a gently swaying path and loops every
    ``loop_s`` seconds so the stream never runs out of scene. ``vehicle_scale=True`` drives it
    down a vehicle-scale outdoor scene (random_outdoor_scene: roads, buildings, traffic, terrain
    to kilometres), at the height of the car, truck or robot the scene was drawn with.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        seed: int = 0,
        indoor: bool = False,
        speed_mps: float = 1.5,
        loop_s: float = 60.0,
        vehicle_scale: bool = False,
    ):
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if indoor and vehicle_scale:
            raise ValueError(
                "indoor=True and vehicle_scale=True exclude each other: choose one scene kind"
            )
        self.width, self.height = int(width), int(height)
        rng = np.random.default_rng(seed)
        if vehicle_scale:
            self.scene = random_outdoor_scene(rng, path_length_m=abs(speed_mps) * loop_s)
        else:
            self.scene = random_scene(rng, indoor=indoor)
        self.K = intrinsics(self.width, self.height)
        self.speed_mps, self.loop_s = float(speed_mps), float(loop_s)

    def pose(self, t: float) -> tuple[np.ndarray, float, float]:
        t_loop = t % self.loop_s
        if (
            self.scene.eye is not None
        ):  # along the lane or sidewalk it stands on, within its clear path
            position = np.array(
                [
                    abs(self.speed_mps) * t_loop,
                    self.scene.eye[0] + 0.25 * math.sin(0.2 * t),
                    self.scene.eye[1],
                ]
            )
            return (
                position,
                math.radians(3.0 * math.sin(0.25 * t)),
                math.radians(-2.0 + 1.0 * math.sin(0.4 * t)),
            )
        if self.scene.indoor:
            position = np.array(
                [-1.0 + 0.1 * self.speed_mps * t_loop % 6.0, 0.8 * math.sin(0.3 * t), 1.5]
            )
        else:
            position = np.array([self.speed_mps * t_loop, 1.2 * math.sin(0.2 * t), 1.6])
        yaw = math.radians(12.0 * math.sin(0.25 * t))
        pitch = math.radians(-4.0 + 2.0 * math.sin(0.4 * t))
        return position, yaw, pitch

    def render(self, t: float) -> RenderedFrame:
        position, yaw, pitch = self.pose(t)
        return render(self.scene, self.width, self.height, position, yaw, pitch, K=self.K)
