"""Torch datasets over the episode store, and the resumable, sharded batch order.

- :class:`ClipDataset`: short uint8 pixel clips, for the tokenizer and the semantic encoder.
- :class:`LatentWindowDataset`: world-model windows of *cached* latents (written by
  ``training/cache_latents.py``), so world-model training never re-encodes pixels.
- :class:`ShardedBatchSampler`: which samples each rank sees at each micro-step, a pure
  function of ``(seed, epoch)``; ranks get disjoint shards and a resumed run continues with
  exactly the samples the interrupted run had not yet used.

Latent/action alignment (``tc`` = the tokenizer's temporal compression; the causal layout
``T' = 1 + (T - 1) / tc`` of Wan-style VAEs, and ``T' = T`` for ``tc = 1``): latent frame ``j``
ends at pixel frame ``j * tc``. A window starting at latent ``s`` with ``c`` context and ``k``
target latents has ``actions = action[(s + c - 1) * tc : (s + c - 1) * tc + 1 + k * tc]``: row 0
is the pose of the last context frame, rows 1.. the poses of the predicted frames; ``reward``
and ``success`` are read at the last pixel frame of every target latent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dexac_env.defaults import open_store
from dexac_env.replay.store import Episode, StoreError

SEMANTIC_KEYS = ("semantic_image", "semantic_text")
# Which frame's semantic features condition a window. A rollout computes them once, from its
# reset frame, and keeps them while the context slides, so at rollout step n they are n chunks
# old: "rollout" draws that frame anywhere between the episode's first possible reset frame and
# the window's last context frame (a pure function of the item index, so resume stays exact);
# "last_context" always takes the newest context frame; "first_context" always the episode's
# first possible reset frame (a rollout from the episode's start, as `dexac evaluate` runs).
SEMANTIC_FRAMES = ("rollout", "last_context", "first_context")


class _StoreDataset(Dataset):
    """Holds the store path; every (worker) process opens its own handles on first use."""

    def __init__(self, store_path: str | Path, split: str):
        self.store_path = Path(store_path)
        self.split = split
        self._episodes: dict[str, Episode] | None = None

    def _episode(self, name: str) -> Episode:
        if self._episodes is None:
            store = open_store(self.store_path)
            self._episodes = {e.name: e for e in store.episodes(self.split)}
        return self._episodes[name]

    def _split_episodes(self) -> list[Episode]:
        episodes = open_store(self.store_path).episodes(self.split)
        if not episodes:
            raise StoreError(f"store {self.store_path} has no episodes in split {self.split!r}")
        return episodes

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_episodes"] = None  # zarr handles are not shared across processes
        return state


class ClipDataset(_StoreDataset):
    """``{"frames": uint8 (clip_frames, H, W, 3), "_index": int}`` clips of one split."""

    def __init__(self, store_path: str | Path, split: str, clip_frames: int = 1, stride: int = 1):
        super().__init__(store_path, split)
        self.clip_frames = clip_frames
        self.index: list[tuple[str, int]] = []
        for episode in self._split_episodes():
            starts = range(0, episode.length - clip_frames + 1, stride)
            self.index.extend((episode.name, s) for s in starts)
        if not self.index:
            raise StoreError(f"no episode of split {split!r} has {clip_frames} frames")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        name, start = self.index[i]
        frames = self._episode(name).read("rgb", start, start + self.clip_frames)
        return {"frames": torch.from_numpy(frames), "_index": i}


class LatentWindowDataset(_StoreDataset):
    """World-model windows of cached latents.

    Item keys: ``context_latents`` (c, C, h, w) float32, ``target_latents`` (k, C, h, w),
    ``actions`` (1 + k * tc, 57) raw units, ``reward``/``success`` (k,) float32 when every
    episode has them, ``semantic_image`` (S_img, D_img) / ``semantic_text`` (S_txt, D_txt)
    float32 when ``semantic`` is set, ``_index`` (the dataset index, for bookkeeping). In
    episodes that hold ``latent_target`` (an imagined pack, training/own_rollout.py) the
    targets are read from it and the context from ``latent``.
    """

    def __init__(
        self,
        store_path: str | Path,
        split: str,
        context_frames: int,
        chunk_frames: int,
        temporal_compression: int = 1,
        stride: int = 1,
        semantic: bool = False,
        latent_shape: tuple[int, int, int] | None = None,
        semantic_frame: str = "rollout",
    ):
        super().__init__(store_path, split)
        if semantic_frame not in SEMANTIC_FRAMES:
            raise ValueError(
                f"semantic_frame must be one of {SEMANTIC_FRAMES}, got {semantic_frame!r}"
            )
        self.semantic_frame = semantic_frame
        if context_frames < 1 or chunk_frames < 1:
            raise ValueError(
                f"context/chunk frames must be >= 1, got {context_frames}/{chunk_frames}"
            )
        self.context_frames = context_frames
        self.chunk_frames = chunk_frames
        self.tc = temporal_compression
        self.semantic = semantic
        window = context_frames + chunk_frames
        self.index: list[tuple[str, int]] = []
        episodes = self._split_episodes()
        for episode in episodes:
            keys = episode.keys()
            needed = ["latent"] + (list(SEMANTIC_KEYS) if semantic else [])
            missing = [k for k in needed if k not in keys]
            if missing:
                raise StoreError(
                    f"episode {episode.name!r} of {self.store_path} has no cached {missing}; run "
                    f"`python training/cache_latents.py --store {self.store_path} ...` first"
                )
            shape = episode.shape("latent")
            if latent_shape is not None and tuple(shape[1:]) != tuple(latent_shape):
                raise StoreError(
                    f"cached latents of {episode.name!r} are {tuple(shape[1:])}, the model expects "
                    f"{tuple(latent_shape)}; re-run cache_latents.py with this model's tokenizer"
                )
            expected_t = 1 + (episode.length - 1) // self.tc
            if shape[0] != expected_t:
                raise StoreError(
                    f"episode {episode.name!r}: {shape[0]} cached latent frames, expected "
                    f"{expected_t} for {episode.length} frames at temporal compression {self.tc}"
                )
            starts = range(0, shape[0] - window + 1, stride)
            self.index.extend((episode.name, s) for s in starts)
        if not self.index:
            raise StoreError(
                f"no episode of split {split!r} in {self.store_path} is long enough for a window "
                f"of {window} latent frames"
            )
        self.has_reward = all("reward" in e.keys() and "success" in e.keys() for e in episodes)
        # an imagined pack (training/own_rollout.py): contexts are the model's own frames,
        # targets the recorded ones
        self.has_target = all("latent_target" in e.keys() for e in episodes)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        name, start = self.index[i]
        episode = self._episode(name)
        c, k, tc = self.context_frames, self.chunk_frames, self.tc
        # 1. latents: context then targets, one read
        latents = episode.read("latent", start, start + c + k).astype(np.float32)  # (c+k, C, h, w)
        # 2. action chunk: pose of the last context frame, then one row per predicted frame
        first_row = (start + c - 1) * tc
        actions = episode.read("action", first_row, first_row + 1 + k * tc)  # (1 + k*tc, 57)
        if self.has_target:
            latents[c:] = episode.read("latent_target", start + c, start + c + k)
        item: dict[str, Any] = {
            "context_latents": torch.from_numpy(latents[:c]),
            "target_latents": torch.from_numpy(latents[c:]),
            "actions": torch.from_numpy(actions.astype(np.float32)),
            "_index": i,
        }
        # 3. reward head targets at the last pixel frame of every target latent
        if self.has_reward:
            frames = (np.arange(start + c, start + c + k) * tc).tolist()
            lo, hi = frames[0], frames[-1] + 1
            item["reward"] = torch.from_numpy(
                episode.read("reward", lo, hi)[np.array(frames) - lo].astype(np.float32)
            )
            item["success"] = torch.from_numpy(
                episode.read("success", lo, hi)[np.array(frames) - lo].astype(np.float32)
            )
        # 4. semantic features of a reset frame (see SEMANTIC_FRAMES) and of the task text
        if self.semantic:
            pixel = (start + c - 1) * tc
            if self.semantic_frame == "rollout":
                rng = np.random.default_rng([i, 0x5E])
                pixel = int(rng.integers((c - 1) * tc, pixel + 1))
            elif self.semantic_frame == "first_context":
                pixel = (c - 1) * tc
            image = episode.read("semantic_image", pixel, pixel + 1)[0]  # (S_img, D_img)
            item["semantic_image"] = torch.from_numpy(image.astype(np.float32))
            item["semantic_text"] = torch.from_numpy(
                episode.read("semantic_text", 0, 1)[0].astype(np.float32)  # (S_txt, D_txt)
            )
        return item


@dataclass(eq=False)
class ShardedBatchSampler:
    """Micro-batches of dataset indices for one rank, from a global order fixed by the seed.

    Epoch ``e`` is the permutation ``default_rng([seed, e]).permutation(n)`` cut into global
    micro-batches of ``batch_size * world_size`` (the tail that does not fill one is dropped);
    rank ``r`` takes positions ``r::world_size`` of each. Micro-step ``m`` is therefore a pure
    function of ``(seed, m)``, so iteration can start at any micro-step.
    """

    num_samples: int
    batch_size: int
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    start: int = 0  # first micro-step
    stop: int | None = None  # micro-step to stop before (None: endless)

    def __post_init__(self) -> None:
        global_batch = self.batch_size * self.world_size
        if self.num_samples < global_batch:
            raise ValueError(
                f"the dataset has {self.num_samples} samples, fewer than one global batch "
                f"({self.batch_size} per rank x {self.world_size} ranks); use a smaller batch or "
                "more data"
            )
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")
        self.batches_per_epoch = self.num_samples // global_batch
        self._cache: tuple[int, np.ndarray] | None = None

    def epoch_of(self, micro_step: int) -> int:
        return micro_step // self.batches_per_epoch

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (
                epoch,
                np.random.default_rng([self.seed, epoch]).permutation(self.num_samples),
            )
        return self._cache[1]

    def global_batch(self, micro_step: int) -> list[int]:
        """Indices of all ranks at ``micro_step`` (rank-major within the global batch)."""
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        size = self.batch_size * self.world_size
        return self._permutation(epoch)[position * size : (position + 1) * size].tolist()

    def batch(self, micro_step: int) -> list[int]:
        return self.global_batch(micro_step)[self.rank :: self.world_size]

    def __iter__(self):
        step = self.start
        while self.stop is None or step < self.stop:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.stop - self.start)
