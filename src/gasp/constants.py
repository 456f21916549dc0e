"""Batch keys shared by data loaders, losses, training and probing (one spelling everywhere)."""

FRAMES = "frames"  # (F, H, W, 3) uint8, resized as the VLM sees them
INTRINSICS = "K"  # (F, 3, 3) float32, for the resized frames
CAM_TO_WORLD = "cam_to_world"  # (F, 4, 4) float32, camera-to-world, OpenCV axes, metres
FRAME_INDEX = "frame_index"  # (F,) int64, index of each frame in its source video
TOKEN_DEPTH = "token_depth"  # (F, gh, gw) float32, metres, 0 = no valid depth in the cell
MATCH_INDEX = "match_index"  # (F, gh*gw) int64, flat cell index in frame f matched by each anchor cell
MATCH_VALID = "match_valid"  # (F, gh*gw) bool
MATCH_DEPTH = "match_depth"  # (F, gh*gw) float32, depth of the matched 3D point in frame f's camera
MATCH_SUBCELL = "match_subcell"  # (F, gh*gw, 2) float32, (x, y) position inside the matched cell, [0, 1)
TRACK_QUERY_UV = "track_query_uv"  # (Q, 2) float32, query points in the anchor frame, pixels
TRACK_UV = "track_uv"  # (Q, F, 2) float32, pixel positions in every frame
TRACK_VISIBLE = "track_visible"  # (Q, F) bool
SCENE = "scene"  # str, scene name
SEQUENCE_ID = "sequence_id"  # str, unique key of the sequence
ANCHOR = 0  # the anchor (query) frame is always position 0 of a sequence
