"""Drawing helpers shared by `gasp show-matches`, the probe figures and the demo (PIL + numpy).

Conventions: images are ``(H, W, 3)`` uint8 RGB numpy arrays; pixel ``(u, v) = (column, row)`` with
integer coordinates at pixel centres (as in gasp.geometry). Every function returns a new array.

- :func:`flow_to_rgb` colours 2-D displacements: hue = direction, saturation = length (white = no
  motion), grey = invalid. :func:`flow_wheel` draws the matching legend.
- :func:`token_displacement` turns token-grid matches (``match_index`` + ``match_subcell``, as stored
  computed from prepared data or predicted by a probe) into per-cell pixel displacements.
- :func:`draw_matches` puts two frames side by side with one coloured line per correspondence.
- :func:`upsample_cells`, :func:`blend`, :func:`stack`, :func:`titled`, :func:`save_png` compose figures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gasp.geometry.tracks import grid_points

INVALID_GREY = (128, 128, 128)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; inputs in [0, 1], output float in [0, 1] with a trailing axis of 3."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros((*h.shape, 3), dtype=np.float64)
    for k, (r, g, b) in enumerate(table):
        m = i == k
        out[m] = np.stack([r[m], g[m], b[m]], axis=-1)
    return out


def flow_to_rgb(
    flow: np.ndarray,
    valid: np.ndarray | None = None,
    max_magnitude: float | None = None,
    invalid_color: tuple[int, int, int] = INVALID_GREY,
) -> np.ndarray:
    """Colour displacements: hue = direction, saturation = length / ``max_magnitude``.

    Args:
        flow: ``(..., 2)`` displacements ``(du, dv)`` in pixels (any leading shape: a grid or a list).
        valid: ``(...)`` bool; invalid entries (and non-finite flow) get ``invalid_color``.
        max_magnitude: length that maps to full saturation; default the largest valid length.

    Returns:
        ``(..., 3)`` uint8 RGB. Zero displacement is white; right = red, down = yellow-green,
        left = cyan, up = violet (see :func:`flow_wheel`).
    """
    flow = np.asarray(flow, dtype=np.float64)
    ok = np.isfinite(flow).all(-1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    du = np.where(ok, flow[..., 0], 0.0)
    dv = np.where(ok, flow[..., 1], 0.0)
    mag = np.hypot(du, dv)
    if max_magnitude is None:
        max_magnitude = float(mag[ok].max()) if ok.any() else 1.0
    hue = (np.arctan2(dv, du) / (2 * np.pi)) % 1.0
    sat = np.clip(mag / max(max_magnitude, 1e-9), 0.0, 1.0)
    rgb = np.round(_hsv_to_rgb(hue, sat, np.ones_like(hue)) * 255).astype(np.uint8)
    rgb[~ok] = invalid_color
    return rgb


def flow_wheel(size: int = 64, invalid_color: tuple[int, int, int] = INVALID_GREY) -> np.ndarray:
    """Legend of :func:`flow_to_rgb`: the colour of a displacement from the centre to each pixel.

    Returns:
        ``(size, size, 3)`` uint8; pixels outside the unit disc are ``invalid_color``.
    """
    c = (size - 1) / 2.0
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([u - c, v - c], axis=-1)
    inside = np.hypot(flow[..., 0], flow[..., 1]) <= c
    return flow_to_rgb(flow, inside, max_magnitude=c, invalid_color=invalid_color)


def token_displacement(
    match_index: np.ndarray,
    valid: np.ndarray,
    grid: tuple[int, int],
    image_hw: tuple[int, int],
    match_subcell: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel displacement from each anchor cell's centre to its match in another frame.

    Args:
        match_index: ``(gh*gw,)`` int, flat index of the matched cell (``-1``/anything where invalid).
        valid: ``(gh*gw,)`` bool.
        grid: ``(gh, gw)``.
        image_hw: ``(H, W)`` of the frames.
        match_subcell: ``(gh*gw, 2)`` ``(x, y)`` in ``[0, 1)`` inside the matched cell; ``None`` puts the
            match at the cell centre (e.g. an argmax prediction).

    Returns:
        ``(gh, gw, 2)`` float64 displacement ``(du, dv)`` in pixels (0 where invalid) and ``(gh, gw)``
        bool validity.
    """
    (gh, gw), (h, w) = grid, image_hw
    valid = np.asarray(valid, dtype=bool).reshape(-1)
    idx = np.where(valid, np.asarray(match_index).reshape(-1), 0)
    sub = np.full((gh * gw, 2), 0.5) if match_subcell is None else np.asarray(match_subcell, np.float64)
    r, c = np.divmod(idx, gw)
    target = np.stack([(c + sub[:, 0]) * w / gw - 0.5, (r + sub[:, 1]) * h / gh - 0.5], axis=-1)
    centres = grid_points(image_hw, grid).numpy().astype(np.float64)
    disp = np.where(valid[:, None], target - centres, 0.0)
    return disp.reshape(gh, gw, 2), valid.reshape(gh, gw)


def upsample_cells(cells: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Paint a ``(gh, gw, C)`` grid onto ``(H, W, C)`` pixels; cell ``(r, c)`` covers rows
    ``[r*H/gh, (r+1)*H/gh)`` and columns likewise (cells need not be whole pixels)."""
    gh, gw = cells.shape[:2]
    h, w = image_hw
    rows = np.minimum((np.arange(h) + 0.5) * gh / h, gh - 1).astype(np.int64)
    cols = np.minimum((np.arange(w) + 0.5) * gw / w, gw - 1).astype(np.int64)
    return cells[rows][:, cols]


def point_colors(uv: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Distinct colours for points by where they lie in the image (hue = angle around the centre,
    saturation = distance), so neighbouring points get similar colours and lines are easy to follow.

    Returns:
        ``(N, 3)`` uint8.
    """
    h, w = image_hw
    uv = np.asarray(uv, dtype=np.float64)
    offset = (uv - [(w - 1) / 2.0, (h - 1) / 2.0]) / [max(w, 1) / 2.0, max(h, 1) / 2.0]
    rgb = flow_to_rgb(offset, max_magnitude=1.0)
    # darken a little so lines stay visible on bright images
    return (rgb.astype(np.float64) * 0.85).astype(np.uint8)


def resize_nearest(image: np.ndarray, scale: int) -> np.ndarray:
    """Enlarge an image ``scale`` times by repeating pixels (keeps cell edges sharp)."""
    return np.repeat(np.repeat(np.asarray(image), scale, axis=0), scale, axis=1) if scale > 1 else image


def draw_matches(
    image_a: np.ndarray,
    image_b: np.ndarray,
    uv_a: np.ndarray,
    uv_b: np.ndarray,
    valid: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    scale: int = 1,
    gap: int = 8,
    line_width: int = 1,
    radius: int = 2,
) -> np.ndarray:
    """Two images side by side with one line from ``uv_a[i]`` (left) to ``uv_b[i]`` (right).

    Args:
        image_a, image_b: ``(H, W, 3)`` uint8 (heights may differ; the canvas takes the larger).
        uv_a, uv_b: ``(N, 2)`` pixel coordinates in each image.
        valid: ``(N,)`` bool; only valid pairs are drawn (default: all with finite coordinates).
        colors: ``(N, 3)`` uint8 per pair; default :func:`point_colors` of ``uv_a``.
        scale: integer enlargement of both images (coordinates are scaled to match).
        gap: white columns between the images.
        line_width, radius: line width and end-point disc radius, in output pixels.

    Returns:
        ``(max(Ha, Hb) * scale, (Wa + Wb) * scale + gap, 3)`` uint8.
    """
    a, b = resize_nearest(image_a, scale), resize_nearest(image_b, scale)
    canvas = stack([a, b], axis=1, gap=gap)
    uv_a = np.asarray(uv_a, dtype=np.float64)
    uv_b = np.asarray(uv_b, dtype=np.float64)
    ok = np.isfinite(uv_a).all(-1) & np.isfinite(uv_b).all(-1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if colors is None:
        colors = point_colors(uv_a, image_a.shape[:2])
    im = Image.fromarray(canvas)
    draw = ImageDraw.Draw(im)
    x_off = a.shape[1] + gap
    for i in np.flatnonzero(ok):
        pa = tuple(scale * (uv_a[i] + 0.5))  # pixel centre -> continuous canvas coordinates
        pb = (x_off + scale * (uv_b[i, 0] + 0.5), scale * (uv_b[i, 1] + 0.5))
        color = tuple(int(x) for x in colors[i])
        draw.line([pa, pb], fill=color, width=line_width)
        for x, y in (pa, pb):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
    return np.asarray(im)


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * overlay`` as uint8 (same shapes)."""
    mixed = (1.0 - alpha) * image.astype(np.float64) + alpha * overlay.astype(np.float64)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def stack(images: Sequence[np.ndarray], axis: int = 1, gap: int = 8, fill: int = 255) -> np.ndarray:
    """Place images in a row (``axis=1``) or column (``axis=0``), ``gap`` pixels of ``fill`` between;
    smaller ones are padded at the bottom/right."""
    other = 1 - axis
    size = max(im.shape[other] for im in images)
    parts: list[np.ndarray] = []
    for k, im in enumerate(images):
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[other] = (0, size - im.shape[other])
        parts.append(np.pad(im, pad, constant_values=fill))
        if gap and k < len(images) - 1:
            shape = [0, 0, 3]
            shape[axis], shape[other] = gap, size
            parts.append(np.full(shape, fill, dtype=np.uint8))
    return np.concatenate(parts, axis=axis)


TITLE_HEIGHT = 16


def titled(image: np.ndarray, text: str, height: int = TITLE_HEIGHT) -> np.ndarray:
    """Add a white band of ``height`` pixels above ``image`` with ``text`` in black (PIL's default font)."""
    band = Image.new("RGB", (image.shape[1], height), (255, 255, 255))
    ImageDraw.Draw(band).text((2, 2), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(band), image], axis=0)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` as a PNG atomically (``.tmp`` then ``os.replace``); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
