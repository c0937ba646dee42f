"""EgoDex importer: ``<task>/N.hdf5`` + ``<task>/N.mp4`` pairs -> the episode store.

Public layout (Apple EgoDex, 1080p, 30 fps), per episode:

- ``camera/intrinsic`` (3, 3) for the video's pixel grid;
- ``transforms/<joint>`` (N, 4, 4) world-frame SE(3) for ``camera`` and the ARKit joints; we use
  ``leftHand``/``rightHand`` (the wrists) and the ten fingertips ``{left,right}{Thumb,IndexFinger,
  MiddleFinger,RingFinger,LittleFinger}Tip`` (positions only);
- ``confidences/<joint>`` (N,) tracking confidence in [0, 1] (optional here: a missing one
  counts as fully confident);
- root attributes ``task``, ``llm_description`` (our description; fallback ``task``),
  ``environment``.

The camera transforms are ARKit (looks down -z, y up); they are converted to the pinhole
convention by right-multiplying with ``ARKIT_TO_PINHOLE``. Episode names come from the path
below the import root: ``ROOT/basic_pick_place/3.hdf5`` -> ``egodex-basic_pick_place-3``.
h5py and imageio (ffmpeg) are imported here only, lazily.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from dexac_env.actions import ARKIT_TO_PINHOLE, WorldPoses
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

SOURCE = "egodex"
DEFAULT_SOURCE_FPS = 30.0  # EgoDex videos are 30 fps; used when the container does not say
FINGERS = ("Thumb", "IndexFinger", "MiddleFinger", "RingFinger", "LittleFinger")
LEFT_TIPS = tuple(f"left{f}Tip" for f in FINGERS)
RIGHT_TIPS = tuple(f"right{f}Tip" for f in FINGERS)
# ARKit joints of the 12 tracked keypoints, in KEYPOINT_NAMES order.
KEYPOINT_JOINTS = ("leftHand", *LEFT_TIPS, "rightHand", *RIGHT_TIPS)
POSE_JOINTS = ("camera", *KEYPOINT_JOINTS)


def episode_name(root: Path, hdf5_path: Path) -> str:
    """Stable store name from the path below ``root``: ``egodex-<folders>-<N>``."""
    relative = hdf5_path.relative_to(root).with_suffix("")
    parts = relative.parts if len(relative.parts) > 1 else (root.name, *relative.parts)
    return "egodex-" + "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)


def find_episodes(root: str | Path) -> list[EpisodeSource]:
    """Every ``N.hdf5`` under ``root`` (any depth), paired with its ``N.mp4``.

    A video without its HDF5 is listed too, so that the summary reports it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected EgoDex task folders)")
    sources = []
    for hdf5_path in sorted(root.rglob("*.hdf5")):
        sources.append(
            EpisodeSource(
                name=episode_name(root, hdf5_path),
                path=hdf5_path,
                extra={"video": hdf5_path.with_suffix(".mp4"), "root": root},
            )
        )
    for video in sorted(root.rglob("*.mp4")):
        if not video.with_suffix(".hdf5").exists():
            sources.append(
                EpisodeSource(
                    name=episode_name(root, video.with_suffix(".hdf5")),
                    path=video,
                    extra={"problem": f"no matching {video.with_suffix('.hdf5').name}"},
                )
            )
    return sources


def load_episode(source: EpisodeSource, config: ImportConfig) -> ImportedEpisode:
    """Read, resample, crop/resize and convert one EgoDex episode. Raises EpisodeSkipped."""
    if "problem" in source.extra:
        raise EpisodeSkipped(source.path, source.extra["problem"])
    path, video = source.path, Path(source.extra["video"])
    if not video.is_file():
        raise EpisodeSkipped(path, f"no matching video {video.name}")

    # 1. HDF5: intrinsics, transforms, confidences, text
    intrinsics, transforms, confidence, text = _read_hdf5(path)
    num_frames = transforms["camera"].shape[0]

    # 2. Video: pick frames for the target rate while decoding once; check the frame count
    rgb, indices, source_fps, (width, height) = _read_video(video, num_frames, config)

    # 3. Poses -> actions (episode frame = first kept camera pose, pinhole convention)
    poses = WorldPoses(
        camera=transforms["camera"][indices] @ ARKIT_TO_PINHOLE,
        left_wrist=transforms["leftHand"][indices],
        right_wrist=transforms["rightHand"][indices],
        left_tips=np.stack([transforms[j][indices, :3, 3] for j in LEFT_TIPS], axis=1),
        right_tips=np.stack([transforms[j][indices, :3, 3] for j in RIGHT_TIPS], axis=1),
    )

    # 4. Actions, keypoints (visible = in front, inside, confident), attributes
    attrs: dict[str, Any] = {
        "task": text["task"],
        "description": text["description"],
        "source": SOURCE,
        "environment": text["environment"],
        "source_path": str(path.relative_to(source.extra["root"])),
    }
    kept = KeptFrames(indices, source_fps, num_frames, (width, height))
    return build_episode(rgb, poses, intrinsics, kept, config, attrs, confidence[indices])


def import_egodex(
    root: str | Path, out: str | Path, config: ImportConfig, progress: bool = True
) -> ImportReport:
    """Import every EgoDex episode under ``root`` into the store ``out`` (resumable)."""
    return run_import(find_episodes(root), load_episode, out, config, SOURCE, progress)


# ---------------------------------------------------------------------------------------------


def _read_hdf5(path: Path):
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise EpisodeSkipped(path, f"unreadable HDF5 file ({_first_line(exc)})") from exc
    with file:
        intrinsics = _dataset(path, file, "camera/intrinsic")
        if intrinsics.shape != (3, 3):
            raise EpisodeSkipped(
                path, f"camera/intrinsic has shape {intrinsics.shape}, expected (3, 3)"
            )
        transforms: dict[str, np.ndarray] = {}
        for joint in POSE_JOINTS:
            key = f"transforms/{joint}"
            value = _dataset(path, file, key)
            if value.ndim != 3 or value.shape[1:] != (4, 4):
                raise EpisodeSkipped(path, f"{key} has shape {value.shape}, expected (N, 4, 4)")
            num_frames = transforms["camera"].shape[0] if transforms else value.shape[0]
            if value.shape[0] != num_frames:
                raise EpisodeSkipped(
                    path, f"{key} has {value.shape[0]} frames, transforms/camera has {num_frames}"
                )
            check_finite(path, key, value)
            transforms[joint] = value
        num_frames = transforms["camera"].shape[0]
        if num_frames < 1:
            raise EpisodeSkipped(path, "transforms/camera has no frames")
        columns = []
        for joint in KEYPOINT_JOINTS:
            key = f"confidences/{joint}"
            if key not in file:
                columns.append(np.ones(num_frames))
                continue
            value = _dataset(path, file, key)
            if value.shape != (num_frames,):
                raise EpisodeSkipped(
                    path, f"{key} has shape {value.shape}, expected ({num_frames},)"
                )
            columns.append(np.nan_to_num(value, nan=0.0))
        confidence = np.stack(columns, axis=1)  # (N, 12)
        attrs = file.attrs
        task = _text(attrs.get("task")) or path.parent.name
        text = {
            "task": task,
            "description": _text(attrs.get("llm_description")) or task,
            "environment": _text(attrs.get("environment")),
        }
    return intrinsics, transforms, confidence, text


def _dataset(path: Path, file, key: str) -> np.ndarray:
    if key not in file:
        raise EpisodeSkipped(path, f"missing key '{key}'")
    try:
        return np.asarray(file[key][()], dtype=np.float64)
    except (TypeError, ValueError, OSError, AttributeError) as exc:
        raise EpisodeSkipped(
            path, f"key '{key}' is not a numeric array ({_first_line(exc)})"
        ) from exc


def _read_video(video: Path, num_frames: int, config: ImportConfig):
    """Decode once, keeping (cropped, resized) the frames selected for the target rate.

    Returns (rgb (T, R, R, 3) uint8, source indices (T,), source fps, (width, height)).
    """
    import imageio.v2 as imageio

    try:
        # stop at the first decoding error: ffmpeg otherwise conceals damaged frames silently
        reader = imageio.get_reader(video, format="FFMPEG", input_params=["-err_detect", "explode"],
                                    output_params=["-xerror"])
    except (OSError, RuntimeError, ValueError) as exc:
        raise EpisodeSkipped(video, f"unreadable video ({_first_line(exc)})") from exc
    with reader:
        meta = reader.get_meta_data()
        source_fps = float(meta.get("fps") or DEFAULT_SOURCE_FPS)
        try:
            indices = select_frames(num_frames, source_fps, config.fps)
        except ValueError as exc:
            raise EpisodeSkipped(video, str(exc)) from exc
        wanted = set(indices.tolist())
        frames: dict[int, np.ndarray] = {}
        count, size = 0, None
        try:
            for index, frame in enumerate(reader):
                count = index + 1
                size = (frame.shape[1], frame.shape[0])
                if index in wanted:
                    frames[index] = center_crop_resize(frame[..., :3], config.resolution)
        except (OSError, RuntimeError, ValueError) as exc:
            raise EpisodeSkipped(
                video, f"unreadable video at frame {count} ({_first_line(exc)})"
            ) from exc
    if count == 0 or size is None:
        raise EpisodeSkipped(video, "unreadable video (no frames decoded)")
    if count != num_frames:
        raise EpisodeSkipped(
            video,
            f"frame count mismatch: video has {count} frames, transforms have {num_frames}"
            + (" (cut short, or damaged: decoding stops at its first error)" if count < num_frames else ""),
        )
    rgb = np.stack([frames[i] for i in indices.tolist()])
    return rgb, indices, source_fps, size


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    if isinstance(value, np.ndarray):
        return " ".join(_text(v) for v in value.ravel())
    return str(value).strip()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
