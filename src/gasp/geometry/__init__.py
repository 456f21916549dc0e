"""Pure torch geometry (no I/O): cameras, depth-checked reprojection, tracks, token-grid targets.

Conventions used throughout: pixel ``(u, v) = (column, row)`` with integer coordinates at pixel
centres; ``K`` 3x3; poses 4x4 camera-to-world, OpenCV axes (x right, y down, z forward), metres; depth
in metres along z, ``0`` or non-finite = invalid. Functions accept numpy or torch and return torch;
leading batch dimensions broadcast.
"""

from gasp.geometry.cameras import (
    fit_intrinsics,
    invert_pose,
    is_rigid_pose,
    project,
    relative_pose,
    resize_depth,
    resize_image,
    transform_points,
    unproject,
)
from gasp.geometry.reproject import reproject, reproject_points, sample_depth_nearest
from gasp.geometry.sampling import draw_num_frames, overlap_fraction, sample_sequence
from gasp.geometry.token_grid import TokenTargets, cell_median_depth, cell_of, token_targets
from gasp.geometry.tracks import Tracks, compute_tracks, follow_points, grid_points

__all__ = [
    "TokenTargets",
    "Tracks",
    "cell_median_depth",
    "cell_of",
    "compute_tracks",
    "draw_num_frames",
    "fit_intrinsics",
    "follow_points",
    "grid_points",
    "invert_pose",
    "is_rigid_pose",
    "overlap_fraction",
    "project",
    "relative_pose",
    "reproject",
    "reproject_points",
    "resize_depth",
    "resize_image",
    "sample_depth_nearest",
    "sample_sequence",
    "token_targets",
    "transform_points",
    "unproject",
]
