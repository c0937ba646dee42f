"""Projected-keypoint prior: where the action puts every wrist and fingertip in the image.

Beyond the paper (issue #10, lever 6). The 57-D action already holds the camera pose and both
hands in the episode frame, so with the camera's intrinsics the image position of the 12
tracked points (per hand: the wrist, then thumb, index, middle, ring, little fingertips; left
hand first) in each frame is exact geometry, not something the network has to learn. This
module computes those positions from raw actions and renders them as Gaussian heatmaps on a
sub-grid of the latent grid; the DiT adds a zero-initialised linear embedding of each patch's
heatmap cells to its patch tokens (``DiT.keypoint_embed``), so a model fine-tuned from one
without the prior starts as the same function.

The projection restates ``dexac_env.actions.project_keypoints`` in torch (the world model
imports nothing from the env); ``tests/test_keypoint_prior.py`` checks that the two agree,
``tests/test_action_constants.py`` that the restated constants do.
Conventions (docs: ``DESIGN.md``, the 57-DoF action): head and wrists in the episode frame,
fingertips in their wrist's frame, rotations as 6D, the camera in the pinhole convention
(x right, y down, z forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KEYPOINTS = 12  # per hand: wrist + 5 fingertips
MIN_DEPTH = 1e-3  # metres; the env's visibility rule (dexac_env.actions.MIN_DEPTH)
_HEAD, _LEFT_WRIST, _RIGHT_WRIST = 0, 9, 18
_LEFT_TIPS, _RIGHT_TIPS = 27, 42


def matrix_from_rot6d(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) rotation matrices by Gram-Schmidt on the two stored columns."""
    first, second = rot6d[..., 0:3], rot6d[..., 3:6]
    x = F.normalize(first, dim=-1, eps=1e-12)
    y = F.normalize(second - (x * second).sum(-1, keepdim=True) * x, dim=-1, eps=1e-12)
    return torch.stack([x, y, torch.linalg.cross(x, y, dim=-1)], dim=-1)


def keypoints_3d(actions: torch.Tensor) -> torch.Tensor:
    """(..., 57) raw actions -> (..., 12, 3) points in the episode frame (metres)."""
    points = []
    for wrist, tips in ((_LEFT_WRIST, _LEFT_TIPS), (_RIGHT_WRIST, _RIGHT_TIPS)):
        rotation = matrix_from_rot6d(actions[..., wrist + 3 : wrist + 9])  # (..., 3, 3)
        position = actions[..., wrist : wrist + 3]  # (..., 3)
        local = actions[..., tips : tips + 15].unflatten(-1, (5, 3))  # (..., 5, 3)
        tip_points = torch.einsum("...ij,...kj->...ki", rotation, local) + position[..., None, :]
        points += [position[..., None, :], tip_points]
    return torch.cat(points, dim=-2)  # (..., 12, 3)


def to_camera(points: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(..., K, 3) episode-frame points -> the frame of the camera (head) that ``actions``
    (..., 57) put there: x right, y down, z forward, metres."""
    camera_rotation = matrix_from_rot6d(actions[..., _HEAD + 3 : _HEAD + 9])  # (..., 3, 3)
    camera_position = actions[..., None, _HEAD : _HEAD + 3]  # (..., 1, 3)
    # episode -> camera: R^T (p - t), written as (p - t) R for row vectors
    return (points - camera_position) @ camera_rotation


def from_camera(points: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(..., K, 3) points in the frame of the camera that ``actions`` (..., 57) put there ->
    the episode frame: the inverse of :func:`to_camera`."""
    camera_rotation = matrix_from_rot6d(actions[..., _HEAD + 3 : _HEAD + 9])  # (..., 3, 3)
    return points @ camera_rotation.transpose(-1, -2) + actions[..., None, _HEAD : _HEAD + 3]


def image_fractions(points: torch.Tensor, camera: tuple[float, float, float, float]) -> torch.Tensor:
    """(..., 3) camera-frame points -> (..., 2) where the pinhole ``camera`` (normalised
    intrinsics fx / W, fy / H, cx / W, cy / H) images them, as fractions of the image width /
    height (0 at the left / top edge); depths within 1e-9 of 0 are taken as 1e-9."""
    depth = points[..., 2]
    safe = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
    fx, fy, cx, cy = camera
    return torch.stack([fx * points[..., 0] / safe + cx, fy * points[..., 1] / safe + cy], -1)


def camera_keypoints(
    actions: torch.Tensor, camera: tuple[float, float, float, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 12 tracked points of ``actions`` in the camera's frame, and where it images them.

    actions: (..., 57) raw units; camera: normalised intrinsics (fx / W, fy / H, cx / W,
    cy / H). Returns (points (..., 12, 3) in the camera frame, metres, x right, y down,
    z forward; uv (..., 12, 2) as fractions of the image width / height, 0 at the left / top
    edge, 0 where not visible; visible (..., 12) bool: in front of the camera and inside the
    image).
    """
    in_camera = to_camera(keypoints_3d(actions), actions)  # (..., 12, 3)
    depth = in_camera[..., 2]
    uv = image_fractions(in_camera, camera)
    visible = (depth > MIN_DEPTH) & (uv >= 0).all(-1) & (uv < 1).all(-1)
    return in_camera, torch.where(visible[..., None], uv, torch.zeros_like(uv)), visible


def project_action_keypoints(
    actions: torch.Tensor, camera: tuple[float, float, float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image positions of the 12 tracked points that ``actions`` put in each frame.

    actions: (..., 57) raw units; camera: normalised intrinsics (fx / W, fy / H, cx / W,
    cy / H). Returns (uv (..., 12, 2) as fractions of the image width / height, 0 at the left /
    top edge; visible (..., 12) bool: in front of the camera and inside the image). uv is 0
    where a point is not visible.
    """
    _, uv, visible = camera_keypoints(actions, camera)
    return uv, visible


def keypoint_heatmaps(
    uv: torch.Tensor, weight: torch.Tensor, height: int, width: int, sigma: float
) -> torch.Tensor:
    """Gaussian heatmaps, one per point.

    uv (..., K, 2) image fractions; weight (..., K) (0 = point absent); height x width cells
    over the whole image; sigma in image fractions. Returns (..., K, height, width) in [0, 1],
    cell (i, j) centred at ((j + 0.5) / width, (i + 0.5) / height).
    """
    xs = (torch.arange(width, device=uv.device, dtype=uv.dtype) + 0.5) / width  # (W,)
    ys = (torch.arange(height, device=uv.device, dtype=uv.dtype) + 0.5) / height  # (H,)
    # separable: exp(-(dx^2 + dy^2) / 2 s^2) = exp(-dx^2 / 2 s^2) exp(-dy^2 / 2 s^2)
    gauss_x = torch.exp(-((xs - uv[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., K, W)
    gauss_y = torch.exp(-((ys - uv[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., K, H)
    return weight[..., None, None] * gauss_y[..., :, None] * gauss_x[..., None, :]


def keypoint_patches(
    uv: torch.Tensor,
    weight: torch.Tensor,
    grid: tuple[int, int],
    patch: int,
    sub: int,
    sigma: float,
) -> torch.Tensor:
    """Heatmaps cut into the DiT's patches.

    uv (B, T, K, 2), weight (B, T, K); grid (h, w) latent cells; each latent cell holds
    ``sub x sub`` heatmap cells and each patch ``patch x patch`` latent cells. Returns
    (B, T, N, K (patch sub)^2) with N = (h / patch) (w / patch) in the DiT's token order.
    """
    h, w = grid
    b, t, k = weight.shape
    maps = keypoint_heatmaps(uv, weight, h * sub, w * sub, sigma)  # (B, T, K, h s, w s)
    side = patch * sub  # heatmap cells per patch side
    maps = maps.unflatten(3, (h // patch, side)).unflatten(5, (w // patch, side))
    # (B, T, K, h/p, p s, w/p, p s) -> (B, T, h/p, w/p, K, p s, p s) -> (B, T, N, K (p s)^2)
    return maps.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, t, -1, k * side * side)
