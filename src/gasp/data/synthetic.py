"""Procedural indoor rooms rendered on the CPU with exact depth and poses.

gasp's built-in training data: no download, deterministic per seed. A scene is a room box (floor,
walls, ceiling) with procedural textures (wood planks, tiles, brick, wallpaper, noise), framed
windows/paintings/doors on the walls, and furniture-like solids (crates, cabinets, tables, balls,
barrels) of distinct looks, plus deliberate look-alikes (same object at another place and depth),
as real rooms have. A camera moves smoothly through the free space looking into the room.

Rendering is vectorised ray casting in numpy. Every surface colour is a function of the hit point
in world/object surface coordinates and of a fixed directional light (Lambertian), so one 3D point
looks the same from every view. Surfaces also carry a slow, non-periodic colour variation (fading,
dirt, uneven light) anchored to the surface, so the parts of a tiled floor or a brick wall differ
as they do in real rooms; look-alike objects share it with their original. Views are antialiased
(``antialias`` x ``antialias`` rays per pixel, averaged, as a camera integrates light over a pixel):
point-sampled fine textures alias into moire patterns that change with the viewpoint.

World frame: z up, the room spans ``[0, Lx] x [0, Ly] x [0, Lz]`` metres. Cameras: camera-to-world,
OpenCV axes (x right, y down, z forward); depth is z-depth in metres; pixel (u, v) = (column, row)
with integer coordinates at pixel centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gasp.data.views import SceneReader, View
from gasp.errors import ConfigError

ROOM_FACES = ("floor", "ceiling", "wall y=0", "wall x=Lx", "wall y=Ly", "wall x=0")
NUM_ROOM_FACES = len(ROOM_FACES)
MISS = -1  # hit id of a ray that hits nothing (only possible from outside the room)
_LIGHT = np.array([0.35, -0.5, 0.8]) / np.linalg.norm([0.35, -0.5, 0.8])
_EPS = 1e-6
_PATH_CHECKS = 193  # spline samples checked for free space (every 8th also for an open view)

# Named colours (linear-ish RGB in [0, 1]); names go into captions, so keep each colour unambiguous.
PALETTE = {
    "red": (0.78, 0.14, 0.12),
    "orange": (0.92, 0.48, 0.10),
    "yellow": (0.93, 0.80, 0.18),
    "green": (0.20, 0.60, 0.22),
    "teal": (0.10, 0.55, 0.55),
    "blue": (0.15, 0.30, 0.80),
    "purple": (0.48, 0.22, 0.65),
    "pink": (0.93, 0.50, 0.65),
    "white": (0.92, 0.92, 0.90),
    "grey": (0.52, 0.52, 0.54),
    "black": (0.10, 0.10, 0.11),
    "brown": (0.45, 0.27, 0.13),
}


# --------------------------------------------------------------------------------------- noise ----
def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random floats in [0, 1) for integer lattice points (any shape)."""
    h = (ix.astype(np.int64) * 374761393 + iy.astype(np.int64) * 668265263 + seed * 1442695041) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h ^= h >> 16
    return (h & 0xFFFFFF).astype(np.float32) / np.float32(0x1000000)


def _value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1] at continuous coordinates (lattice spacing 1)."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    a, b = _hash(iu, iv, seed), _hash(iu + 1, iv, seed)
    c, d = _hash(iu, iv + 1, seed), _hash(iu + 1, iv + 1, seed)
    return (a + (b - a) * fu) + ((c + (d - c) * fu) - (a + (b - a) * fu)) * fv


def _fbm(u: np.ndarray, v: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal value noise in [0, 1]."""
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        total = total + amp * _value_noise(u * 2**o, v * 2**o, seed + 101 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


TINT_AMPLITUDE = 0.35
"""Largest relative change of each colour channel by the surface colour variation (``_tint``)."""
TINT_FREQUENCY = 2.0
"""Lattice frequency (per metre) of the variation's base octave (features of about 0.2-0.5 m)."""


def _tint(uv: np.ndarray, seed: int) -> np.ndarray:
    """Per-channel colour factors (N, 3) in ``1 +- TINT_AMPLITUDE`` at surface coordinates ``uv`` (metres)."""
    u, v = uv[:, 0] * TINT_FREQUENCY, uv[:, 1] * TINT_FREQUENCY
    channels = [2.0 * _fbm(u + 31.0 * c, v, seed + 11 + c, octaves=3) - 1.0 for c in range(3)]
    return (1.0 + TINT_AMPLITUDE * np.stack(channels, -1)).astype(uv.dtype)


def _check_antialias(antialias: int) -> int:
    """``antialias`` as an int; ConfigError unless it is odd and >= 1 (the middle ray is the centre)."""
    if antialias < 1 or antialias % 2 == 0:
        raise ConfigError(f"antialias must be an odd number >= 1, got {antialias}")
    return int(antialias)


# ------------------------------------------------------------------------------------ materials ----
@dataclass
class Material:
    """A procedural texture on surface coordinates (metres).

    Attributes:
        pattern: one of PATTERNS.
        base: (3,) main colour; accent: (3,) second colour.
        scale: the pattern's period in metres.
        seed: noise seed (two materials with the same fields look identical).
        words: how a caption names it, e.g. "blue striped" or "wooden plank".
    """

    pattern: str
    base: np.ndarray
    accent: np.ndarray
    scale: float
    seed: int
    words: str

    def shade(self, uv: np.ndarray) -> np.ndarray:
        """Colours (N, 3) in [0, 1] at surface coordinates ``uv`` (N, 2), metres."""
        u, v = uv[:, 0] / self.scale, uv[:, 1] / self.scale
        base, accent = self.base.astype(uv.dtype), self.accent.astype(uv.dtype)
        s = self.seed
        if self.pattern == "planks":  # boards along u, 1 period wide, 4-6 periods long, staggered
            row = np.floor(v)
            uu = u + 5.0 * _hash(row, row * 0 + 7, s)
            board = np.floor(uu / 5.0)
            tone = 0.75 + 0.5 * _hash(row, board, s + 1)
            grain = 0.5 + 0.5 * np.sin(2 * np.pi * (3 * v + 1.5 * _fbm(uu * 0.6, v * 4, s + 2)))
            col = _mix(base, accent, 0.6 * grain) * tone[:, None]
            seam = (_frac(v) < 0.05) | (_frac(uu / 5.0) < 0.01)
            return np.where(seam[:, None], base * 0.35, col)
        if self.pattern == "tiles":  # square tiles, two glazes, grout lines
            iu, iv = np.floor(u), np.floor(v)
            pick = _hash(iu, iv, s) > 0.6
            col = np.where(pick[:, None], accent, base) * (0.92 + 0.16 * _hash(iu, iv, s + 3))[:, None]
            grout = (_frac(u) < 0.05) | (_frac(v) < 0.05)
            return np.where(grout[:, None], np.asarray(PALETTE["grey"], uv.dtype) * 0.9, col)
        if self.pattern == "brick":  # period = brick height incl. mortar; bricks 2.2x as long
            row = np.floor(v)
            uu = u / 2.2 + 0.5 * (row % 2)
            col_i = np.floor(uu)
            tone = 0.7 + 0.5 * _hash(col_i, row, s)
            col = _mix(base, accent, 0.4 * _fbm(u * 3, v * 3, s + 4)) * tone[:, None]
            mortar = (_frac(v) < 0.12) | (_frac(uu) < 0.05)
            return np.where(mortar[:, None], np.asarray((0.78, 0.76, 0.72), uv.dtype), col)
        if self.pattern == "wallpaper":  # vertical stripes + a diamond motif
            stripe = (_frac(u) < 0.5).astype(uv.dtype)
            du, dv = np.abs(_frac(u * 2) - 0.5), np.abs(_frac(v * 2) - 0.5)
            diamond = ((du + dv) < 0.22).astype(uv.dtype)
            col = _mix(base, accent, 0.35 * stripe)
            return _mix(col, accent * 0.6, 0.8 * diamond)
        if self.pattern == "checker":
            c = ((np.floor(u) + np.floor(v)) % 2).astype(uv.dtype)
            return _mix(base, accent, c)
        if self.pattern == "stripes":  # diagonal stripes
            c = (_frac((u + v) * 0.7071) < 0.5).astype(uv.dtype)
            return _mix(base, accent, c)
        if self.pattern == "dots":
            du, dv = _frac(u) - 0.5, _frac(v + 0.5 * (np.floor(u) % 2)) - 0.5
            c = (du * du + dv * dv < 0.09).astype(uv.dtype)
            return _mix(base, accent, c)
        if self.pattern == "noise":  # mottled (plaster, stone, carpet)
            return _mix(base, accent, _fbm(u, v, s, octaves=4))
        if self.pattern == "window":  # sky gradient behind a white frame with a cross bar (uv in [0,1])
            sky = _mix(np.asarray((0.55, 0.75, 0.98), uv.dtype), np.asarray((0.95, 0.97, 1.0), uv.dtype), v)
            bar = (np.abs(u - 0.5) < 0.03) | (np.abs(v - 0.55) < 0.03) | (np.minimum(u, 1 - u) < 0.06)
            bar |= np.minimum(v, 1 - v) < 0.06
            return np.where(bar[:, None], np.asarray((0.95, 0.95, 0.93), uv.dtype), sky)
        if self.pattern == "painting":  # abstract colour blobs in a dark frame (uv in [0,1])
            n1, n2 = _fbm(u * 4, v * 4, s), _fbm(u * 3 + 9, v * 3, s + 5)
            col = _mix(
                _mix(base, accent, n1), np.asarray((0.95, 0.9, 0.6), uv.dtype), np.clip(2 * n2 - 1, 0, 1)
            )
            frame = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v)) < 0.07
            return np.where(frame[:, None], np.asarray((0.25, 0.17, 0.08), uv.dtype), col)
        if self.pattern == "door":  # panels of a wooden door with a handle (uv in [0,1])
            panel = (np.abs(_frac(v * 2) - 0.5) < 0.38) & (np.abs(u - 0.5) < 0.35)
            grain = 0.85 + 0.15 * _fbm(u * 3, v * 30, s)
            col = np.where(panel[:, None], base * 0.8, base) * grain[:, None]
            handle = (u - 0.85) ** 2 + ((v - 0.5) * 2.2) ** 2 < 0.003
            return np.where(handle[:, None], np.asarray((0.85, 0.8, 0.5), uv.dtype), col)
        raise ValueError(f"unknown pattern {self.pattern!r}")


PATTERNS = ("planks", "tiles", "brick", "wallpaper", "checker", "stripes", "dots", "noise")
_PATTERN_WORDS = {"checker": "checkered", "stripes": "striped", "dots": "polka-dot", "noise": "mottled"}


def _colour(rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> tuple[str, np.ndarray]:
    names = [n for n in PALETTE if n not in exclude]
    name = names[rng.integers(len(names))]
    jitter = rng.uniform(-0.05, 0.05, 3)
    return name, np.clip(np.asarray(PALETTE[name]) + jitter, 0, 1)


# ----------------------------------------------------------------------------------- primitives ----
class _Box:
    """Box with half sizes ``half`` (3,), centre ``centre`` (3,), rotated by ``yaw`` about world z."""

    def __init__(self, centre: np.ndarray, half: np.ndarray, yaw: float) -> None:
        self.centre, self.half, self.yaw = np.asarray(centre, float), np.asarray(half, float), yaw
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)
        self.R = np.array(
            [[self.cos, -self.sin, 0.0], [self.sin, self.cos, 0.0], [0.0, 0.0, 1.0]]
        )  # local->world

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter of the entry point (N,), inf for a miss; ``o`` (N, 3) or (1, 3), ``d`` (N, 3)."""
        c, s = self.cos, self.sin
        ox, oy, oz = (o[:, k] - self.centre[k] for k in range(3))
        local_o = (c * ox + s * oy, -s * ox + c * oy, oz)
        local_d = (c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2])
        near, far = None, None
        with np.errstate(divide="ignore", invalid="ignore"):
            for ol, dl, h in zip(local_o, local_d, self.half):
                inv = 1.0 / dl
                t1, t2 = (-h - ol) * inv, (h - ol) * inv
                lo, hi = np.fmin(t1, t2), np.fmax(t1, t2)
                near = lo if near is None else np.fmax(near, lo)
                far = hi if far is None else np.fmin(far, hi)
        return np.where((near <= far) & (near > _EPS), near, np.inf)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pl = (p - self.centre.astype(p.dtype)) @ self.R.astype(p.dtype)
        rel = np.abs(pl) / self.half.astype(p.dtype)
        axis = np.argmax(rel, axis=-1)
        sign = np.sign(np.take_along_axis(pl, axis[:, None], 1))[:, 0]
        normal_l = np.zeros_like(pl)
        normal_l[np.arange(len(pl)), axis] = sign
        # in-plane coordinates of each face, offset per face so the faces do not mirror each other
        a = np.where(axis == 0, pl[:, 1], pl[:, 0]) + 0.37 * axis
        b = np.where(axis == 2, pl[:, 1], pl[:, 2]) + 0.61 * (sign > 0)
        return np.stack([a, b], -1), normal_l @ self.R.T.astype(p.dtype)

    def bound(self) -> tuple[np.ndarray, float]:
        return self.centre, float(np.linalg.norm(self.half))


class _Sphere:
    def __init__(self, centre: np.ndarray, radius: float) -> None:
        self.centre, self.radius = np.asarray(centre, float), radius

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        t, _ = _sphere_hits(o, d, self.centre, self.radius)
        return np.where(t > _EPS, t, np.inf)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (p - self.centre.astype(p.dtype)) / self.radius
        lon = np.arctan2(n[:, 1], n[:, 0])
        lat = np.arcsin(np.clip(n[:, 2], -1, 1))
        return np.stack([lon * self.radius, lat * self.radius], -1), n

    def bound(self) -> tuple[np.ndarray, float]:
        return self.centre, self.radius


def _sphere_hits(
    o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Near and far ray parameters (N,) of the sphere's intersections; inf where the ray misses it."""
    ox, oy, oz = (o[:, k] - centre[k] for k in range(3))
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dy * dy + dz * dz
    b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - radius * radius
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        root = np.sqrt(disc)
    hit = disc >= 0
    return np.where(hit, (-b - root) / a, np.inf), np.where(hit, (-b + root) / a, np.inf)


class _Cylinder:
    """Vertical cylinder of radius ``radius`` around (cx, cy), from z0 to z1, with caps."""

    def __init__(self, cx: float, cy: float, radius: float, z0: float, z1: float) -> None:
        self.cx, self.cy, self.radius, self.z0, self.z1 = cx, cy, radius, z0, z1

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ox, oy, oz = o[:, 0] - self.cx, o[:, 1] - self.cy, o[:, 2]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = ox * d[:, 0] + oy * d[:, 1]
        c = ox * ox + oy * oy - self.radius**2
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            t_side = (-b - np.sqrt(disc)) / a
            z = oz + t_side * d[:, 2]
            side_ok = (disc >= 0) & (t_side > _EPS) & (z >= self.z0) & (z <= self.z1)
            best = np.where(side_ok, t_side, np.inf)
            for zc in (self.z0, self.z1):
                tc = (zc - oz) / d[:, 2]
                x, y = ox + tc * d[:, 0], oy + tc * d[:, 1]
                cap_ok = (tc > _EPS) & (x * x + y * y <= self.radius**2)
                best = np.where(cap_ok & (tc < best), tc, best)
        return best

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = p[:, 0] - self.cx, p[:, 1] - self.cy
        on_cap = np.minimum(np.abs(p[:, 2] - self.z0), np.abs(p[:, 2] - self.z1)) < 1e-4 * max(1.0, self.z1)
        on_cap &= x * x + y * y < (self.radius * 0.9999) ** 2
        ang = np.arctan2(y, x)
        uv = np.where(on_cap[:, None], np.stack([x, y], -1), np.stack([ang * self.radius, p[:, 2]], -1))
        side_n = np.stack([x / self.radius, y / self.radius, np.zeros_like(x)], -1)
        cap_n = np.zeros_like(p)
        cap_n[:, 2] = np.where(p[:, 2] > 0.5 * (self.z0 + self.z1), 1.0, -1.0)
        return uv, np.where(on_cap[:, None], cap_n, side_n)

    def bound(self) -> tuple[np.ndarray, float]:
        centre = np.array([self.cx, self.cy, 0.5 * (self.z0 + self.z1)])
        return centre, math.hypot(self.radius, 0.5 * (self.z1 - self.z0))


@dataclass
class SceneObject:
    """One object: its primitives share a material; ``kind`` and ``centre`` feed the caption."""

    kind: str
    material: Material
    prims: list
    centre: np.ndarray
    radius: float  # footprint radius (metres), used to keep the camera away
    twin_of: int | None = None  # index of the object it is a look-alike copy of


@dataclass
class Decal:
    """A rectangle on a wall (window, painting, door): ``face`` in 2..5, uv box in wall coordinates."""

    kind: str
    face: int
    u0: float
    u1: float
    v0: float
    v1: float
    material: Material


@dataclass
class _Layout:
    size: np.ndarray
    floor: Material
    walls: Material
    ceiling: Material
    objects: list[SceneObject] = field(default_factory=list)
    decals: list[Decal] = field(default_factory=list)


# ---------------------------------------------------------------------------------- the scene ----
class SyntheticScene(SceneReader):
    """A procedural room with a smooth camera trajectory; a SceneReader with exact depth and poses.

    Args:
        seed: determines everything (layout, textures, trajectory).
        num_frames: frames in the video.
        height, width: image size in pixels (colour and depth have the same size).
        fov_deg: horizontal field of view in degrees (square pixels).
        num_objects: furniture-like objects before look-alike copies (default 4 to 7 from the seed).
        path_length: camera travel over the video, metres (about; the path is a smooth spline).
        max_rotation_deg: largest rotation between any two frames of the video, degrees.
        antialias: odd number of rays per pixel and axis of the rendered views (see ``render``).
    """

    def __init__(
        self,
        seed: int,
        num_frames: int = 96,
        height: int = 128,
        width: int = 128,
        fov_deg: float = 70.0,
        num_objects: int | None = None,
        path_length: float = 3.0,
        max_rotation_deg: float = 75.0,
        antialias: int = 3,
    ) -> None:
        if num_frames < 1 or height < 1 or width < 1:
            raise ConfigError(
                f"num_frames, height and width must be >= 1, got {num_frames}, {height}, {width}"
            )
        if not 10.0 <= fov_deg <= 150.0:
            raise ConfigError(f"fov_deg must be in [10, 150], got {fov_deg}")
        self.antialias = _check_antialias(antialias)
        if num_objects is not None and not 0 <= num_objects <= 12:
            raise ConfigError(f"num_objects must be in [0, 12], got {num_objects}")
        self.seed, self.num_frames, self.height, self.width = int(seed), num_frames, height, width
        self.name = f"synthetic-{self.seed}"
        self.frame_ids = [f"frame-{i:06d}" for i in range(num_frames)]
        rng = np.random.default_rng([self.seed, 20260])
        self.layout = _build_layout(rng, num_objects)
        self.prims: list = []
        self.prim_object: list[int] = []
        self._bounds: list[tuple[np.ndarray, float, list[int]]] = []  # per object: bounding sphere, prims
        for k, obj in enumerate(self.layout.objects):
            first = len(self.prims)
            self.prims += obj.prims
            self.prim_object += [k] * len(obj.prims)
            self._bounds.append((*_bounding_sphere(obj.prims), list(range(first, len(self.prims)))))
        self._tan_half_fov = math.tan(math.radians(fov_deg) / 2)
        fx = 0.5 * width / self._tan_half_fov
        self.K = np.array([[fx, 0, (width - 1) / 2], [0, fx, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)
        self.poses = self._trajectory(rng, path_length, max_rotation_deg)

    # -- geometry -------------------------------------------------------------------------------
    def raycast(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact first hit of rays ``origins + t * dirs`` (world frame, metres).

        Args:
            origins: (N, 3) or (3,) ray origins; dirs: (N, 3) directions (any length, not normalised).

        Returns:
            t: (N,) ray parameter of the first hit (in units of ``dirs``; inf for a miss);
            hit_id: (N,) int64, 0..5 the room faces (ROOM_FACES), 6 + k primitive k of ``self.prims``
            (``self.prim_object`` maps it to its object), MISS (-1) for no hit.
        """
        dirs = np.asarray(dirs)
        dtype = np.float64 if dirs.dtype == np.float64 else np.float32
        dirs = np.ascontiguousarray(dirs, dtype=dtype).reshape(-1, 3)
        origins = np.asarray(origins, dtype=dtype).reshape(-1, 3)
        if origins.shape[0] not in (1, dirs.shape[0]):
            raise ValueError(f"origins must be (3,) or (N, 3) with N = {dirs.shape[0]}, got {origins.shape}")
        t, hit = self._room_exit(np.broadcast_to(origins, dirs.shape), dirs)
        for centre, radius, prim_ids in self._bounds:
            near, far = _sphere_hits(origins, dirs, centre, radius)
            idx = np.flatnonzero((far > _EPS) & (near < t))
            if idx.size == 0:
                continue
            o_sub = origins if origins.shape[0] == 1 else origins[idx]
            d_sub = dirs[idx]
            for k in prim_ids:
                tk = self.prims[k].intersect(o_sub, d_sub)
                closer = tk < t[idx]
                t[idx[closer]] = tk[closer]
                hit[idx[closer]] = NUM_ROOM_FACES + k
        return t, hit

    def _room_exit(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = self.layout.size.astype(o.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_axis = np.where(d > 0, (size - o) / d, np.where(d < 0, -o / d, np.inf))
        inside = ((o >= 0) & (o <= size)).all(-1)
        axis = np.argmin(t_axis, -1)
        t = np.take_along_axis(t_axis, axis[:, None], 1)[:, 0]
        positive = np.take_along_axis(d, axis[:, None], 1)[:, 0] > 0
        # axis z: floor(0)/ceiling(1); axis y: wall y=0 (2)/y=Ly (4); axis x: wall x=0 (5)/x=Lx (3)
        face = np.select(
            [axis == 2, axis == 1, axis == 0],
            [np.where(positive, 1, 0), np.where(positive, 4, 2), np.where(positive, 3, 5)],
        )
        ok = inside & np.isfinite(t)
        return np.where(ok, t, np.inf), np.where(ok, face, MISS).astype(np.int64)

    def render(
        self, K: np.ndarray, cam_to_world: np.ndarray, height: int, width: int, antialias: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render one view.

        Args:
            K: (3, 3) intrinsics; cam_to_world: (4, 4) pose (OpenCV axes, metres).
            height, width: image size in pixels.
            antialias: odd number of rays per pixel along each axis; a pixel's colour is the mean
                of its ``antialias**2`` evenly spaced sub-pixel rays (1: the pixel-centre ray only).

        Returns:
            image (H, W, 3) uint8 RGB and depth (H, W) float32 z-depth in metres (exact ray hits
            through pixel centres, whatever ``antialias``: the middle sub-pixel ray is the centre ray).
        """
        K = np.asarray(K, dtype=np.float64)
        s = _check_antialias(antialias)
        if s > 1:
            # sub-pixel (i, j) of pixel (u, v) sits at u + (i + 0.5) / s - 0.5: the pixel grid of a
            # camera with focal lengths x s and principal point (c + 0.5) s - 0.5
            K = K.copy()
            K[0, :] *= s
            K[1, :] *= s
            K[0, 2] += 0.5 * s - 0.5
            K[1, 2] += 0.5 * s - 0.5
        colour, depth = self._render_rays(K, cam_to_world, height * s, width * s)
        if s > 1:
            colour = colour.reshape(height, s, width, s, 3).mean((1, 3))
            depth = depth[s // 2 :: s, s // 2 :: s]
        image = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return image, np.ascontiguousarray(depth)

    def _render_rays(
        self, K: np.ndarray, cam_to_world: np.ndarray, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shaded colour (H, W, 3) float32 in [0, 1] and z-depth (H, W) of the pixel-centre rays."""
        T = np.asarray(cam_to_world, dtype=np.float64)
        # ray through pixel centre (u, v): R K^-1 (u, v, 1); its camera z component is 1, so the ray
        # parameter of the hit is the z-depth
        M = (T[:3, :3] @ np.linalg.inv(K)).astype(np.float32)
        u = np.arange(width, dtype=np.float32)[None, :]
        v = np.arange(height, dtype=np.float32)[:, None]
        d = np.stack([(M[k, 0] * u + (M[k, 1] * v + M[k, 2])).ravel() for k in range(3)], -1)
        o = T[:3, 3].astype(np.float32)
        t, hit = self.raycast(o, d)
        p = o + t[:, None] * d
        colour = np.empty((len(t), 3), np.float32)
        normal = np.empty((len(t), 3), np.float32)
        order = np.argsort(hit, kind="stable")
        ids, starts = np.unique(hit[order], return_index=True)
        for h, m in zip(ids, np.split(order, starts[1:])):
            colour[m], normal[m] = self._surface_colour(int(h), p[m])
        shade = 0.62 + 0.38 * np.clip(normal @ _LIGHT.astype(np.float32), 0, None)
        # soft darkening near the floor and the ceiling: a fixed function of the 3D point
        lz = float(self.layout.size[2])
        shade *= 0.85 + 0.15 * np.clip(np.minimum(p[:, 2], lz - p[:, 2]) * (1 / 0.6), 0, 1)
        return (colour * shade[:, None]).reshape(height, width, 3), t.reshape(height, width)

    def _surface_colour(self, hit: int, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour (N, 3) and normal (N, 3) of points ``p`` on surface ``hit`` (view-independent)."""
        if hit == MISS:
            return np.zeros_like(p), np.zeros_like(p)
        if hit >= NUM_ROOM_FACES:
            prim = self.prims[hit - NUM_ROOM_FACES]
            uv, n = prim.surface(p)
            material = self.layout.objects[self.prim_object[hit - NUM_ROOM_FACES]].material
            return np.clip(material.shade(uv) * _tint(uv, material.seed), 0, 1), n
        lay = self.layout
        n = np.zeros_like(p)
        if hit in (0, 1):
            uv, mat = p[:, :2], (lay.floor if hit == 0 else lay.ceiling)
            n[:, 2] = 1.0 if hit == 0 else -1.0
        else:
            uv = _wall_uv(hit, p)
            mat = lay.walls
            axis, sign = {2: (1, 1.0), 3: (0, -1.0), 4: (1, -1.0), 5: (0, 1.0)}[hit]
            n[:, axis] = sign
        # low-frequency stains/lighting variation anchored in world coordinates: breaks the exact
        # periodicity of tiles/planks/wallpaper so distant parts of a surface are distinguishable
        stain = 0.8 + 0.4 * _fbm(uv[:, 0] * 0.9, uv[:, 1] * 0.9 + 17.0 * hit, mat.seed + 7, octaves=2)
        colour = mat.shade(uv) * stain[:, None]
        for dec in lay.decals:
            if dec.face != hit:
                continue
            m = (uv[:, 0] >= dec.u0) & (uv[:, 0] < dec.u1) & (uv[:, 1] >= dec.v0) & (uv[:, 1] < dec.v1)
            if m.any():
                local = np.stack(
                    [(uv[m, 0] - dec.u0) / (dec.u1 - dec.u0), (uv[m, 1] - dec.v0) / (dec.v1 - dec.v0)], -1
                )
                colour[m] = dec.material.shade(local)
        return np.clip(colour * _tint(uv + 13.0 * hit, self.seed * 7 + 3), 0, 1), n

    # -- SceneReader ----------------------------------------------------------------------------
    def _load_view(self, i: int) -> View:
        image, depth = self.render(self.K, self.poses[i], self.height, self.width, self.antialias)
        return View(
            image=image,
            depth=depth,
            K=self.K.copy(),
            cam_to_world=self.poses[i].copy(),
            frame_id=self.frame_ids[i],
            index=i,
            source=f"synthetic:{self.seed} frame {i}",
        )

    # -- trajectory -----------------------------------------------------------------------------
    def _free(self, xy: np.ndarray, margin: float) -> np.ndarray:
        """Whether floor positions ``xy`` (N, 2) are at least ``margin`` from walls and object footprints."""
        size = self.layout.size
        ok = (xy >= margin).all(-1) & (xy <= size[:2] - margin).all(-1)
        for obj in self.layout.objects:
            ok &= np.linalg.norm(xy - obj.centre[:2], axis=-1) > obj.radius + margin
        return ok

    def _trajectory(
        self, rng: np.random.Generator, path_length: float, max_rotation_deg: float
    ) -> np.ndarray:
        """Smooth camera-to-world poses (num_frames, 4, 4): Catmull-Rom through free-space keypoints,
        looking at a smoothly moving target in the room; rejected and redrawn if any frame comes too
        close to a surface, looks at a nearby wall or turns more than ``max_rotation_deg`` overall."""
        size = self.layout.size
        n = self.num_frames
        for attempt in range(200):
            margin = 0.45 if attempt < 150 else 0.3
            pts = self._keypoints(rng, path_length, margin)
            if pts is None:
                continue
            targets = np.stack(
                [
                    np.append(rng.uniform(0.25, 0.75, 2) * size[:2], rng.uniform(0.4, 1.3))
                    for _ in range(len(pts))
                ]
            )
            # checks run on a fixed dense sampling of the spline, so the accepted path (and the
            # first view the caption describes) does not depend on num_frames
            s = np.linspace(0.0, len(pts) - 1.0, _PATH_CHECKS)
            pos, tgt = _catmull_rom(pts, s), _catmull_rom(targets, s)
            if not self._free(pos[:, :2], margin * 0.8).all():
                continue
            look = tgt - pos
            horiz = np.linalg.norm(look[:, :2], axis=-1)
            if (horiz < 1.0).any() or (np.abs(np.arctan2(look[:, 2], horiz)) > math.radians(35)).any():
                continue
            check = np.stack([_look_at(p, t) for p, t in zip(pos[::8], tgt[::8])])
            if _max_rotation_deg(check) <= max_rotation_deg and self._views_open(check):
                s = np.linspace(0.0, len(pts) - 1.0, n)
                pos, tgt = _catmull_rom(pts, s), _catmull_rom(targets, s)
                return np.stack([_look_at(p, t) for p, t in zip(pos, tgt)])
        raise RuntimeError(f"synthetic:{self.seed}: no valid camera path found (room too cluttered)")

    def _keypoints(self, rng: np.random.Generator, path_length: float, margin: float) -> np.ndarray | None:
        size = self.layout.size
        count = 4
        step = path_length / (count - 1)
        for _ in range(50):
            start = np.append(rng.uniform(margin, size[:2] - margin), rng.uniform(1.1, 1.7))
            pts = [start]
            heading = rng.uniform(0, 2 * np.pi)
            for _k in range(count - 1):
                for _try in range(20):
                    heading += rng.normal(0, 0.5)
                    nxt = (
                        pts[-1] + np.array([math.cos(heading), math.sin(heading), rng.normal(0, 0.1)]) * step
                    )
                    nxt[2] = np.clip(nxt[2], 1.0, 1.8)
                    if self._free(nxt[None, :2], margin)[0]:
                        break
                else:
                    break
                pts.append(nxt)
            if len(pts) == count:
                return np.stack(pts)
        return None

    def _views_open(self, poses: np.ndarray) -> bool:
        """Every pose sees no surface nearer than 0.3 m and has a median depth of at least 1.2 m.

        Checked on a 9x9 grid of rays over a square field of view of ``fov_deg`` (independent of the
        image size, so the same seed gives the same path at any resolution).
        """
        g = np.linspace(-self._tan_half_fov, self._tan_half_fov, 9)
        uu, vv = np.meshgrid(g, g)
        d_cam = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], -1)
        for T in poses:
            t, _ = self.raycast(T[:3, 3], d_cam @ T[:3, :3].T)
            if t.min() < 0.3 or np.median(t) < 1.2:
                return False
        return True

    # -- caption --------------------------------------------------------------------------------
    def caption(self) -> str:
        """A true one-paragraph description: room size and surfaces, wall decorations, and each object
        with its direction and distance as seen from the first frame."""
        lay = self.layout
        lx, ly, lz = lay.size
        parts = [
            f"A room about {lx:.1f} m by {ly:.1f} m and {lz:.1f} m high with a {lay.floor.words} floor "
            f"and {lay.walls.words} walls."
        ]
        if lay.decals:
            kinds = [d.kind for d in lay.decals]
            counted = [_count_phrase(kinds.count(k), k) for k in dict.fromkeys(kinds)]
            parts.append(f"On the walls: {_join(counted)}.")
        if lay.objects:
            world_to_cam0 = np.linalg.inv(self.poses[0])
            groups: dict[int, list[int]] = {}
            for k, obj in enumerate(lay.objects):
                groups.setdefault(k if obj.twin_of is None else obj.twin_of, []).append(k)
            phrases = []
            for members in groups.values():
                obj = lay.objects[members[0]]
                where = [_relative_place(world_to_cam0, lay.objects[k].centre) for k in members]
                noun = f"{obj.material.words} {obj.kind}"
                if len(members) == 1:
                    phrases.append(f"{_article(noun)} {noun} {where[0]}")
                else:
                    each = ", another ".join(where)
                    phrases.append(f"{_number(len(members))} identical {noun}s, one {each}")
            parts.append("Seen from the first view: " + "; ".join(phrases) + ".")
        return " ".join(parts)


# --------------------------------------------------------------------------------- helpers ----
def _wall_uv(face: int, p: np.ndarray) -> np.ndarray:
    """Wall coordinates (horizontal, height) in metres for points on wall ``face`` (2..5)."""
    horiz = p[:, 0] if face in (2, 4) else p[:, 1]
    return np.stack([horiz, p[:, 2]], -1)


def _catmull_rom(pts: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom spline through ``pts`` (K, D) at parameters ``s`` in [0, K-1]."""
    ext = np.concatenate([2 * pts[:1] - pts[1:2], pts, 2 * pts[-1:] - pts[-2:-1]])
    i = np.clip(np.floor(s).astype(int), 0, len(pts) - 2)
    t = (s - i)[:, None]
    p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
    return 0.5 * (
        2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3
    )


def _max_rotation_deg(poses: np.ndarray, samples: int = 24) -> float:
    """Largest rotation angle (degrees) between any two of ``samples`` evenly spaced poses."""
    R = poses[np.linspace(0, len(poses) - 1, min(samples, len(poses))).round().astype(int), :3, :3]
    cos = (np.einsum("aji,bji->ab", R, R) - 1) / 2  # trace(Ra^T Rb)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).max())


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world (4, 4), OpenCV axes, looking from ``eye`` at ``target`` with world z up."""
    f = (target - eye) / np.linalg.norm(target - eye)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    T = np.eye(4)
    T[:3, :3] = np.stack([r, np.cross(f, r), f], -1)
    T[:3, 3] = eye
    return T


def _relative_place(world_to_cam: np.ndarray, centre: np.ndarray) -> str:
    x, y, z = world_to_cam[:3, :3] @ centre + world_to_cam[:3, 3]
    dist = float(np.linalg.norm([x, y, z]))
    if z <= 0:
        side = "behind the camera"
    else:
        ang = math.degrees(math.atan2(x, z))
        side = "ahead" if abs(ang) < 12 else ("on the left" if ang < 0 else "on the right")
    return f"{side}, about {dist:.1f} m away"


def _number(n: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(n, str(n))


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def _count_phrase(n: int, noun: str) -> str:
    return f"{_article(noun)} {noun}" if n == 1 else f"{_number(n)} {noun}s"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------------- layout ----
def _object_material(rng: np.random.Generator, seed: int) -> Material:
    pattern = ["checker", "stripes", "dots", "noise", "planks", "tiles"][rng.integers(6)]
    name, base = _colour(rng)
    accent_name, accent = _colour(rng, exclude=(name,))
    if pattern == "planks":
        brown = np.asarray(PALETTE["brown"])
        return Material(
            "planks", brown * rng.uniform(0.8, 1.3), brown * 1.6, rng.uniform(0.06, 0.1), seed, "wooden"
        )
    if pattern == "noise":
        return Material("noise", base, base * 0.55, rng.uniform(0.08, 0.2), seed, f"mottled {name}")
    words = f"{name} and {accent_name} {_PATTERN_WORDS.get(pattern, pattern)}"
    if pattern == "tiles":
        words = f"{name} and {accent_name} tiled"
    return Material(pattern, base, accent, rng.uniform(0.08, 0.18), seed, words)


def _room_materials(rng: np.random.Generator, seed: int) -> tuple[Material, Material, Material]:
    brown = np.asarray(PALETTE["brown"])
    floors = [
        Material(
            "planks",
            brown * rng.uniform(0.9, 1.4),
            brown * 1.8,
            rng.uniform(0.14, 0.2),
            seed + 1,
            "wooden plank",
        ),
        Material(
            "tiles", *_two_tones(rng, ("white", "grey", "black")), rng.uniform(0.3, 0.5), seed + 1, "tiled"
        ),
        Material("noise", *_two_tones(rng, ("grey", "teal", "blue", "brown")), 0.25, seed + 1, "carpeted"),
    ]
    floor = floors[rng.integers(len(floors))]
    brick_red = np.asarray((0.62, 0.25, 0.17))
    walls_opts = [
        Material("brick", brick_red, brick_red * 0.7, rng.uniform(0.075, 0.09), seed + 2, "red brick"),
        Material(
            "wallpaper",
            *_two_tones(rng, ("white", "yellow", "pink", "teal", "green", "blue")),
            rng.uniform(0.18, 0.3),
            seed + 2,
            "striped wallpaper",
        ),
        Material(
            "noise", *_two_tones(rng, ("white", "yellow", "pink", "grey"), 0.6), 0.12, seed + 2, "plastered"
        ),
    ]
    walls = walls_opts[rng.integers(len(walls_opts))]
    ceiling = Material(
        "noise", np.array([0.9, 0.9, 0.88]), np.array([0.75, 0.75, 0.74]), 0.5, seed + 3, "white"
    )
    return floor, walls, ceiling


def _two_tones(
    rng: np.random.Generator, names: tuple[str, ...], contrast: float = 0.75
) -> tuple[np.ndarray, np.ndarray]:
    base = np.asarray(PALETTE[names[rng.integers(len(names))]])
    return base, np.clip(base * contrast + 0.1, 0, 1)


def _build_layout(rng: np.random.Generator, num_objects: int | None) -> _Layout:
    size = np.array([rng.uniform(4.5, 7.0), rng.uniform(4.0, 6.5), rng.uniform(2.5, 3.0)])
    floor, walls, ceiling = _room_materials(rng, int(rng.integers(1 << 30)))
    lay = _Layout(size=size, floor=floor, walls=walls, ceiling=ceiling)
    _add_decals(rng, lay)
    n = int(rng.integers(4, 8)) if num_objects is None else num_objects
    kinds = ["crate", "cabinet", "table", "ball", "barrel"]
    for k in range(n):
        kind = kinds[k] if k < len(kinds) else kinds[rng.integers(len(kinds))]
        obj = _place(rng, lay, kind, _object_material(rng, int(rng.integers(1 << 30))))
        if obj is not None:
            lay.objects.append(obj)
    # deliberate look-alikes: copy one or two small objects to another place (another depth)
    small = [k for k, o in enumerate(lay.objects) if o.kind in ("crate", "ball", "barrel")]
    for k in rng.permutation(small)[: int(rng.integers(1, 3))] if small else []:
        twin = _place(rng, lay, lay.objects[k].kind, lay.objects[k].material, like=lay.objects[k])
        if twin is not None:
            twin.twin_of = int(k)
            lay.objects.append(twin)
    return lay


def _add_decals(rng: np.random.Generator, lay: _Layout) -> None:
    lx, ly, lz = lay.size
    brown = np.asarray(PALETTE["brown"])
    wanted = ["window", "painting", "door"] + (["window"] if rng.random() < 0.5 else [])
    for kind in wanted:
        face = int(rng.integers(2, 6))
        wall_len = lx if face in (2, 4) else ly
        if kind == "door":
            w, h, v0 = 0.9, 2.05, 0.0
        elif kind == "window":
            w, h, v0 = rng.uniform(0.9, 1.5), rng.uniform(0.9, 1.3), 0.9
        else:
            w, h, v0 = rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.8), rng.uniform(1.2, 1.6)
        for _ in range(20):
            u0 = rng.uniform(0.3, wall_len - w - 0.3)
            clash = any(d.face == face and u0 < d.u1 + 0.2 and d.u0 < u0 + w + 0.2 for d in lay.decals)
            if not clash:
                break
        else:
            continue
        if kind == "painting":
            mat = _object_material(rng, int(rng.integers(1 << 30)))
            mat = Material("painting", mat.base, mat.accent, 1.0, mat.seed, "painting")
        elif kind == "door":
            mat = Material(
                "door", brown * rng.uniform(0.9, 1.5), brown, 1.0, int(rng.integers(1 << 30)), "door"
            )
        else:
            mat = Material("window", brown, brown, 1.0, 0, "window")
        lay.decals.append(Decal(kind, face, u0, u0 + w, v0, v0 + h, mat))


def _place(
    rng: np.random.Generator, lay: _Layout, kind: str, mat: Material, like: SceneObject | None = None
) -> SceneObject | None:
    """Place one object of ``kind`` without overlapping others (None if no room for it)."""
    lx, ly, lz = lay.size
    shape = like.prims[0] if like is not None else None  # a look-alike copies its source's sizes
    for _ in range(60):
        if kind == "cabinet":
            w, dpt, h = rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.6), rng.uniform(1.2, 2.0)
            wall = int(rng.integers(4))
            along = rng.uniform(w / 2 + 0.1, (lx if wall % 2 == 0 else ly) - w / 2 - 0.1)
            off = dpt / 2 + 0.02
            cx, cy, yaw = [
                (along, off, 0.0),
                (lx - off, along, np.pi / 2),
                (along, ly - off, 0.0),
                (off, along, np.pi / 2),
            ][wall]
            prims = [_Box(np.array([cx, cy, h / 2]), np.array([w / 2, dpt / 2, h / 2]), yaw)]
            radius = 0.5 * math.hypot(w, dpt)
        else:
            cx, cy = rng.uniform(0.5, lx - 0.5), rng.uniform(0.5, ly - 0.5)
            yaw = rng.uniform(0, np.pi)
            if kind == "crate":
                half = shape.half.copy() if shape is not None else rng.uniform(0.15, 0.35, 3)
                prims = [_Box(np.array([cx, cy, half[2]]), half, yaw)]
                radius = float(np.hypot(half[0], half[1]))
            elif kind == "table":
                tw, td, th = rng.uniform(0.5, 0.7), rng.uniform(0.3, 0.45), rng.uniform(0.7, 0.8)
                prims = [_Box(np.array([cx, cy, th - 0.03]), np.array([tw, td, 0.03]), yaw)]
                c, s = math.cos(yaw), math.sin(yaw)
                for sx in (-1, 1):
                    for sy in (-1, 1):
                        lx_, ly_ = sx * (tw - 0.07), sy * (td - 0.07)
                        leg_c = np.array([cx + c * lx_ - s * ly_, cy + s * lx_ + c * ly_, (th - 0.06) / 2])
                        prims.append(_Box(leg_c, np.array([0.03, 0.03, (th - 0.06) / 2]), yaw))
                radius = math.hypot(tw, td)
            elif kind == "ball":
                r = shape.radius if shape is not None else rng.uniform(0.15, 0.35)
                prims = [_Sphere(np.array([cx, cy, r]), r)]
                radius = r
            elif kind == "barrel":
                r, h = (
                    (shape.radius, shape.z1)
                    if shape is not None
                    else (rng.uniform(0.18, 0.32), rng.uniform(0.5, 1.0))
                )
                prims = [_Cylinder(cx, cy, r, 0.0, h)]
                radius = r
            else:
                raise ValueError(kind)
        centre = np.array([cx, cy, 0.0])
        if (
            cx - radius < 0.05 or cy - radius < 0.05 or cx + radius > lx - 0.05 or cy + radius > ly - 0.05
        ) and (kind != "cabinet"):
            continue
        if all(np.linalg.norm(centre[:2] - o.centre[:2]) > radius + o.radius + 0.25 for o in lay.objects):
            top = max(_top(p) for p in prims)
            centre[2] = top / 2
            return SceneObject(kind, mat, prims, centre, radius)
    return None


def _bounding_sphere(prims: list) -> tuple[np.ndarray, float]:
    """A sphere (centre, radius) containing every primitive's own bounding sphere."""
    bounds = [p.bound() for p in prims]
    centre = np.mean([c for c, _ in bounds], axis=0)
    return centre, max(float(np.linalg.norm(c - centre)) + r for c, r in bounds) * 1.001 + 1e-6


def _top(prim) -> float:
    if isinstance(prim, _Box):
        return float(prim.centre[2] + prim.half[2])
    if isinstance(prim, _Sphere):
        return float(prim.centre[2] + prim.radius)
    return float(prim.z1)
