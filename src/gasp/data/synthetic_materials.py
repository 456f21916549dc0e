"""Procedural textures of the synthetic rooms: noise, the surface colour variation, materials.

Every colour is a function of surface coordinates (metres) and a seed, so one 3D point looks the
same from every view. Also the random choice of object and room materials from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


# ------------------------------------------------------------------------ random choice ----
def _colour(rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> tuple[str, np.ndarray]:
    names = [n for n in PALETTE if n not in exclude]
    name = names[rng.integers(len(names))]
    jitter = rng.uniform(-0.05, 0.05, 3)
    return name, np.clip(np.asarray(PALETTE[name]) + jitter, 0, 1)


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
