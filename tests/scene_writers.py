"""Writers of synthetic scenes in the on-disk formats of real data sets (test fixtures), and the
geometry check every reader's test uses."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gasp.geometry.cameras import fit_intrinsics
from gasp.geometry.reproject import reproject


def scale_K(K: np.ndarray, src_hw, dst_hw) -> np.ndarray:
    return fit_intrinsics(torch.from_numpy(np.asarray(K, np.float64)), src_hw, dst_hw)[0].numpy()


def save_png16(path: Path, counts: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(counts.astype(np.uint16)).save(path)


def save_rgb(path: Path, image: np.ndarray, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **({"quality": quality} if path.suffix == ".jpg" else {}))


def assert_reprojection_matches(a, b, ta, tb, tol_px: float = 0.5, min_shared: float = 0.9) -> None:
    """Depth-checked reprojection a -> b with the views read back agrees with the synthetic truth's:
    the same pixels are valid (>= ``min_shared`` of the truth's) and land within ``tol_px``."""
    uv, valid = reproject(a.depth, a.K, a.cam_to_world, b.depth, b.K, b.cam_to_world)
    uv_t, valid_t = reproject(ta.depth, ta.K, ta.cam_to_world, tb.depth, tb.K, tb.cam_to_world)
    assert int(valid_t.sum()) > 100, "the two truth frames must overlap"
    both = valid & valid_t
    assert int(both.sum()) >= min_shared * int(valid_t.sum()), (int(both.sum()), int(valid_t.sum()))
    err = (uv - uv_t)[both].norm(dim=-1)
    assert float(err.max()) < tol_px, float(err.max())


# ----------------------------------------------------------------------------------- ScanNet ----
def write_scannet(root: Path, views, depth_hw=(480, 640), colour_hw=(968, 1296)) -> Path:
    """SensReader export; intrinsics files for the .sens resolutions (the views are smaller)."""
    hw = views[0].depth.shape
    for i, v in enumerate(views):
        save_rgb(root / "color" / f"{i}.jpg", v.image)
        save_png16(root / "depth" / f"{i}.png", np.round(v.depth * 1000))
        (root / "pose").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / "pose" / f"{i}.txt", v.cam_to_world, fmt="%.17g")
    for name, size in (("intrinsic_depth.txt", depth_hw), ("intrinsic_color.txt", colour_hw)):
        K4 = np.eye(4)
        K4[:3, :3] = scale_K(views[0].K, hw, size)
        (root / "intrinsic").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / "intrinsic" / name, K4, fmt="%.17g")
    return root


# ------------------------------------------------------------------------------- ARKitScenes ----
def rotation_to_angle_axis(R: np.ndarray) -> np.ndarray:
    angle = np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))
    if angle < 1e-12:
        return np.zeros(3)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def write_arkitscenes(root: Path, views, video: str = "41069021") -> list[str]:
    """Frames at 60 fps from t0; poses offset by 2 ms (within tolerance) plus far-off extra poses;
    returns the frame timestamps as written."""
    stamps, lines = [], []
    for i, v in enumerate(views):
        ts = f"{1000.0 + i / 10:.3f}"
        stamps.append(ts)
        save_rgb(root / "lowres_wide" / f"{video}_{ts}.png", v.image)
        save_png16(root / "lowres_depth" / f"{video}_{ts}.png", np.round(v.depth * 1000))
        h, w = v.depth.shape
        K = v.K
        name = f"{video}_{float(ts) + (0.001 if i == 1 else 0):.3f}.pincam"  # one stamped 1 ms off
        (root / "lowres_wide_intrinsics").mkdir(parents=True, exist_ok=True)
        (root / "lowres_wide_intrinsics" / name).write_text(
            f"{w} {h} " + " ".join(repr(float(x)) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])) + "\n"
        )
        w2c = np.linalg.inv(v.cam_to_world)
        values = [*rotation_to_angle_axis(w2c[:3, :3]), *w2c[:3, 3]]
        lines.append(f"{float(ts) + 0.002:.5f} " + " ".join(repr(float(x)) for x in values))
        lines.append(f"{float(ts) + 0.05:.5f} 0 0 0 9 9 9")  # a pose 50 ms away: never the nearest
    (root / "lowres_wide.traj").write_text("\n".join(lines) + "\n")
    return stamps


# ---------------------------------------------------------------------------------- ScanNet++ ----
def encode_depth_bin(path: Path, depths, layout: str) -> None:
    """depth.bin in one of the layouts: "zlib-stream" (whole file, float32 m), "lz4" (per frame,
    uint16 mm), "zlib-frames" (per frame, float32 m)."""
    import lz4.block

    def deflate(b: bytes) -> bytes:
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return c.compress(b) + c.flush()

    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "zlib-stream":
        path.write_bytes(deflate(b"".join(np.asarray(d, "<f4").tobytes() for d in depths)))
        return
    out = bytearray()
    for d in depths:
        if layout == "lz4":
            block = lz4.block.compress(np.round(d * 1000).astype("<u2").tobytes(), store_size=False)
        else:
            block = deflate(np.asarray(d, "<f4").tobytes())
        out += struct.pack("<I", len(block)) + block
    path.write_bytes(bytes(out))


def write_video(path: Path, images, fps: int = 30) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = images[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
        stream.options = {"g": "2"}  # key frame every 2 frames: seeking is exercised
        for img in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_scannetpp(root: Path, views, layout: str = "lz4", extracted: bool = False) -> Path:
    iphone = root / "iphone"
    iphone.mkdir(parents=True, exist_ok=True)
    hw = views[0].depth.shape
    meta = {}
    for i, v in enumerate(views):
        meta[f"frame_{i:06d}"] = {
            "timestamp": i / 60,
            "intrinsic": scale_K(v.K, hw, (1440, 1920)).tolist(),
            "pose": (np.eye(4) * 7).tolist(),  # the raw ARKit pose: must not be used
            "aligned_pose": v.cam_to_world.tolist(),
            "imu": {},
        }
    (iphone / "pose_intrinsic_imu.json").write_text(json.dumps(meta))
    if extracted:
        for i, v in enumerate(views):
            save_rgb(iphone / "rgb" / f"frame_{i:06d}.jpg", v.image)
            save_png16(iphone / "depth" / f"frame_{i:06d}.png", np.round(v.depth * 1000))
    else:
        write_video(iphone / "rgb.mkv", [v.image for v in views])
        encode_depth_bin(iphone / "depth.bin", [v.depth for v in views], layout)
    return root


# ------------------------------------------------------------------------ COLMAP / nerfstudio ----
def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(qx, qy, qz, qw) of a rotation matrix (Shepperd's method, largest diagonal branch)."""
    m = R
    q = np.empty(4)
    tr = np.trace(m)
    if tr > 0:
        s = 2 * np.sqrt(tr + 1)
        q[:] = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * np.sqrt(1 + m[i, i] - m[j, j] - m[k, k])
        q[i], q[j], q[k] = s / 4, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    return q


def _quat_wxyz(R: np.ndarray) -> np.ndarray:
    x, y, z, w = rotation_to_quaternion(R)
    return np.array([w, x, y, z])


def colmap_points(views, per_frame: int = 60, seed: int = 0):
    """World points sampled from the frames' depth, each observed in its frame and every other frame
    where it is visible: [(xyz, [(frame, u, v), ...]), ...] with (u, v) in gasp pixels."""
    rng = np.random.default_rng(seed)
    points = []
    for v in views:
        H, W = v.depth.shape
        for _ in range(per_frame):
            r, c = int(rng.integers(2, H - 2)), int(rng.integers(2, W - 2))
            d = float(v.depth[r, c])
            ray = np.linalg.inv(v.K) @ [c, r, 1.0]
            X = v.cam_to_world[:3, :3] @ (ray * d) + v.cam_to_world[:3, 3]
            obs = []
            for j, w in enumerate(views):
                T = np.linalg.inv(w.cam_to_world)
                Xc = T[:3, :3] @ X + T[:3, 3]
                if Xc[2] <= 0:
                    continue
                uv = (w.K @ (Xc / Xc[2]))[:2]
                ri, ci = int(round(uv[1])), int(round(uv[0]))
                if 0 <= ri < H and 0 <= ci < W and abs(w.depth[ri, ci] - Xc[2]) < 0.01 * Xc[2]:
                    obs.append((j, uv[0], uv[1]))
            if len(obs) >= 2:
                points.append((X, obs))
    return points


def write_colmap_model(folder: Path, views, names, binary: bool, cameras=None, points=None) -> None:
    """A COLMAP model (legacy three-file layout) of the views; camera i = PINHOLE of view i unless
    ``cameras`` gives (model_id, model_name, width, height, params) per view (COLMAP pixel convention)."""
    folder.mkdir(parents=True, exist_ok=True)
    points = colmap_points(views) if points is None else points
    if cameras is None:
        cameras = []
        for v in views:
            H, W = v.depth.shape
            K = v.K
            cameras.append((1, "PINHOLE", W, H, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5]))
    obs_by_image: list[list] = [[] for _ in views]
    tracks = []
    for pid, (_, obs) in enumerate(points, start=1):
        track = []
        for j, u, v in obs:
            track.append((j + 1, len(obs_by_image[j])))
            obs_by_image[j].append((u + 0.5, v + 0.5, pid))
        tracks.append(track)
    poses = []
    for v in views:
        w2c = np.linalg.inv(v.cam_to_world)
        poses.append((_quat_wxyz(w2c[:3, :3]), w2c[:3, 3]))
    if binary:
        with open(folder / "cameras.bin", "wb") as f:
            f.write(struct.pack("<Q", len(cameras)))
            for cid, (mid, _, W, H, params) in enumerate(cameras, start=1):
                f.write(struct.pack("<iiQQ", cid, mid, W, H) + struct.pack(f"<{len(params)}d", *params))
        with open(folder / "images.bin", "wb") as f:
            f.write(struct.pack("<Q", len(views)))
            for i, ((q, t), name) in enumerate(zip(poses, names)):
                f.write(struct.pack("<i7di", i + 1, *q, *t, i + 1) + name.encode() + b"\0")
                f.write(struct.pack("<Q", len(obs_by_image[i])))
                for u, v, pid in obs_by_image[i]:
                    f.write(struct.pack("<ddq", u, v, pid))
        with open(folder / "points3D.bin", "wb") as f:
            f.write(struct.pack("<Q", len(points)))
            for pid, ((X, _), track) in enumerate(zip(points, tracks), start=1):
                f.write(struct.pack("<Q3d3Bd", pid, *X, 128, 128, 128, 0.5) + struct.pack("<Q", len(track)))
                for img, idx in track:
                    f.write(struct.pack("<ii", img, idx))
        return
    lines = ["# Camera list with one line of data per camera:"]
    for cid, (_, model, W, H, params) in enumerate(cameras, start=1):
        lines.append(f"{cid} {model} {W} {H} " + " ".join(repr(float(p)) for p in params))
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:"]
    for i, ((q, t), name) in enumerate(zip(poses, names)):
        lines.append(f"{i + 1} " + " ".join(repr(float(x)) for x in (*q, *t)) + f" {i + 1} {name}")
        lines.append(" ".join(f"{float(u)!r} {float(v)!r} {pid}" for u, v, pid in obs_by_image[i]))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:"]
    for pid, ((X, _), track) in enumerate(zip(points, tracks), start=1):
        tr = " ".join(f"{img} {idx}" for img, idx in track)
        lines.append(f"{pid} " + " ".join(repr(float(x)) for x in X) + f" 128 128 128 0.5 {tr}")
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")


def write_dl3dv(root: Path, views, factor: int = 4, camera_model: str = "PINHOLE", dist=None) -> Path:
    """nerfstudio transforms.json for images ``factor`` x larger than the views, OpenGL axes; the
    views' images in images_<factor>/ (named under images/ in the json, as DL3DV does)."""
    H, W = views[0].depth.shape
    K = scale_K(views[0].K, (H, W), (H * factor, W * factor))
    meta = {
        "w": W * factor, "h": H * factor, "fl_x": K[0, 0], "fl_y": K[1, 1],
        "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5, "camera_model": camera_model, "frames": [],
    }  # fmt: skip
    meta.update(dist or {})
    for i, v in enumerate(views):
        name = f"frame_{i + 1:05d}.png"
        save_rgb(root / f"images_{factor}" / name, v.image)
        c2w_gl = v.cam_to_world @ np.diag([1.0, -1.0, -1.0, 1.0])
        meta["frames"].append({"file_path": f"images/{name}", "transform_matrix": c2w_gl.tolist()})
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def write_annotated_depth(depth_root: Path, frame_id: str, depth: np.ndarray) -> None:
    from PIL.PngImagePlugin import PngInfo

    from gasp.data.sfm import UNIT_KEY, encode_depth_png

    counts, unit = encode_depth_png(depth)
    info = PngInfo()
    info.add_text(UNIT_KEY, repr(unit))
    (depth_root / "depth").mkdir(parents=True, exist_ok=True)
    Image.fromarray(counts).save(depth_root / "depth" / f"{frame_id}.png", pnginfo=info)
