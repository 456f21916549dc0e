"""Random layout of a synthetic room: its size and materials, wall decals and placed objects.

``_build_layout`` draws everything from a seeded generator: furniture-like objects that do not
overlap, plus deliberate look-alikes (an object copied to another place and depth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gasp.data.synthetic_materials import PALETTE, Material, _object_material, _room_materials
from gasp.data.synthetic_shapes import _Box, _Cylinder, _Sphere, _top


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
