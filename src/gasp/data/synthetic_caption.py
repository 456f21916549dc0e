"""Captions of the synthetic rooms: a true description of a layout as seen from one camera."""

from __future__ import annotations

import math

import numpy as np

from gasp.data.synthetic_layout import _Layout


def describe(layout: _Layout, cam_to_world: np.ndarray) -> str:
    """A true one-paragraph description: room size and surfaces, wall decorations, and each object
    with its direction and distance as seen from the camera ``cam_to_world`` (4, 4)."""
    lx, ly, lz = layout.size
    parts = [
        f"A room about {lx:.1f} m by {ly:.1f} m and {lz:.1f} m high with a {layout.floor.words} floor "
        f"and {layout.walls.words} walls."
    ]
    if layout.decals:
        kinds = [d.kind for d in layout.decals]
        counted = [_count_phrase(kinds.count(k), k) for k in dict.fromkeys(kinds)]
        parts.append(f"On the walls: {_join(counted)}.")
    if layout.objects:
        world_to_cam0 = np.linalg.inv(cam_to_world)
        groups: dict[int, list[int]] = {}
        for k, obj in enumerate(layout.objects):
            groups.setdefault(k if obj.twin_of is None else obj.twin_of, []).append(k)
        phrases = []
        for members in groups.values():
            obj = layout.objects[members[0]]
            where = [_relative_place(world_to_cam0, layout.objects[k].centre) for k in members]
            noun = f"{obj.material.words} {obj.kind}"
            if len(members) == 1:
                phrases.append(f"{_article(noun)} {noun} {where[0]}")
            else:
                each = ", another ".join(where)
                phrases.append(f"{_number(len(members))} identical {noun}s, one {each}")
        parts.append("Seen from the first view: " + "; ".join(phrases) + ".")
    return " ".join(parts)


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
