"""EgoVerse importer: one Zarr v3 store per episode (``<hash>.zarr``) -> the episode store.

Public layout, per episode (arrays at the root, all sliced ``[:total_frames]`` because they may
be zero-padded to a chunk boundary):

- ``images.front_1`` (T,) variable-length bytes, one JPEG per frame;
- ``obs_head_pose``, ``left.obs_wrist_pose``, ``right.obs_wrist_pose`` (T, 7): x, y, z, qw, qx,
  qy, qz in a SLAM world frame; the camera frame is already the pinhole one (x right, y down,
  z forward), so no axis change is needed;
- ``left.obs_keypoints``, ``right.obs_keypoints`` (T, 63): 21 MANO landmarks x 3 (world frame);
  fingertips are landmarks 4, 8, 12, 16, 20. The wrist position and rotation come from the wrist
  pose (the MANO wrist landmark 0 is not used);
- ``annotations`` (N,) JSON strings ``{"text", "start_idx", "end_idx"}`` (end exclusive; optional);
- root attributes ``total_frames``, ``fps``, ``task_name``, ``task_description``, ``embodiment``,
  ``intrinsics`` = ``{camera_key: 3x4 [K | 0]}`` (we take the key containing ``front``).

An episode without the hand keys (no hand tracking) cannot give a 57-D action and is skipped
with that reason. Annotation spans are stored as a JSON string attribute ``annotations`` with
indices remapped to the stored (resampled) frames; the source indices are kept alongside.

Reading an EgoVerse episode needs zarr (each episode IS a Zarr v3 store): this module is the
one exception to "zarr is imported only by dexac_env/replay/store.py". It imports zarr lazily.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dexac_env.actions import WorldPoses, matrix_from_quat_wxyz, se3
from dexac_env.replay.importing import (
    EpisodeSkipped,
    EpisodeSource,
    ImportConfig,
    ImportedEpisode,
    ImportReport,
    KeptFrames,
    build_episode,
    center_crop_resize,
    check_finite,
    run_import,
    select_frames,
)

SOURCE = "egoverse"
IMAGE_KEY = "images.front_1"
HEAD_KEY = "obs_head_pose"
HAND_KEYS = (
    "left.obs_wrist_pose",
    "right.obs_wrist_pose",
    "left.obs_keypoints",
    "right.obs_keypoints",
)
TIP_LANDMARKS = [4, 8, 12, 16, 20]  # MANO: thumb, index, middle, ring, little tips


def episode_name(store_path: Path) -> str:
    """``egoverse-<episode hash>`` from ``<hash>.zarr``."""
    stem = store_path.name.removesuffix(".zarr")
    return "egoverse-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def find_episodes(root: str | Path) -> list[EpisodeSource]:
    """Every ``*.zarr`` episode folder under ``root`` (any depth; ``root`` itself may be one)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected EgoVerse <hash>.zarr episodes)")
    if root.name.endswith(".zarr"):
        return [EpisodeSource(episode_name(root), root)]
    found = []
    for folder, subfolders, _ in os.walk(root):
        stores = sorted(d for d in subfolders if d.endswith(".zarr"))
        found += [Path(folder) / d for d in stores]
        subfolders[:] = sorted(d for d in subfolders if not d.endswith(".zarr"))  # not inside
    return [EpisodeSource(episode_name(p), p) for p in sorted(found)]


def load_episode(source: EpisodeSource, config: ImportConfig) -> ImportedEpisode:
    """Read, resample, crop/resize and convert one EgoVerse episode. Raises EpisodeSkipped."""
    import zarr  # the exception to the store-only rule, see the module docstring

    path = source.path
    try:
        group = zarr.open_group(str(path), mode="r")
    except (OSError, ValueError, zarr.errors.BaseZarrError) as exc:
        raise EpisodeSkipped(path, f"not a readable Zarr group ({exc})") from exc
    attrs = dict(group.attrs)

    # 1. Attributes: length, rate, intrinsics
    total = attrs.get("total_frames")
    if isinstance(total, float) and total.is_integer():
        total = int(total)
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise EpisodeSkipped(
            path, f"attribute total_frames must be a positive integer, got {total!r}"
        )
    source_fps = attrs.get("fps")
    if not isinstance(source_fps, (int, float)) or not source_fps > 0:
        raise EpisodeSkipped(path, f"attribute fps must be a positive number, got {source_fps!r}")
    intrinsics = _front_intrinsics(path, attrs.get("intrinsics"))

    # 2. Arrays, each sliced [:total_frames]; no hands -> no 57-D action
    missing_hands = [k for k in HAND_KEYS if k not in group]
    if missing_hands:
        raise EpisodeSkipped(path, f"no hand tracking: missing {', '.join(missing_hands)}")
    for key in (HEAD_KEY, IMAGE_KEY):
        if key not in group:
            raise EpisodeSkipped(path, f"missing key '{key}'")
    head = _pose_array(path, group, HEAD_KEY, total)
    left_wrist = _pose_array(path, group, "left.obs_wrist_pose", total)
    right_wrist = _pose_array(path, group, "right.obs_wrist_pose", total)
    left_tips = _tips(path, group, "left.obs_keypoints", total)
    right_tips = _tips(path, group, "right.obs_keypoints", total)
    images = group[IMAGE_KEY]
    if images.ndim != 1:
        raise EpisodeSkipped(path, f"{IMAGE_KEY} has shape {images.shape}, expected (T,)")
    if images.shape[0] < total:
        raise EpisodeSkipped(
            path, f"{IMAGE_KEY} has {images.shape[0]} frames, fewer than total_frames {total}"
        )

    # 3. Resample, decode the kept JPEGs
    try:
        indices = select_frames(total, float(source_fps), config.fps)
    except ValueError as exc:
        raise EpisodeSkipped(path, str(exc)) from exc
    rgb, (width, height) = _decode_frames(path, images, indices, config.resolution)

    # 4. Poses of the kept frames -> actions, keypoints, attributes
    poses = WorldPoses(
        camera=head[indices],
        left_wrist=left_wrist[indices],
        right_wrist=right_wrist[indices],
        left_tips=left_tips[indices],
        right_tips=right_tips[indices],
    )
    task = str(attrs.get("task_name") or "unknown")
    spans = _annotations(path, group, total, indices)
    episode_attrs: dict[str, Any] = {
        "task": task,
        "description": str(attrs.get("task_description") or task),
        "annotations": json.dumps(spans),
        "source": SOURCE,
        "embodiment": str(attrs.get("embodiment") or ""),
        "source_path": path.name,
    }
    kept = KeptFrames(indices, float(source_fps), total, (width, height))
    return build_episode(rgb, poses, intrinsics, kept, config, episode_attrs)


def import_egoverse(
    root: str | Path, out: str | Path, config: ImportConfig, progress: bool = True
) -> ImportReport:
    """Import every EgoVerse episode under ``root`` into the store ``out`` (resumable)."""
    return run_import(find_episodes(root), load_episode, out, config, SOURCE, progress)


# ---------------------------------------------------------------------------------------------


def _front_intrinsics(path: Path, intrinsics: Any) -> np.ndarray:
    if not isinstance(intrinsics, dict) or not intrinsics:
        raise EpisodeSkipped(
            path, "attribute intrinsics must be a {camera_key: 3x4 [K | 0]} mapping"
        )
    keys = sorted(k for k in intrinsics if "front" in k)
    if not keys:
        raise EpisodeSkipped(
            path, f"no intrinsics key containing 'front' (keys: {sorted(intrinsics)})"
        )
    try:
        matrix = np.asarray(intrinsics[keys[0]], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EpisodeSkipped(path, f"intrinsics[{keys[0]!r}] is not a numeric matrix") from exc
    if matrix.shape not in ((3, 4), (3, 3)) or not np.all(np.isfinite(matrix)):
        raise EpisodeSkipped(
            path, f"intrinsics[{keys[0]!r}] has shape {matrix.shape}, expected (3, 4)"
        )
    return matrix[:, :3]


def _array(path: Path, group, key: str, total: int, width: int) -> np.ndarray:
    array = group[key]
    if array.ndim != 2 or array.shape[1] != width:
        raise EpisodeSkipped(path, f"{key} has shape {array.shape}, expected (T, {width})")
    if array.shape[0] < total:
        raise EpisodeSkipped(
            path, f"{key} has {array.shape[0]} rows, fewer than total_frames {total}"
        )
    value = np.asarray(array[:total], dtype=np.float64)
    check_finite(path, key, value)
    return value


def _pose_array(path: Path, group, key: str, total: int) -> np.ndarray:
    """(total, 7) x, y, z, qw, qx, qy, qz -> (total, 4, 4) world transforms."""
    value = _array(path, group, key, total, 7)
    norms = np.linalg.norm(value[:, 3:7], axis=1)
    if np.any(norms < 0.5):  # zero padding inside total_frames, or not a quaternion at all
        frame = int(np.argmax(norms < 0.5))
        raise EpisodeSkipped(path, f"{key} has a zero quaternion at frame {frame}")
    return se3(matrix_from_quat_wxyz(value[:, 3:7]), value[:, :3])


def _tips(path: Path, group, key: str, total: int) -> np.ndarray:
    """(total, 63) MANO landmarks -> (total, 5, 3) fingertip positions."""
    return _array(path, group, key, total, 63).reshape(total, 21, 3)[:, TIP_LANDMARKS]


def _decode_frames(path: Path, images, indices: np.ndarray, resolution: int):
    frames, size = [], None
    encoded = images.get_coordinate_selection(indices)  # only the kept frames; chunk (1,) each
    for index, data in zip(indices.tolist(), encoded, strict=True):
        if not data:
            raise EpisodeSkipped(path, f"{IMAGE_KEY}[{index}] is empty (no JPEG bytes)")
        try:
            image = np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise EpisodeSkipped(
                path, f"{IMAGE_KEY}[{index}] is not a readable JPEG ({exc})"
            ) from exc
        frame_size = (image.shape[1], image.shape[0])
        if size is not None and frame_size != size:
            raise EpisodeSkipped(path, f"{IMAGE_KEY}[{index}] is {frame_size}, frame 0 is {size}")
        size = frame_size
        frames.append(center_crop_resize(image, resolution))
    return np.stack(frames), size


def _annotations(path: Path, group, total: int, indices: np.ndarray) -> list[dict[str, Any]]:
    """Language spans with start/end remapped to stored frames (end exclusive)."""
    if "annotations" not in group:
        return []
    spans = []
    for number, raw in enumerate(np.asarray(group["annotations"][:]).ravel().tolist()):
        raw = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        try:
            span = json.loads(raw)
            text, start, end = str(span["text"]), int(span["start_idx"]), int(span["end_idx"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EpisodeSkipped(
                path, f"annotations[{number}] is not a {{text, start_idx, end_idx}} JSON object"
            ) from exc
        start, end = max(0, min(start, total)), max(0, min(end, total))
        spans.append(
            {
                "text": text,
                "start_idx": int(np.searchsorted(indices, start)),
                "end_idx": int(np.searchsorted(indices, end)),
                "source_start_idx": start,
                "source_end_idx": end,
            }
        )
    return spans
