"""Parts shared by the public-data importers (EgoDex, EgoVerse).

- frames: centre crop to a square, then resize (:func:`center_crop_resize`), and the matching
  change of the intrinsic matrix (:func:`scale_intrinsics`);
- time: resampling from the source frame rate by frame selection (:func:`select_frames`);
- 2D keypoints: projection of the 12 tracked points with the scaled intrinsics, visible by the
  rule of :func:`dexac_env.actions.project_visible` and (where the source gives one) confident
  enough;
- splits: a deterministic hash of the episode name (:func:`split_for`);
- the resumable import loop with a progress bar and a skip-with-reason summary (:func:`run_import`).

Pixel convention: intrinsics follow OpenCV (pixel ``i`` has its centre at coordinate ``i``). The
visibility test is the one of :func:`dexac_env.actions.project_keypoints` (``0 <= u < width``),
so stored keypoints equal the projection of the stored actions with the stored intrinsics.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dexac_env.actions import (
    ACTION_DIM,
    NUM_KEYPOINTS,
    WorldPoses,
    points_in_frame,
    poses_to_actions,
    project_visible,
)
from dexac_env.replay.store import EpisodeStore, StoreError


class EpisodeSkipped(Exception):
    """One source episode cannot be imported; the message is one line naming the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the cause printed
        super().__init__(f"{self.path}: {self.problem}")


@dataclass(frozen=True)
class ImportConfig:
    """Options shared by every importer (the CLI flags of ``dexac import``)."""

    resolution: int = 64
    """Side of the stored square frames, pixels."""
    fps: float = 10.0
    """Stored frame rate; frames are selected from the source rate (never interpolated)."""
    split_seed: int = 0
    """Seed of the name hash that assigns train/val/test."""
    val_frac: float = 0.05
    """Fraction of episodes in the validation split."""
    test_frac: float = 0.05
    """Fraction of episodes in the test split."""
    limit: int | None = None
    """Only consider the first ``limit`` source episodes (sorted by name); None = all."""
    min_confidence: float = 0.5
    """Keypoints whose source tracking confidence is below this are not visible (EgoDex)."""

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8 pixels, got {self.resolution}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.val_frac < 0 or self.test_frac < 0 or self.val_frac + self.test_frac > 1:
            raise ValueError(
                f"val_frac and test_frac must be >= 0 with a sum <= 1, got {self.val_frac} "
                f"and {self.test_frac}"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")


@dataclass(frozen=True)
class EpisodeSource:
    """One source episode found under the import root, before it is read."""

    name: str  # store episode name, stable from the source path
    path: Path  # the file or folder named in error messages
    extra: dict[str, Any] = field(default_factory=dict)  # importer-specific (e.g. the video path)


@dataclass
class ImportedEpisode:
    """Everything :meth:`EpisodeStore.write_episode` needs for one episode."""

    rgb: np.ndarray  # (T, R, R, 3) uint8
    action: np.ndarray  # (T, 57) float
    keypoints_2d: np.ndarray  # (T, 12, 2) float32 pixels at the stored resolution
    keypoints_visible: np.ndarray  # (T, 12) bool
    attrs: dict[str, Any]  # task, description, fps, source, intrinsics, ... (split added later)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ImportReport:
    """What one run of an importer did."""

    store_path: Path
    found: int = 0
    imported: list[str] = field(default_factory=list)
    frames: int = 0
    already_present: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (episode name, reason)

    @property
    def exit_code(self) -> int:
        """Non-zero only when the run leaves the store with none of the found episodes."""
        return 0 if (self.imported or self.already_present) else 1

    def summary_lines(self) -> list[str]:
        lines = [
            f"imported {len(self.imported)} episode(s), {self.frames} frames, into "
            f"{self.store_path}; {len(self.already_present)} already present; "
            f"{len(self.skipped)} skipped (of {self.found} found)"
        ]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return lines


# ---------------------------------------------------------------------------------------------
# Frames, time, intrinsics
# ---------------------------------------------------------------------------------------------


def crop_box(width: int, height: int) -> tuple[int, int, int]:
    """(x0, y0, side) of the centred square crop of a width x height image."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def center_crop_resize(frame: np.ndarray, resolution: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (resolution, resolution, 3) uint8: centred square crop, then resize.

    The resize is PIL's bilinear filter, which widens its support when shrinking (antialiased).
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    height, width = frame.shape[:2]
    x0, y0, side = crop_box(width, height)
    square = Image.fromarray(np.ascontiguousarray(frame[y0 : y0 + side, x0 : x0 + side]))
    if side != resolution:
        square = square.resize((resolution, resolution), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.uint8)


def scale_intrinsics(
    intrinsics: np.ndarray, width: int, height: int, resolution: int
) -> np.ndarray:
    """3x3 K of a width x height image -> K of its centre crop resized to resolution x resolution.

    OpenCV pixel centres: u' = (u - x0 + 0.5) * s - 0.5 with s = resolution / side.
    """
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if intrinsics.shape != (3, 3):
        raise ValueError(f"intrinsics must have shape (3, 3), got {intrinsics.shape}")
    x0, y0, side = crop_box(width, height)
    scale = resolution / side
    scaled = intrinsics.copy()
    scaled[0, 0] *= scale
    scaled[1, 1] *= scale
    scaled[0, 1] *= scale  # skew
    scaled[0, 2] = (intrinsics[0, 2] - x0 + 0.5) * scale - 0.5
    scaled[1, 2] = (intrinsics[1, 2] - y0 + 0.5) * scale - 0.5
    return scaled


def select_frames(num_frames: int, source_fps: float, target_fps: float) -> np.ndarray:
    """Indices of the source frames kept when resampling source_fps -> target_fps (nearest frame).

    Raises ValueError when asked to go up in frame rate (frames are never invented).
    """
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if target_fps > source_fps * (1 + 1e-6):
        raise ValueError(f"source is {source_fps:g} fps, cannot resample up to {target_fps:g} fps")
    step = source_fps / target_fps
    count = int(np.floor((num_frames - 1) / step + 1e-9)) + 1
    return np.minimum(np.round(np.arange(count) * step).astype(np.int64), num_frames - 1)


def split_for(name: str, seed: int, val_frac: float, test_frac: float) -> str:
    """Deterministic split from a hash of (seed, name): stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if unit < test_frac:
        return "test"
    if unit < test_frac + val_frac:
        return "val"
    return "train"


# ---------------------------------------------------------------------------------------------
# Keypoints
# ---------------------------------------------------------------------------------------------


def keypoints_from_poses(
    poses: WorldPoses,
    intrinsics: np.ndarray,
    resolution: int,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Project the 12 tracked points (world frame) with the camera of ``poses``.

    intrinsics: (3, 3) K already scaled to the stored resolution; confidence: optional (T, 12).
    Returns (uv (T, 12, 2) float32 pixels, visible (T, 12) bool).
    """
    uv, visible = project_visible(
        poses.keypoints_3d(), poses.camera, intrinsics, resolution, resolution
    )
    if confidence is not None:
        visible &= np.asarray(confidence) >= min_confidence
    return uv, visible


def keypoints_3d_in_episode_frame(poses: WorldPoses) -> np.ndarray:
    """(T, 12, 3) float32 positions of the tracked points in the episode frame (first camera)."""
    return points_in_frame(poses.keypoints_3d(), poses.camera[0])


@dataclass(frozen=True)
class KeptFrames:
    """Which source frames an importer kept, and what it knew of the source video."""

    indices: np.ndarray  # (T,) int64 index of every kept frame in the source
    source_fps: float
    source_frames: int  # frames in the source episode
    source_size: tuple[int, int]  # width, height of the source frames (pixels)


def build_episode(
    rgb: np.ndarray,
    poses: WorldPoses,
    intrinsics: np.ndarray,
    kept: KeptFrames,
    config: ImportConfig,
    attrs: dict[str, Any],
    confidence: np.ndarray | None = None,
) -> ImportedEpisode:
    """The stored form of one resampled source episode: actions from the world ``poses`` of the
    kept frames (episode frame = first kept camera pose), 2D keypoints with ``intrinsics``
    (3x3, of the source frames) scaled to the stored ones and visible where ``confidence``
    (T, 12) allows, the attributes every importer records on top of ``attrs`` (which names
    the ``source`` and ``source_path``), and the 3D keypoints and kept indices as extras."""
    width, height = kept.source_size
    scaled = scale_intrinsics(intrinsics, width, height, config.resolution)
    keypoints_2d, visible = keypoints_from_poses(
        poses, scaled, config.resolution, confidence, config.min_confidence
    )
    attrs = {
        **attrs,
        "fps": float(config.fps),
        "intrinsics": scaled.tolist(),
        "source_fps": float(kept.source_fps),
        "source_frames": int(kept.source_frames),
        "source_size": [int(width), int(height)],
    }
    extra = {
        "keypoints_3d": keypoints_3d_in_episode_frame(poses),
        "source_frame": kept.indices.astype(np.int64),
    }
    if confidence is not None:
        extra["keypoint_confidence"] = np.asarray(confidence, dtype=np.float32)
    return ImportedEpisode(rgb, poses_to_actions(poses), keypoints_2d, visible, attrs, extra)


def check_finite(path: str | Path, key: str, value: np.ndarray) -> None:
    """Raise EpisodeSkipped naming the first non-finite frame of ``value`` (frames first)."""
    bad = ~np.isfinite(np.asarray(value, dtype=np.float64))
    if bad.any():
        frame = int(np.argwhere(bad)[0][0])
        raise EpisodeSkipped(path, f"{key} has non-finite values (first at frame {frame})")


# ---------------------------------------------------------------------------------------------
# The import loop
# ---------------------------------------------------------------------------------------------


def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def run_import(
    sources: Sequence[EpisodeSource],
    load: Callable[[EpisodeSource, ImportConfig], ImportedEpisode],
    out: str | Path,
    config: ImportConfig,
    source_name: str,
    progress: bool = True,
) -> ImportReport:
    """Import ``sources`` into the store at ``out`` (created if absent), resumably.

    Episodes already complete in the store are skipped without being read. An episode whose
    ``load`` raises :class:`EpisodeSkipped` (or whose arrays the store rejects) is reported on one
    line and left out; the others go on. Action statistics are recomputed when anything was added.
    """
    from tqdm import tqdm

    store = EpisodeStore.create(out, exist_ok=True)
    _check_store_matches(store, config)
    sources = sorted(sources, key=lambda s: s.name)
    if config.limit is not None:
        sources = sources[: config.limit]
    report = ImportReport(store_path=Path(out), found=len(sources))
    bar = tqdm(sources, desc=f"import {source_name}", unit="ep", disable=not progress or None)
    for source in bar:
        if store.has_episode(source.name):
            report.already_present.append(source.name)
            continue
        bar.set_postfix_str(source.name, refresh=False)
        try:
            episode = load(source, config)
            _check_episode(source, episode, config.resolution)
            split = split_for(source.name, config.split_seed, config.val_frac, config.test_frac)
            store.write_episode(
                source.name,
                rgb=episode.rgb,
                action=episode.action,
                keypoints_2d=episode.keypoints_2d,
                keypoints_visible=episode.keypoints_visible,
                attrs={**episode.attrs, "split": split},
                extra=episode.extra,
            )
        except EpisodeSkipped as exc:
            report.skipped.append((source.name, str(exc)))
            _say(f"error: {exc}")
            continue
        except (StoreError, ValueError) as exc:  # the store refused what the source gave
            reason = str(EpisodeSkipped(source.path, str(exc)))
            report.skipped.append((source.name, reason))
            _say(f"error: {reason}")
            continue
        report.imported.append(source.name)
        report.frames += int(episode.rgb.shape[0])
    if report.imported:
        store.compute_action_stats()
    return report


def _check_store_matches(store: EpisodeStore, config: ImportConfig) -> None:
    """Appending to a store is only sound at the same resolution and frame rate."""
    names = store.episode_names()
    if not names:
        return
    first = store.episode(names[0])
    resolution = first.read("rgb", 0, 1).shape[1]
    if resolution != config.resolution or float(first.attrs["fps"]) != float(config.fps):
        raise StoreError(
            f"{store.path} holds {resolution} px frames at {first.attrs['fps']:g} fps; this import "
            f"asks for {config.resolution} px at {config.fps:g} fps (use the same or a new --out)"
        )


def _check_episode(source: EpisodeSource, episode: ImportedEpisode, resolution: int) -> None:
    length = episode.rgb.shape[0]
    expected = {
        "rgb": (length, resolution, resolution, 3),
        "action": (length, ACTION_DIM),
        "keypoints_2d": (length, NUM_KEYPOINTS, 2),
        "keypoints_visible": (length, NUM_KEYPOINTS),
    }
    for key, shape in expected.items():
        actual = getattr(episode, key).shape
        if actual != shape:  # an importer bug, not bad input: say so plainly
            raise AssertionError(f"{source.path}: importer produced {key} {actual}, not {shape}")
    check_finite(source.path, "action", episode.action)


def print_report(report: ImportReport) -> int:
    """Print the summary (stdout) and return the CLI exit code."""
    for line in report.summary_lines():
        print(line)
    if report.found == 0:
        print("error: no source episodes found", file=sys.stderr)
    return report.exit_code
