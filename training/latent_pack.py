"""Training packs: one ``.npz`` holding exactly what world-model training reads from a store.

A pack is made from a store whose latents are cached (``training/cache_latents.py``) and holds,
for the episodes of one split: the cached latents, the actions, reward/success, the task-text
features, the semantic image features of chosen pixel frames, and the store's action
statistics. ``data.store: <pack>.npz`` in a world-model config trains from it with the same
windows, in the same order, as from the store (:class:`PackedWindowDataset` is
``LatentWindowDataset`` reading the pack instead of Zarr), so:

- loading costs array slicing instead of ~6 Zarr reads per window (a small model on a GPU is
  otherwise bound by the store);
- a run can travel to a machine without the store's pixels (a 400-episode 64 px store is
  ~400 MB, mostly rgb and per-frame semantic tokens; its train pack with the reset frame's
  semantic features is ~25 MB).

What a pack may drop, and says so in its metadata: the semantic image features of frames other
than ``semantic_frames`` (then only ``semantic_frame: first_context`` windows can read it; the
default "all" keeps every frame), and latent precision (``--latent-dtype float16``, relative
rounding ~5e-4, far below the tokenizer's own reconstruction error).

    python -m training.latent_pack --store data/sim.zarr --split train \\
        --out data/sim_train.npz --semantic-frames 1 --latent-dtype float16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dexac_env.replay.store import ActionStats, StoreError
from training.datasets import SEMANTIC_KEYS, LatentWindowDataset, open_store

PACK_VERSION = 1
# per-frame arrays a window reads (keys of the store, concatenated over episodes in the pack)
FRAME_KEYS = ("action", "reward", "success")
STATS_KEYS = ("action_mean", "action_std", "action_min", "action_max", "action_count")


def is_pack(path: str | Path) -> bool:
    return str(path).endswith(".npz")


def write_pack(
    store_path: str | Path,
    split: str,
    out: str | Path,
    semantic_frames: list[int] | None = None,
    latent_dtype: str = "float32",
) -> Path:
    """Write the pack of ``split``; ``semantic_frames`` = pixel frames whose semantic image
    features are kept (None = all). Returns the path written."""
    if latent_dtype not in ("float32", "float16"):
        raise ValueError(f"latent_dtype must be float32 or float16, got {latent_dtype!r}")
    store = open_store(store_path)
    episodes = store.episodes(split)
    if not episodes:
        raise StoreError(f"store {store_path} has no episodes in split {split!r}")
    stats = store.action_stats or store.compute_action_stats("train")
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("latent", *FRAME_KEYS)}
    arrays.update(semantic_image=[], semantic_text=[])
    lengths, latent_lengths, names = [], [], []
    has_semantic = all(all(k in e.keys() for k in SEMANTIC_KEYS) for e in episodes)
    for episode in tqdm(episodes, desc=f"pack {split}", unit="episode"):
        keys = episode.keys()
        if "latent" not in keys:
            raise StoreError(
                f"episode {episode.name!r} has no cached latents; run training/cache_latents.py"
            )
        names.append(episode.name)
        lengths.append(episode.length)
        latent = episode.read("latent", 0, episode.shape("latent")[0])
        latent_lengths.append(latent.shape[0])
        arrays["latent"].append(latent.astype(latent_dtype))
        for key in FRAME_KEYS:
            if key in keys:
                arrays[key].append(episode.read(key, 0, episode.length))
        if has_semantic:
            frames = range(episode.length) if semantic_frames is None else semantic_frames
            if max(frames) >= episode.length:
                raise StoreError(f"episode {episode.name!r} has no frame {max(frames)}")
            image = episode.read("semantic_image", 0, episode.length)
            arrays["semantic_image"].append(image[list(frames)])
            arrays["semantic_text"].append(episode.read("semantic_text", 0, 1)[0])
    payload: dict[str, Any] = {
        "names": np.asarray(names),
        "lengths": np.asarray(lengths, np.int64),
        "latent_lengths": np.asarray(latent_lengths, np.int64),
        "semantic_frames": np.asarray(
            [-1] if semantic_frames is None else semantic_frames, np.int64
        ),
        "action_mean": stats.mean,
        "action_std": stats.std,
        "action_min": stats.min,
        "action_max": stats.max,
        "action_count": np.asarray(stats.count),
        "meta": np.asarray(
            json.dumps(
                {
                    "pack_version": PACK_VERSION,
                    "store": str(store_path),
                    "split": split,
                    "latent_dtype": latent_dtype,
                    "semantic_frames": "all" if semantic_frames is None else semantic_frames,
                }
            )
        ),
    }
    for key, parts in arrays.items():
        if not parts or len(parts) < len(episodes):  # absent, or not in every episode
            continue
        # semantic_image of chosen frames: (E, K, S, D); every other array, semantic_image of
        # all frames included, is concatenated along time (sum T, ...) like the actions
        kept_per_episode = key == "semantic_image" and semantic_frames is not None
        stack = kept_per_episode or key == "semantic_text"
        payload[key] = np.stack(parts) if stack else np.concatenate(parts)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **payload)
    return out


class _PackEpisode:
    """One episode of a pack, with the reading interface of a store's ``Episode``."""

    def __init__(self, pack: _Pack, index: int) -> None:
        self.pack, self.index = pack, index
        self.name = str(pack.names[index])
        self.length = int(pack.lengths[index])

    def keys(self) -> list[str]:
        keys = ["latent", *[k for k in (*FRAME_KEYS, "latent_target") if k in self.pack.arrays]]
        if "semantic_image" in self.pack.arrays:
            keys += list(SEMANTIC_KEYS)
        return keys

    def shape(self, key: str) -> tuple[int, ...]:
        if key != "latent":
            raise KeyError(key)
        return (int(self.pack.latent_lengths[self.index]), *self.pack.arrays["latent"].shape[1:])

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        pack, i = self.pack, self.index
        if key in ("latent", "latent_target"):  # latent_target: see training/own_rollout.py
            base = pack.latent_starts[i]
            return pack.arrays[key][base + start : base + stop].astype(np.float32)
        if key in FRAME_KEYS:
            base = pack.frame_starts[i]
            return pack.arrays[key][base + start : base + stop]
        if key == "semantic_text":
            return pack.arrays["semantic_text"][i][None]
        if key == "semantic_image":
            if pack.semantic_all:
                base = pack.frame_starts[i]
                return pack.arrays["semantic_image"][base + start : base + stop]
            rows = [pack.semantic_row(frame) for frame in range(start, stop)]
            return pack.arrays["semantic_image"][i][rows]
        raise KeyError(f"a training pack holds no {key!r}")


class _Pack:
    def __init__(self, path: str | Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            self.arrays = {k: data[k] for k in data.files}
        self.meta = json.loads(str(self.arrays.pop("meta")))
        if self.meta.get("pack_version") != PACK_VERSION:
            raise StoreError(
                f"{path} is pack version {self.meta.get('pack_version')}, this code reads "
                f"{PACK_VERSION}; re-make it with python -m training.latent_pack"
            )
        self.names = self.arrays.pop("names")
        self.lengths = self.arrays.pop("lengths")
        self.latent_lengths = self.arrays.pop("latent_lengths")
        self.frame_starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.latent_starts = np.concatenate([[0], np.cumsum(self.latent_lengths)[:-1]])
        frames = self.arrays.pop("semantic_frames").tolist()
        self.semantic_all = frames == [-1]
        self.semantic_frames = frames
        self.action_stats = _action_stats(self.arrays)
        for key in STATS_KEYS:
            del self.arrays[key]
        self.path = Path(path)

    def semantic_row(self, frame: int) -> int:
        if frame not in self.semantic_frames:
            raise StoreError(
                f"pack {self.path} keeps semantic image features of frames {self.semantic_frames} "
                f"only, a window asked for frame {frame}: train with data.semantic_frame: "
                "first_context, or re-make the pack with --semantic-frames all"
            )
        return self.semantic_frames.index(frame)


def pack_episodes(path: str | Path) -> list[_PackEpisode]:
    """The episodes of a pack in its order, each with a store episode's reading interface."""
    pack = _Pack(path)
    return [_PackEpisode(pack, i) for i in range(len(pack.names))]


def read_pack_stats(path: str | Path) -> ActionStats:
    """The action statistics of the store a pack was made from (reads only those arrays: an
    ``.npz`` member is loaded when accessed, and the dataset loads the rest once)."""
    with np.load(path, allow_pickle=False) as data:
        return _action_stats(data)


def _action_stats(arrays) -> ActionStats:
    """The ActionStats stored under STATS_KEYS of a pack's arrays (a dict or an open .npz)."""
    mean, std, low, high, count = (arrays[key] for key in STATS_KEYS)
    return ActionStats(mean=mean, std=std, min=low, max=high, count=int(count))


class PackedWindowDataset(LatentWindowDataset):
    """``LatentWindowDataset`` over a training pack: the same items in the same order."""

    def __init__(self, pack_path: str | Path, split: str, *args, **kwargs) -> None:
        self._pack = _Pack(pack_path)
        if self._pack.meta["split"] != split:
            raise StoreError(
                f"pack {pack_path} holds split {self._pack.meta['split']!r}, not {split!r}"
            )
        self._pack_episodes = {
            str(name): _PackEpisode(self._pack, i) for i, name in enumerate(self._pack.names)
        }
        super().__init__(pack_path, split, *args, **kwargs)

    @property
    def action_stats(self) -> ActionStats:
        return self._pack.action_stats

    def _split_episodes(self) -> list[_PackEpisode]:
        return list(self._pack_episodes.values())

    def _episode(self, name: str) -> _PackEpisode:
        return self._pack_episodes[name]

    def __getstate__(self) -> dict[str, Any]:  # arrays travel to workers as they are
        return dict(self.__dict__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, help="the pack to write (.npz)")
    parser.add_argument(
        "--semantic-frames",
        default="all",
        help="'all', or comma-separated pixel frames whose semantic image features to keep "
        "(1 = the first reset frame of a 2-frame context, for data.semantic_frame: first_context)",
    )
    parser.add_argument("--latent-dtype", default="float32", choices=("float32", "float16"))
    args = parser.parse_args(argv)
    if not is_pack(args.out):
        parser.error(f"--out must end in .npz, got {args.out}")
    frames = (
        None if args.semantic_frames == "all" else [int(f) for f in args.semantic_frames.split(",")]
    )
    try:
        path = write_pack(args.store, args.split, args.out, frames, args.latent_dtype)
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
