"""Writers of tiny fake EgoDex and EgoVerse data sets in exactly their public layouts.

The poses are known in closed form so that tests can check the importers against hand-derived
actions and pixels (see ``egodex_expected`` and ``egoverse_expected``).

EgoDex: ``ROOT/<task>/N.hdf5`` + ``ROOT/<task>/N.mp4`` (H.264), HDF5 keys ``camera/intrinsic``
(3, 3), ``transforms/<joint>`` (N, 4, 4) ARKit world transforms, ``confidences/<joint>`` (N,),
root attributes ``task``, ``llm_description``, ``llm_description2``, ``llm_verbs``,
``llm_objects``, ``environment``.

EgoVerse: ``ROOT/<YYYY-MM-DD-HH-MM-SS-ffffff>.zarr`` Zarr v3 group; arrays zero-padded past
``total_frames`` to a chunk boundary; ``images.front_1`` variable-length JPEG bytes, chunk (1,).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np

EGODEX_FINGERS = ("Thumb", "IndexFinger", "MiddleFinger", "RingFinger", "LittleFinger")
EGODEX_SIZE = (96, 64)  # video width, height
EGODEX_K = np.array([[40.0, 0.0, 47.5], [0.0, 40.0, 31.5], [0.0, 0.0, 1.0]])
# World positions at frame 0 (ARKit world: the first camera sits at the origin looking down -z).
EGODEX_LEFT_WRIST = np.array([-0.3, -0.05, -0.4])
EGODEX_RIGHT_WRIST = np.array([0.1, -0.05, -0.4])
CAMERA_SPEED = 0.01  # metres per source frame along world +x (EgoDex) / camera +z (EgoVerse)
TIP_SPACING = 0.02  # fingertip k sits (k + 1) * 2 cm along its wrist's x axis

ROT_Z90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _pose(rotation: np.ndarray, position: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, position
    return pose


def _frame_levels(num_frames: int) -> np.ndarray:
    return (10 + (220 * np.arange(num_frames)) // max(num_frames - 1, 1)).astype(np.uint8)


def egodex_transforms(num_frames: int) -> dict[str, np.ndarray]:
    """Known ARKit world transforms (N, 4, 4) of the camera, wrists and fingertips.

    Camera: identity rotation (ARKit: looks down -z), moving CAMERA_SPEED per frame along +x.
    Left wrist: identity rotation; right wrist: rotated 90 degrees about world z. Fingertip k
    of each hand: (k + 1) * TIP_SPACING along its wrist's x axis. Hands are still.
    """
    t = np.arange(num_frames)
    camera = np.stack([_pose(np.eye(3), [CAMERA_SPEED * i, 0.0, 0.0]) for i in t])
    out = {"camera": camera}
    for side, position, rotation in (
        ("left", EGODEX_LEFT_WRIST, np.eye(3)),
        ("right", EGODEX_RIGHT_WRIST, ROT_Z90),
    ):
        out[f"{side}Hand"] = np.repeat(_pose(rotation, position)[None], num_frames, axis=0)
        for k, finger in enumerate(EGODEX_FINGERS):
            tip = position + rotation @ np.array([(k + 1) * TIP_SPACING, 0.0, 0.0])
            out[f"{side}{finger}Tip"] = np.repeat(_pose(rotation, tip)[None], num_frames, axis=0)
        # A few of the other ARKit joints, as in the real files (unused by the importer).
        out[f"{side}Forearm"] = np.repeat(
            _pose(rotation, position + [0, 0, 0.2])[None], num_frames, 0
        )
    out["hip"] = np.repeat(_pose(np.eye(3), [0.0, -0.6, 0.1])[None], num_frames, axis=0)
    return out


def egodex_expected(source_index: int) -> dict[str, np.ndarray]:
    """Hand-derived 57-D action pieces at source frame ``source_index`` (our frames)."""
    # Episode frame = first camera in pinhole axes = diag(1, -1, -1): flips y and z.
    flip = np.array([1.0, -1.0, -1.0])
    return {
        "head": np.array([CAMERA_SPEED * source_index, 0, 0, 1, 0, 0, 0, 1, 0]),
        "left_wrist": np.concatenate([EGODEX_LEFT_WRIST * flip, [1, 0, 0, 0, -1, 0]]),
        # rotation diag(1,-1,-1) @ Rz90: columns (0,-1,0) and (-1,0,0)
        "right_wrist": np.concatenate([EGODEX_RIGHT_WRIST * flip, [0, -1, 0, -1, 0, 0]]),
        "tips": np.array([[(k + 1) * TIP_SPACING, 0.0, 0.0] for k in range(5)]).ravel(),
    }


def write_mp4(path: Path, frames: np.ndarray, fps: float = 30.0) -> None:
    """Write (T, H, W, 3) uint8 frames as H.264 MP4 (imageio-ffmpeg)."""
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        path, fps=fps, codec="libx264", quality=10, macro_block_size=16, ffmpeg_log_level="error"
    )
    with writer:
        for frame in frames:
            writer.append_data(frame)


def egodex_frames(num_frames: int) -> np.ndarray:
    """Flat grey frames (level rises with time) with a red band in the 16 columns cropped away."""
    width, height = EGODEX_SIZE
    frames = np.repeat(_frame_levels(num_frames)[:, None, None, None], 3, axis=3)
    frames = np.broadcast_to(frames, (num_frames, height, width, 3)).copy()
    frames[:, :, :16] = (200, 0, 0)
    return frames


def write_egodex_episode(
    root: Path,
    task: str,
    index: int,
    num_frames: int = 12,
    video_frames: int | None = None,
    description: str | None = "Pick up the cup with the left hand.",
    drop_keys: tuple[str, ...] = (),
    replace: dict[str, np.ndarray] | None = None,
    confidences: dict[str, np.ndarray] | None = None,
    video_bytes: bytes | None = None,
) -> tuple[Path, Path]:
    """Write ``root/<task>/<index>.hdf5`` + ``.mp4``; the keyword arguments make bad inputs."""
    import h5py

    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    hdf5_path, video_path = folder / f"{index}.hdf5", folder / f"{index}.mp4"
    datasets = {"camera/intrinsic": EGODEX_K}
    transforms = egodex_transforms(num_frames)
    datasets.update({f"transforms/{j}": v for j, v in transforms.items()})
    conf = {j: np.full(num_frames, 0.9) for j in transforms if j != "camera"}
    conf.update(confidences or {})
    datasets.update({f"confidences/{j}": v for j, v in conf.items()})
    datasets.update(replace or {})
    with h5py.File(hdf5_path, "w") as file:
        for key, value in datasets.items():
            if key not in drop_keys:
                file.create_dataset(key, data=np.asarray(value, dtype=np.float32))
        file.attrs["task"] = task
        if description is not None:
            file.attrs["llm_description"] = description
        file.attrs["llm_description2"] = "Another phrasing."
        file.attrs["llm_verbs"] = "pick"
        file.attrs["llm_objects"] = "cup"
        file.attrs["environment"] = "kitchen table"
    if video_bytes is not None:
        video_path.write_bytes(video_bytes)
    else:
        write_mp4(video_path, egodex_frames(video_frames or num_frames))
    return hdf5_path, video_path


# ---------------------------------------------------------------------------------------------
# EgoVerse
# ---------------------------------------------------------------------------------------------

EGOVERSE_SIZE = (80, 48)
EGOVERSE_K = np.array([[32.0, 0.0, 39.5], [0.0, 32.0, 23.5], [0.0, 0.0, 1.0]])
# The first head pose in the SLAM world: rotated 90 degrees about y, at (1, 0.5, -2).
EGOVERSE_HEAD0 = _pose(
    np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]), [1.0, 0.5, -2.0]
)
# Wrist positions in the episode frame (pinhole axes of the first camera).
EGOVERSE_LEFT_WRIST = np.array([-0.1, 0.05, 0.4])
EGOVERSE_RIGHT_WRIST = np.array([0.12, 0.06, 0.45])


def quat_wxyz_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z) (Shepperd's method, w >= 0)."""
    m = rotation
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.zeros(4)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q, dtype=np.float64)
    return q * (1 if q[0] >= 0 else -1)


def _pose7(pose: np.ndarray) -> np.ndarray:
    return np.concatenate([pose[:3, 3], quat_wxyz_from_matrix(pose[:3, :3])])


def egoverse_poses(num_frames: int) -> dict[str, np.ndarray]:
    """Known world poses: (T, 7) head/wrists and (T, 63) MANO keypoints.

    Head: EGOVERSE_HEAD0, moving CAMERA_SPEED per frame along its own +z (forward). Wrists are
    still in the world at EGOVERSE_*_WRIST of the episode frame; left rotation = episode axes,
    right rotation = Rz90 in the episode frame. MANO tips (4, 8, ..., 20) at (k + 1) *
    TIP_SPACING along the wrist's x axis; the other landmarks sit halfway along.
    """
    out: dict[str, np.ndarray] = {}
    heads = [EGOVERSE_HEAD0 @ _pose(np.eye(3), [0, 0, CAMERA_SPEED * t]) for t in range(num_frames)]
    out["obs_head_pose"] = np.stack([_pose7(p) for p in heads])
    for side, position, rotation in (
        ("left", EGOVERSE_LEFT_WRIST, np.eye(3)),
        ("right", EGOVERSE_RIGHT_WRIST, ROT_Z90),
    ):
        wrist = EGOVERSE_HEAD0 @ _pose(rotation, position)
        out[f"{side}.obs_wrist_pose"] = np.repeat(_pose7(wrist)[None], num_frames, axis=0)
        landmarks = np.repeat(wrist[None, :3, 3], 21, axis=0)
        for k, tip in enumerate((4, 8, 12, 16, 20)):
            offset = wrist[:3, :3] @ np.array([(k + 1) * TIP_SPACING, 0.0, 0.0])
            landmarks[tip] = wrist[:3, 3] + offset
            landmarks[tip - 2] = wrist[:3, 3] + 0.5 * offset
        out[f"{side}.obs_keypoints"] = np.repeat(landmarks.reshape(1, 63), num_frames, axis=0)
        out[f"{side}.obs_ee_pose"] = out[f"{side}.obs_wrist_pose"].copy()
    return out


def egoverse_expected(source_index: int) -> dict[str, np.ndarray]:
    """Hand-derived 57-D action pieces at source frame ``source_index``."""
    return {
        "head": np.array([0, 0, CAMERA_SPEED * source_index, 1, 0, 0, 0, 1, 0]),
        "left_wrist": np.concatenate([EGOVERSE_LEFT_WRIST, [1, 0, 0, 0, 1, 0]]),
        "right_wrist": np.concatenate([EGOVERSE_RIGHT_WRIST, [0, 1, 0, -1, 0, 0]]),
        "tips": np.array([[(k + 1) * TIP_SPACING, 0.0, 0.0] for k in range(5)]).ravel(),
    }


def jpeg_bytes(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # 4:4:4 chroma: 4:2:0 upsampling would bleed the cropped-away bands into the kept square.
    Image.fromarray(frame).save(buffer, format="JPEG", quality=95, subsampling=0)
    return buffer.getvalue()


def egoverse_frames(num_frames: int) -> np.ndarray:
    """Flat grey frames (level rises with time) with blue bands in the 16 columns cropped away
    on each side."""
    width, height = EGOVERSE_SIZE
    frames = np.repeat(_frame_levels(num_frames)[:, None, None, None], 3, axis=3)
    frames = np.broadcast_to(frames, (num_frames, height, width, 3)).copy()
    frames[:, :, :16] = (0, 0, 200)
    frames[:, :, -16:] = (0, 0, 200)
    return frames


def write_egoverse_episode(
    root: Path,
    episode_hash: str,
    total_frames: int = 10,
    chunk: int = 8,
    fps: float = 30.0,
    annotations: list[dict] | None = None,
    drop_keys: tuple[str, ...] = (),
    replace: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
    bad_jpeg_at: int | None = None,
) -> Path:
    """Write ``root/<episode_hash>.zarr``; the keyword arguments make bad inputs."""
    import zarr

    path = root / f"{episode_hash}.zarr"
    padded = -(-total_frames // chunk) * chunk  # zero padding up to a chunk boundary
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    arrays = dict(egoverse_poses(total_frames))
    arrays["obs_rgb_timestamps_ns"] = (np.arange(total_frames) * 1e9 / fps).astype(np.int64)
    arrays.update(replace or {})
    for key, value in arrays.items():
        if key in drop_keys:
            continue
        value = np.asarray(value)
        full = np.zeros((padded,) + value.shape[1:], dtype=value.dtype)
        full[: len(value)] = value
        array = group.create_array(
            key, shape=full.shape, dtype=full.dtype, chunks=(chunk,) + full.shape[1:]
        )
        array[...] = full
    if "images.front_1" not in drop_keys:
        encoded = np.empty(padded, dtype=object)
        encoded[:] = [b""] * padded  # zero padding past total_frames
        for i, frame in enumerate(egoverse_frames(total_frames)):
            encoded[i] = b"not a jpeg" if i == bad_jpeg_at else jpeg_bytes(frame)
        with warnings.catch_warnings():  # zarr warns that vlen-bytes has no v3 spec yet
            warnings.simplefilter("ignore")
            images = group.create_array(
                "images.front_1",
                shape=(padded,),
                dtype=zarr.dtype.VariableLengthBytes(),
                chunks=(1,),
            )
        images[:] = encoded
    spans = annotations if annotations is not None else []
    notes = group.create_array(
        "annotations", shape=(len(spans),), dtype=str, chunks=(max(len(spans), 1),)
    )
    if spans:
        notes[:] = np.array([json.dumps(s) for s in spans], dtype=object)
    k34 = np.concatenate([EGOVERSE_K, np.zeros((3, 1))], axis=1)
    group.attrs.update(
        {
            "total_frames": total_frames,
            "fps": fps,
            "task_name": "cup_stacking",
            "task_description": "Stack the red cup on the blue cup.",
            "embodiment": "aria_bimanual",
            "intrinsics": {"front_1": k34.tolist(), "left_1": k34.tolist()},
            "features": {"images.front_1": {"dtype": "jpeg"}},
            **(attrs or {}),
        }
    )
    return path


def assert_action_is_expected(action: np.ndarray, expected: dict[str, np.ndarray]) -> None:
    """A stored (57,) action against the hand-derived pose of ``egodex_expected`` /
    ``egoverse_expected`` (both hands carry the same fingertip offsets)."""
    from dexac_env.actions import HEAD, LEFT_FINGERS, LEFT_WRIST, RIGHT_FINGERS, RIGHT_WRIST

    parts = (("head", HEAD), ("left_wrist", LEFT_WRIST), ("right_wrist", RIGHT_WRIST),
             ("tips", LEFT_FINGERS), ("tips", RIGHT_FINGERS))
    for key, dims in parts:
        np.testing.assert_allclose(action[dims], expected[key], atol=1e-5, err_msg=key)
