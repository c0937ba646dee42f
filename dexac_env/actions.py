"""The 57-DoF two-hand action: layout, names, frames of reference, conversions.

Layout (DESIGN.md):

| slice | family | content |
| ----- | ------ | ------- |
| 0:9   | head   | camera position xyz (m) + camera rotation as 6D |
| 9:18  | wrist  | left wrist position xyz + 6D rotation |
| 18:27 | wrist  | right wrist position xyz + 6D rotation |
| 27:42 | finger | left fingertips xyz: thumb, index, middle, ring, little |
| 42:57 | finger | right fingertips xyz, same order |

Conventions, stated once here and used everywhere:

- **Camera frame** is the pinhole convention: x right, y down, z forward. The head pose is
  the camera-to-world transform in that convention. (ARKit/EgoDex cameras look down -z with
  y up: importers convert with ``ARKIT_TO_PINHOLE`` before calling anything here.)
- **Episode frame** is the first camera pose of the episode. Head and wrist poses are
  expressed in it, so ``action[0, 0:9]`` is always position 0 and identity rotation.
- **Fingertips** are expressed in their own wrist's frame: ``R_wrist^T (p_tip - p_wrist)``.
- **6D rotation** is column 0 then column 1 of the rotation matrix:
  ``[r00, r10, r20, r01, r11, r21]``; back to a matrix by Gram-Schmidt.
- **Time**: ``action[t]`` is the pose that frame ``t`` shows; ``action[0]`` is the start pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

ACTION_DIM = 57
HEAD = slice(0, 9)
LEFT_WRIST = slice(9, 18)
RIGHT_WRIST = slice(18, 27)
LEFT_FINGERS = slice(27, 42)
RIGHT_FINGERS = slice(42, 57)
FINGER_NAMES = ("thumb", "index", "middle", "ring", "little")
FAMILY_NAMES = ("head", "wrist", "finger")

# Family id (index into FAMILY_NAMES) of every action dimension, shape (57,).
FAMILY_INDEX = np.array([0] * 9 + [1] * 18 + [2] * 30, dtype=np.int64)
FAMILY_SLICES = {
    "head": [HEAD],
    "wrist": [LEFT_WRIST, RIGHT_WRIST],
    "finger": [LEFT_FINGERS, RIGHT_FINGERS],
}


def _bounds() -> np.ndarray:
    high = np.ones(ACTION_DIM, dtype=np.float32)  # 6D rotation entries: unit columns
    for dims in (HEAD, LEFT_WRIST, RIGHT_WRIST):
        high[dims.start : dims.start + 3] = 2.0  # metres from the episode frame's origin
    high[LEFT_FINGERS] = 0.3  # metres from their wrist (a hand is ~0.19 m long)
    high[RIGHT_FINGERS] = 0.3
    return high


# The bounds of the one action space of every env (DexACSim-v0, DexACWorld-v0, DexACReplay-v0):
# plausibility limits that hold any recorded two-hand episode (head and wrists within 2 m of the
# first camera pose, fingertips within 0.3 m of their wrist, 6D entries in [-1, 1]).
ACTION_HIGH = _bounds()
ACTION_LOW = -ACTION_HIGH

# Converts an ARKit camera frame (x right, y up, z backward) to the pinhole frame.
ARKIT_TO_PINHOLE = np.diag([1.0, -1.0, -1.0, 1.0])

# The 12 tracked keypoints (2D/3D keypoints in the store and the simulator use this order).
KEYPOINT_NAMES = (
    ("left_wrist",)
    + tuple(f"left_{f}_tip" for f in FINGER_NAMES)
    + ("right_wrist",)
    + tuple(f"right_{f}_tip" for f in FINGER_NAMES)
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
# A point behind or this close to the camera plane is never visible (metres).
MIN_DEPTH = 1e-3


def _pose_names(prefix: str) -> list[str]:
    return [f"{prefix}.pos.{a}" for a in "xyz"] + [f"{prefix}.rot6d.{i}" for i in range(6)]


def _tip_names(side: str) -> list[str]:
    return [f"{side}.{f}_tip.{a}" for f in FINGER_NAMES for a in "xyz"]


DIM_NAMES: tuple[str, ...] = tuple(
    _pose_names("head")
    + _pose_names("left_wrist")
    + _pose_names("right_wrist")
    + _tip_names("left")
    + _tip_names("right")
)
assert len(DIM_NAMES) == ACTION_DIM and len(set(DIM_NAMES)) == ACTION_DIM


def family_of(dim: int) -> str:
    """Family name ("head", "wrist" or "finger") of action dimension ``dim``."""
    return FAMILY_NAMES[int(FAMILY_INDEX[dim])]


def family_mask(family: str) -> np.ndarray:
    """Boolean mask of shape (57,) selecting the dimensions of ``family``."""
    if family not in FAMILY_NAMES:
        raise ValueError(f"family must be one of {FAMILY_NAMES}, got {family!r}")
    return FAMILY_INDEX == FAMILY_NAMES.index(family)


def check_actions(actions: np.ndarray, name: str = "actions") -> np.ndarray:
    """Validate an action array of shape (..., 57): finite numbers. Returns it as an array."""
    actions = np.asarray(actions)
    if actions.ndim == 0 or actions.shape[-1] != ACTION_DIM:
        raise ValueError(f"{name} must have shape (..., {ACTION_DIM}), got {actions.shape}")
    if not np.issubdtype(actions.dtype, np.number) or np.issubdtype(
        actions.dtype, np.complexfloating
    ):
        raise ValueError(f"{name} must be real numbers, got dtype {actions.dtype}")
    if not np.all(np.isfinite(actions)):
        bad = np.argwhere(~np.isfinite(actions))[0]
        raise ValueError(
            f"{name} must be finite, found {actions[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
            f" ({DIM_NAMES[int(bad[-1])]})"
        )
    return actions


def action_space() -> spaces.Box:
    """``Box(ACTION_LOW, ACTION_HIGH, (57,), float32)``: the action space of every env (a new
    instance each call, so seeding one env's space leaves the others alone)."""
    return spaces.Box(ACTION_LOW, ACTION_HIGH, (ACTION_DIM,), np.float32)


# ---------------------------------------------------------------------------------------------
# Rotations
# ---------------------------------------------------------------------------------------------


def rot6d_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 6): column 0 then column 1."""
    rotation = np.asarray(rotation)
    if rotation.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape (..., 3, 3), got {rotation.shape}")
    return np.concatenate([rotation[..., :, 0], rotation[..., :, 1]], axis=-1)


def matrix_from_rot6d(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) rotation matrices by Gram-Schmidt on the two columns."""
    rot6d = np.asarray(rot6d, dtype=np.float64)
    if rot6d.shape[-1] != 6:
        raise ValueError(f"rot6d must have shape (..., 6), got {rot6d.shape}")
    a, b = rot6d[..., 0:3], rot6d[..., 3:6]
    x = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b - np.sum(x * b, axis=-1, keepdims=True) * x
    y = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


def matrix_from_quat_wxyz(quat: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions ordered w, x, y, z -> (..., 3, 3) rotation matrices."""
    q = np.asarray(quat, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternion must have shape (..., 4) as w, x, y, z, got {q.shape}")
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def se3(rotation: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Build (..., 4, 4) homogeneous transforms from (..., 3, 3) rotations and (..., 3) positions."""
    rotation, position = np.asarray(rotation), np.asarray(position)
    out = np.zeros(rotation.shape[:-2] + (4, 4), dtype=np.float64)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = position
    out[..., 3, 3] = 1.0
    return out


def invert_se3(transform: np.ndarray) -> np.ndarray:
    """Inverse of (..., 4, 4) rigid transforms."""
    rot_t = np.swapaxes(transform[..., :3, :3], -1, -2)
    return se3(rot_t, -np.einsum("...ij,...j->...i", rot_t, transform[..., :3, 3]))


# ---------------------------------------------------------------------------------------------
# Poses <-> actions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldPoses:
    """World-frame poses of one episode (all float64, metres).

    camera, left_wrist, right_wrist: (T, 4, 4) SE(3) transforms (camera in the pinhole
    convention); left_tips, right_tips: (T, 5, 3) fingertip positions, order FINGER_NAMES.
    """

    camera: np.ndarray
    left_wrist: np.ndarray
    right_wrist: np.ndarray
    left_tips: np.ndarray
    right_tips: np.ndarray

    def keypoints_3d(self) -> np.ndarray:
        """(T, 12, 3) world positions in KEYPOINT_NAMES order."""
        return np.concatenate(
            [
                self.left_wrist[:, None, :3, 3],
                self.left_tips,
                self.right_wrist[:, None, :3, 3],
                self.right_tips,
            ],
            axis=1,
        )


def _check_transforms(name: str, value: np.ndarray, length: int | None) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if value.ndim != 3 or value.shape[1:] != (4, 4):
        raise ValueError(f"{name} must have shape (T, 4, 4), got {value.shape}")
    if length is not None and value.shape[0] != length:
        raise ValueError(f"{name} has {value.shape[0]} frames, expected {length}")
    return value


def _check_tips(name: str, value: np.ndarray, length: int) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (length, 5, 3):
        raise ValueError(f"{name} must have shape ({length}, 5, 3), got {value.shape}")
    return value


def poses_to_actions(poses: WorldPoses, reference: np.ndarray | None = None) -> np.ndarray:
    """World-frame poses -> (T, 57) float64 actions in our frames.

    ``reference`` is the world pose (4, 4) of the episode frame; by default the first camera
    pose. Head and wrists are expressed in it; fingertips in their own wrist's frame.
    """
    camera = _check_transforms("camera", poses.camera, None)
    length = camera.shape[0]
    left_wrist = _check_transforms("left_wrist", poses.left_wrist, length)
    right_wrist = _check_transforms("right_wrist", poses.right_wrist, length)
    left_tips = _check_tips("left_tips", poses.left_tips, length)
    right_tips = _check_tips("right_tips", poses.right_tips, length)
    world_to_episode = invert_se3(camera[0] if reference is None else np.asarray(reference))

    actions = np.zeros((length, ACTION_DIM), dtype=np.float64)
    for dims, world_pose in ((HEAD, camera), (LEFT_WRIST, left_wrist), (RIGHT_WRIST, right_wrist)):
        local = world_to_episode @ world_pose  # (T, 4, 4)
        actions[:, dims.start : dims.start + 3] = local[:, :3, 3]
        actions[:, dims.start + 3 : dims.stop] = rot6d_from_matrix(local[:, :3, :3])
    for dims, wrist, tips in (
        (LEFT_FINGERS, left_wrist, left_tips),
        (RIGHT_FINGERS, right_wrist, right_tips),
    ):
        rel = tips - wrist[:, None, :3, 3]  # (T, 5, 3) world offsets
        local = np.einsum("tji,tkj->tki", wrist[:, :3, :3], rel)  # R^T (p_tip - p_wrist)
        actions[:, dims] = local.reshape(length, 15)
    return actions


def _pose_from_dims(actions: np.ndarray, dims: slice) -> np.ndarray:
    rotation = matrix_from_rot6d(actions[:, dims.start + 3 : dims.stop])
    return se3(rotation, actions[:, dims.start : dims.start + 3])


def actions_to_poses(actions: np.ndarray, reference: np.ndarray | None = None) -> WorldPoses:
    """(T, 57) actions -> world-frame poses; ``reference`` is the episode frame (default I)."""
    actions = check_actions(np.asarray(actions, dtype=np.float64))
    if actions.ndim != 2:
        raise ValueError(f"actions must have shape (T, {ACTION_DIM}), got {actions.shape}")
    episode_to_world = np.eye(4) if reference is None else np.asarray(reference, dtype=np.float64)
    camera = episode_to_world @ _pose_from_dims(actions, HEAD)
    left_wrist = episode_to_world @ _pose_from_dims(actions, LEFT_WRIST)
    right_wrist = episode_to_world @ _pose_from_dims(actions, RIGHT_WRIST)

    def tips(dims: slice, wrist: np.ndarray) -> np.ndarray:
        local = actions[:, dims].reshape(-1, 5, 3)
        return np.einsum("tij,tkj->tki", wrist[:, :3, :3], local) + wrist[:, None, :3, 3]

    return WorldPoses(
        camera=camera,
        left_wrist=left_wrist,
        right_wrist=right_wrist,
        left_tips=tips(LEFT_FINGERS, left_wrist),
        right_tips=tips(RIGHT_FINGERS, right_wrist),
    )


def points_in_frame(points_world: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(..., 3) world points -> (..., 3) float32 in the frame whose world pose is ``reference``
    (4, 4), e.g. the episode frame (the first camera pose)."""
    to_frame = invert_se3(np.asarray(reference, dtype=np.float64))
    return (np.asarray(points_world) @ to_frame[:3, :3].T + to_frame[:3, 3]).astype(np.float32)


def project_points(points_world: np.ndarray, camera: np.ndarray, intrinsics: np.ndarray):
    """Project world points into a pinhole camera.

    points_world: (T, K, 3); camera: (T, 4, 4) camera-to-world (pinhole convention);
    intrinsics: (3, 3). Returns (uv (T, K, 2) pixels, depth (T, K) metres along +z).
    """
    world_to_camera = invert_se3(np.asarray(camera, dtype=np.float64))
    rot, trans = world_to_camera[:, None, :3, :3], world_to_camera[:, None, :3, 3]
    points_cam = (
        np.einsum(
            "tkij,tkj->tki", np.broadcast_to(rot, points_world.shape[:2] + (3, 3)), points_world
        )
        + trans
    )
    depth = points_cam[..., 2]
    safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)[..., None]
    uv_h = np.einsum("ij,tkj->tki", np.asarray(intrinsics, dtype=np.float64), points_cam / safe)
    return uv_h[..., :2], depth


def project_visible(
    points_world: np.ndarray, camera: np.ndarray, intrinsics: np.ndarray, width: int, height: int
):
    """:func:`project_points` plus the one visibility rule of the project: in front of the
    camera (depth > ``MIN_DEPTH``) and inside the image (``0 <= u < width``, ``0 <= v <
    height``). Occlusion is not modelled. Returns (uv (T, K, 2) float32 pixels, finite and
    within 1e6 px even for points behind the camera, visible (T, K) bool)."""
    uv, depth = project_points(points_world, camera, intrinsics)
    visible = (
        (depth > MIN_DEPTH)
        & (uv[..., 0] >= 0)
        & (uv[..., 0] < width)
        & (uv[..., 1] >= 0)
        & (uv[..., 1] < height)
    )
    # Points behind or on the camera plane project to meaningless (possibly huge) pixels.
    uv = np.clip(np.where(np.isfinite(uv), uv, 0.0), -1e6, 1e6)
    return uv.astype(np.float32), visible


def project_keypoints(actions: np.ndarray, intrinsics: np.ndarray, width: int, height: int):
    """2D keypoints of the 12 tracked points from actions alone (episode frame = world).

    Returns (uv (T, 12, 2) float32 pixels, visible (T, 12) bool: in front and inside the image).
    """
    poses = actions_to_poses(actions)
    return project_visible(poses.keypoints_3d(), poses.camera, intrinsics, width, height)


def reanchor_motion(motion: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Another episode's motion replayed from this ``start`` pose (a counterfactual action).

    motion: (T, 57) actions whose row 0 is the motion's own start; start: (57,). Every pose
    (head, wrists) moves by the motion's displacement and rotation relative to its row 0, both
    in the episode frame (``p_t = p_start + (q_t - q_0)``, ``R_t = Q_t Q_0^T R_start``);
    fingertips (in their wrist's frame) move by the motion's displacement. Returns (T, 57);
    row 0 equals ``start`` (up to Gram-Schmidt re-orthonormalisation).
    """
    motion = check_actions(np.asarray(motion, dtype=np.float64), "motion")
    start = np.asarray(start, dtype=np.float64)
    if start.shape != (ACTION_DIM,):
        raise ValueError(f"start must be one {ACTION_DIM}-D pose, got shape {start.shape}")
    out = start[None] + (motion - motion[:1])  # translations and fingertips
    for dims in (HEAD, LEFT_WRIST, RIGHT_WRIST):
        rot = slice(dims.start + 3, dims.stop)
        moved = matrix_from_rot6d(motion[:, rot])  # (T, 3, 3)
        delta = moved @ np.swapaxes(moved[:1], -1, -2)  # Q_t Q_0^T
        out[:, rot] = rot6d_from_matrix(delta @ matrix_from_rot6d(start[rot])[None])
    return out.astype(np.float32)
