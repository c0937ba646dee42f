"""The Zarr v3 episode store: one store per data set, one group per episode.

Layout::

    STORE.zarr/                      root group, attrs: schema_version, kind, action_stats
      episodes/<name>/               one complete episode
        rgb                (T, H, W, 3) uint8
        action             (T, 57) float32        (dexac_env.actions conventions)
        keypoints_2d       (T, 12, 2) float32     pixels, KEYPOINT_NAMES order
        keypoints_visible  (T, 12) bool
        [reward (T,) float32, success (T,) bool, keypoints_3d (T, 12, 3), latent (T', C, h, w), ...]
        attrs: task, description, fps, source, split, intrinsics (3x3), length
      _incomplete/<name>~<pid>-<id>/  episodes being written (never read; removed when empty)

Atomic writes: an episode is written under ``_incomplete/`` and moved into ``episodes/`` by one
directory rename once every array is on disk, so a process killed mid-episode leaves nothing
that readers see; the next write of that name discards the leftovers of dead writers. Several
processes may write into one store at once: each stages under its own name, and the rename
fails when another writer committed the name first (rename-if-absent), so an episode is never
half-replaced and ``overwrite=False`` never destroys a committed one.

Chunking: ``FRAMES_PER_CHUNK`` frames per chunk along time, whole frames per chunk, Blosc-zstd
(bitshuffle). ``benchmarks/bench_store.py`` measured the choice (see the README): a random
16-frame window of 64 px episodes costs 5.9 ms with 1-frame chunks, 3.3 ms with 8, 2.7 ms with
16 and 2.6 ms with 32; 16 is within noise of the best and keeps short episodes cheap to rewrite.
This module is the only one that imports zarr.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from dexac_env.actions import ACTION_DIM, FAMILY_NAMES, NUM_KEYPOINTS, family_mask

SCHEMA_VERSION = 1
INCOMPLETE = "_incomplete"  # staging folder of episodes being written
STAGING_SEP = "~"  # <name>~<pid>-<random>: one staging folder per writer and write
COMMIT_ATTEMPTS = 5
STORE_KIND = "dexac-episode-store"
FRAMES_PER_CHUNK = 16
REQUIRED_ARRAYS = ("rgb", "action", "keypoints_2d", "keypoints_visible")
REQUIRED_ATTRS = ("task", "description", "fps", "source", "split", "intrinsics")
SPLITS = ("train", "val", "test")


class StoreError(ValueError):
    """A store problem a user can fix; its message is one line meant to be printed as is."""


@dataclass(frozen=True)
class ActionStats:
    """Per-dimension action statistics over a store, each (57,) float64."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            "count": int(self.count),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionStats:
        arrays = {k: np.asarray(d[k], dtype=np.float64) for k in ("mean", "std", "min", "max")}
        return cls(count=int(d["count"]), **arrays)


class _RunningStats:
    """Chan et al. parallel mean/variance, merged one episode at a time (float64)."""

    def __init__(self, dim: int):
        self.count = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        n = values.shape[0]
        if n == 0:
            return
        batch_mean = values.mean(axis=0)
        batch_m2 = ((values - batch_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + batch_m2 + delta**2 * self.count * n / total
        self.count = total
        self.min = np.minimum(self.min, values.min(axis=0))
        self.max = np.maximum(self.max, values.max(axis=0))

    def finish(self) -> ActionStats:
        if self.count == 0:
            raise StoreError("cannot compute action statistics: the store has no frames")
        std = np.sqrt(self.m2 / self.count)
        return ActionStats(self.mean, std, self.min, self.max, self.count)


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


class Episode:
    """Read access to one complete episode (arrays are read lazily)."""

    def __init__(self, name: str, group: zarr.Group):
        self.name = name
        self._group = group
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.length = int(self.attrs["length"])
        self._arrays = dict(group.arrays())

    @property
    def task_text(self) -> str:
        """The episode's language instruction: its description, else its task name, else ''."""
        return str(self.attrs.get("description") or self.attrs.get("task") or "")

    def keys(self) -> list[str]:
        return sorted(self._arrays)

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of array ``key`` without reading it."""
        if key not in self._arrays:
            raise StoreError(f"episode {self.name!r} has no array {key!r}; it has {self.keys()}")
        return tuple(self._arrays[key].shape)

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        if key not in self._arrays:
            raise StoreError(f"episode {self.name!r} has no array {key!r}; it has {self.keys()}")
        return np.asarray(self._arrays[key][start:stop])

    def __repr__(self) -> str:
        return f"Episode({self.name!r}, length={self.length}, task={self.attrs.get('task')!r})"


class EpisodeStore:
    """A Zarr v3 data set of episodes. Use :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(self, path: Path, root: zarr.Group, mode: str):
        self.path = path
        self._root = root
        self.mode = mode
        self._open_episodes: dict[str, Episode] = {}  # opening a group costs ~ms: keep them

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, exist_ok: bool = False) -> EpisodeStore:
        """Create a new store at ``path``; with ``exist_ok`` an existing store is opened for append."""
        path = Path(path)
        if path.exists():
            if exist_ok:
                return cls.open(path, mode="a")
            raise StoreError(f"{path} already exists (pass exist_ok=True to append to it)")
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        root.attrs.update({"kind": STORE_KIND, "schema_version": SCHEMA_VERSION})
        root.create_group("episodes")
        return cls(path, root, "a")

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> EpisodeStore:
        """Open an existing store; raises :class:`StoreError` with one line if it is not one."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} is not a DexAC episode store (no zarr.json at its root)")
        try:
            meta = json.loads((path / "zarr.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}/zarr.json is unreadable: {exc}") from exc
        attrs = meta.get("attributes", {})
        if attrs.get("kind") != STORE_KIND:
            raise StoreError(f"{path} is a Zarr group but not a DexAC episode store")
        version = attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path} has store schema version {version}, this code reads version "
                f"{SCHEMA_VERSION}; re-import or re-generate the data set"
            )
        root = zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
        return cls(path, root, mode)

    # -- episodes --------------------------------------------------------------------------------

    def episode_names(self) -> list[str]:
        """Names of complete episodes, sorted."""
        episodes_dir = self.path / "episodes"
        if not episodes_dir.is_dir():
            return []
        return sorted(p.name for p in episodes_dir.iterdir() if (p / "zarr.json").is_file())

    def __len__(self) -> int:
        return len(self.episode_names())

    def has_episode(self, name: str) -> bool:
        return (self.path / "episodes" / name / "zarr.json").is_file()

    def episode(self, name: str) -> Episode:
        cached = self._open_episodes.get(name)
        if cached is not None:
            return cached
        if not self.has_episode(name):
            raise StoreError(f"no episode {name!r} in {self.path}")
        episode = Episode(name, zarr.open_group(str(self.path / "episodes" / name), mode="r"))
        if self.mode == "r":  # an appendable store may rewrite episodes; do not cache those
            self._open_episodes[name] = episode
        return episode

    def episodes(self, split: str | None = None) -> list[Episode]:
        found = [self.episode(n) for n in self.episode_names()]
        return [e for e in found if split is None or e.attrs.get("split") == split]

    def window(
        self, name: str, start: int, length: int, keys: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """Frames ``[start, start + length)`` of every (or the given) per-frame array."""
        episode = self.episode(name)
        if length < 1 or start < 0 or start + length > episode.length:
            raise StoreError(
                f"window (start={start}, length={length}) is out of range for episode {name!r} "
                f"of {episode.length} frames (valid starts: 0..{episode.length - max(length, 1)})"
            )
        keys = keys or tuple(
            k
            for k in episode.keys()
            if k in REQUIRED_ARRAYS or k in ("reward", "success", "keypoints_3d")
        )
        return {k: episode.read(k, start, start + length) for k in keys}

    def write_episode(
        self,
        name: str,
        rgb: np.ndarray,
        action: np.ndarray,
        keypoints_2d: np.ndarray,
        keypoints_visible: np.ndarray,
        attrs: dict[str, Any],
        extra: dict[str, np.ndarray] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write one episode atomically (see the module docstring). Validates every input."""
        self._check_writable()
        if not name or "/" in name or name.startswith((".", "_")):
            raise ValueError(f"episode name must be a plain non-empty name, got {name!r}")
        if self.has_episode(name) and not overwrite:
            raise StoreError(f"episode {name!r} already exists in {self.path}")
        arrays = _validate_episode(rgb, action, keypoints_2d, keypoints_visible, extra or {})
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise ValueError(
                f"episode attrs are missing {missing}; required: {list(REQUIRED_ATTRS)}"
            )
        if attrs["split"] not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {attrs['split']!r}")
        length = arrays["rgb"].shape[0]

        self._discard_leftovers(name)
        staging = self._staging_path(name)
        try:
            group = zarr.open_group(str(staging), mode="w", zarr_format=3)
            for key, value in arrays.items():
                _write_array(group, key, value)
            group.attrs.update({**_json_safe(attrs), "length": length})
            self._commit(staging, name, overwrite)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            _remove_if_empty(self.path / INCOMPLETE)

    # -- concurrent writers: every writer stages under its own name, commits by rename-if-absent

    def _staging_path(self, name: str) -> Path:
        return self.path / INCOMPLETE / f"{name}{STAGING_SEP}{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _discard_leftovers(self, name: str) -> None:
        """Remove staging folders of ``name`` left by writers that died (their pid is gone)."""
        for path in (self.path / INCOMPLETE).glob(f"{name}{STAGING_SEP}*"):
            pid = path.name[len(name) + len(STAGING_SEP) :].split("-")[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)

    def _commit(self, staging: Path, name: str, overwrite: bool) -> None:
        """Move ``staging`` to ``episodes/name`` by one rename, which fails if another writer
        committed that name first; with ``overwrite`` the old episode is moved aside first."""
        final = self.path / "episodes" / name
        for _ in range(COMMIT_ATTEMPTS):
            if overwrite and final.exists():
                retired = self._staging_path(name)
                try:
                    os.rename(final, retired)
                except FileNotFoundError:
                    pass  # another writer retired it first
                else:
                    shutil.rmtree(retired, ignore_errors=True)
            try:
                os.rename(staging, final)  # the commit point: fails on an existing episode
                self._open_episodes.pop(name, None)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if not overwrite:
                    raise StoreError(
                        f"episode {name!r} already exists in {self.path} (another writer "
                        "committed it first; pass overwrite=True to replace it)"
                    ) from exc
        raise StoreError(f"episode {name!r} in {self.path} keeps being rewritten by other writers")

    def write_array(self, name: str, key: str, value: np.ndarray, overwrite: bool = True) -> None:
        """Add or replace a derived array (e.g. cached ``latent``) of a complete episode."""
        self._check_writable()
        if key in REQUIRED_ARRAYS:
            raise ValueError(f"{key!r} is a primary array; rewrite the episode instead")
        episode = self.episode(name)
        group = zarr.open_group(str(self.path / "episodes" / name), mode="r+")
        if key in episode and not overwrite:
            raise StoreError(f"episode {name!r} already has {key!r}")
        _write_array(group, key, np.asarray(value))

    def _check_writable(self) -> None:
        if self.mode != "a":
            raise StoreError(f"{self.path} was opened read-only; open it with mode='a' to write")

    # -- statistics and summary ----------------------------------------------------------------

    def compute_action_stats(self, split: str | None = "train") -> ActionStats:
        """Streaming per-dimension statistics over episodes of ``split`` (all if None); saved."""
        running = _RunningStats(ACTION_DIM)
        episodes = self.episodes(split)
        if not episodes and split is not None:
            episodes = self.episodes(None)  # a store with no train split: use everything
        for episode in episodes:
            running.update(episode.read("action"))
        stats = running.finish()
        if self.mode == "a":
            self._root.attrs["action_stats"] = stats.to_dict()
        return stats

    @property
    def action_stats(self) -> ActionStats | None:
        raw = dict(zarr.open_group(str(self.path), mode="r").attrs).get("action_stats")
        return None if raw is None else ActionStats.from_dict(raw)

    def summary(self) -> dict[str, Any]:
        episodes = self.episodes()
        lengths = [e.length for e in episodes]
        stats = self.action_stats or (self.compute_action_stats(None) if episodes else None)
        summary: dict[str, Any] = {
            "path": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "episodes": len(episodes),
            "frames": int(sum(lengths)),
            "episode_length": {"min": min(lengths, default=0), "max": max(lengths, default=0)},
            "resolution": list(episodes[0].read("rgb", 0, 1).shape[1:3]) if episodes else None,
            "tasks": dict(Counter(str(e.attrs.get("task")) for e in episodes)),
            "splits": dict(Counter(str(e.attrs.get("split")) for e in episodes)),
            "sources": dict(Counter(str(e.attrs.get("source")) for e in episodes)),
            "incomplete": sorted(  # names of episodes being written or left by a dead writer
                {p.name.split(STAGING_SEP)[0] for p in (self.path / INCOMPLETE).glob("*")}
            ),
        }
        if stats is not None:
            var = stats.std**2
            summary["action_variance_by_family"] = {
                f: {
                    "mean": float(var[family_mask(f)].mean()),
                    "min": float(var[family_mask(f)].min()),
                    "max": float(var[family_mask(f)].max()),
                }
                for f in FAMILY_NAMES
            }
        return summary


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove_if_empty(path: Path) -> None:
    """Keep the store a plain Zarr hierarchy when nothing is being written (a walk warns about
    the non-Zarr staging folder); another writer's staging keeps it."""
    try:
        path.rmdir()
    except OSError:
        pass


def _write_array(group: zarr.Group, key: str, value: np.ndarray) -> None:
    value = np.ascontiguousarray(value)
    chunks = (min(FRAMES_PER_CHUNK, max(value.shape[0], 1)),) + value.shape[1:]
    array = group.create_array(
        key,
        shape=value.shape,
        dtype=value.dtype,
        chunks=chunks,
        compressors=_compressor(),
        overwrite=True,
    )
    array[...] = value


def _validate_episode(rgb, action, keypoints_2d, keypoints_visible, extra) -> dict[str, np.ndarray]:
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 (T, H, W, 3), got {rgb.dtype} {rgb.shape}")
    length = rgb.shape[0]
    if length < 1:
        raise ValueError("an episode needs at least one frame")
    expected = {
        "action": ((length, ACTION_DIM), np.float32),
        "keypoints_2d": ((length, NUM_KEYPOINTS, 2), np.float32),
        "keypoints_visible": ((length, NUM_KEYPOINTS), np.bool_),
    }
    arrays = {"rgb": rgb}
    for key, value in (
        ("action", action),
        ("keypoints_2d", keypoints_2d),
        ("keypoints_visible", keypoints_visible),
    ):
        shape, dtype = expected[key]
        value = np.asarray(value)
        if value.shape != shape:
            raise ValueError(f"{key} must have shape {shape}, got {value.shape}")
        if dtype != np.bool_ and not np.all(np.isfinite(value)):
            raise ValueError(f"{key} contains NaN or inf")
        arrays[key] = value.astype(dtype)
    for key, value in extra.items():
        value = np.asarray(value)
        if key in arrays:
            raise ValueError(f"extra array {key!r} clashes with a required array")
        if value.ndim == 0 or value.shape[0] != length:
            raise ValueError(
                f"extra array {key!r} must have {length} frames first, got shape {value.shape}"
            )
        arrays[key] = value
    return arrays


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
