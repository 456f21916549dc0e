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

This module holds the scene itself (ray casting, rendering, the camera trajectory) and re-exports
the public names of its parts: ``synthetic_materials`` (noise, textures, materials),
``synthetic_shapes`` (ray-traced primitives), ``synthetic_layout`` (the random room layout),
``synthetic_camera`` (look-at poses, splines) and ``synthetic_caption`` (the room's description).
"""

from __future__ import annotations

import math

import numpy as np

from gasp.data.synthetic_camera import _catmull_rom, _look_at, _max_rotation_deg
from gasp.data.synthetic_caption import describe
from gasp.data.synthetic_layout import Decal, SceneObject, _build_layout
from gasp.data.synthetic_materials import (
    PALETTE,
    PATTERNS,
    TINT_AMPLITUDE,
    TINT_FREQUENCY,
    Material,
    _fbm,
    _tint,
)
from gasp.data.synthetic_shapes import _EPS, _bounding_sphere, _sphere_hits
from gasp.data.views import SceneReader, View
from gasp.errors import ConfigError

__all__ = [
    "MISS",
    "NUM_ROOM_FACES",
    "PALETTE",
    "PATTERNS",
    "ROOM_FACES",
    "TINT_AMPLITUDE",
    "TINT_FREQUENCY",
    "Decal",
    "Material",
    "SceneObject",
    "SyntheticScene",
]

ROOM_FACES = ("floor", "ceiling", "wall y=0", "wall x=Lx", "wall y=Ly", "wall x=0")
NUM_ROOM_FACES = len(ROOM_FACES)
MISS = -1  # hit id of a ray that hits nothing (only possible from outside the room)
_LIGHT = np.array([0.35, -0.5, 0.8]) / np.linalg.norm([0.35, -0.5, 0.8])
_PATH_CHECKS = 193  # spline samples checked for free space (every 8th also for an open view)


def _check_antialias(antialias: int) -> int:
    """``antialias`` as an int; ConfigError unless it is odd and >= 1 (the middle ray is the centre)."""
    if antialias < 1 or antialias % 2 == 0:
        raise ConfigError(f"antialias must be an odd number >= 1, got {antialias}")
    return int(antialias)


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
        return describe(self.layout, self.poses[0])


# --------------------------------------------------------------------------------- helpers ----
def _wall_uv(face: int, p: np.ndarray) -> np.ndarray:
    """Wall coordinates (horizontal, height) in metres for points on wall ``face`` (2..5)."""
    horiz = p[:, 0] if face in (2, 4) else p[:, 1]
    return np.stack([horiz, p[:, 2]], -1)
