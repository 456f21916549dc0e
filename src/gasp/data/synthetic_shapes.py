"""Ray-traced primitives of the synthetic rooms' objects: boxes, spheres and vertical cylinders.

Each primitive answers ``intersect`` (ray parameter of the entry point), ``surface`` (surface
coordinates and normals of hit points) and ``bound`` (a bounding sphere).
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-6


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
