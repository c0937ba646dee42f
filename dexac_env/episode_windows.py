"""Episode windows: which stored episodes an env draws from, which window a reset picks, and
what a window gives the world model (encoded context, semantic features, goal latent).

A *window* is ``(episode name, start)``: the env's context is frames ``start ..
start + context_pixel_frames - 1`` of that episode, and the imagined (or replayed) episode goes
on from its last frame. ``DexACWorld-v0`` (through :class:`EpisodeWindows`) and
``DexACReplay-v0`` choose windows with the same reset options, parsed once here
(:func:`pick_window`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dexac_env.replay.store import EpisodeStore

RESET_OPTIONS = ("episode", "start")
_CACHE_SIZE = 256


def matching_episodes(
    store: EpisodeStore, task: str | None, split: str | None, min_frames: int
) -> list[str]:
    """Names of the episodes of ``split`` (None: all) whose ``task`` attribute is ``task``
    (None: any) and that have at least ``min_frames`` frames. Raises ValueError naming the
    store's tasks when none matches."""
    found = [
        e.name for e in store.episodes(split)
        if (task is None or e.attrs.get("task") == task) and e.length >= min_frames
    ]
    if not found:
        tasks = sorted({str(e.attrs.get("task")) for e in store.episodes()})
        raise ValueError(
            f"no episode in {store.path} with task={task!r}, split={split!r} and >= {min_frames} "
            f"frames; tasks in the store: {tasks}"
        )
    return found


def pick_window(
    names: list[str], store: EpisodeStore, rng: np.random.Generator, options: dict | None
) -> tuple[str, int]:
    """The (episode name, start) a reset asks for: ``options["episode"]`` (a name in ``store``
    or an index into ``names``; default: drawn from ``names`` with ``rng``) and
    ``options["start"]`` (default 0). Unknown options or a bad episode raise ValueError."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(RESET_OPTIONS))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; known: {list(RESET_OPTIONS)}")
    episode = options.get("episode")
    if episode is None:
        name = names[int(rng.integers(len(names)))]
    elif isinstance(episode, int | np.integer):
        if not 0 <= int(episode) < len(names):
            raise ValueError(f"episode index must be in 0..{len(names) - 1}, got {episode}")
        name = names[int(episode)]
    elif isinstance(episode, str):
        if not store.has_episode(episode):
            raise ValueError(f"no episode {episode!r} in {store.path}")
        name = episode
    else:
        raise ValueError(f"options['episode'] must be a name or an index, got {episode!r}")
    return name, int(options.get("start", 0))


class _LRU(OrderedDict):
    """A dict that keeps its ``_CACHE_SIZE`` most recently used entries."""

    def get_recent(self, key: Any) -> Any:
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        while len(self) > _CACHE_SIZE:
            self.popitem(last=False)
        return value


@dataclass(frozen=True)
class Window:
    """What one episode window gives an env at reset (tensors on the model's device)."""

    context: torch.Tensor  # (context_frames, C, h, w) clean latent frames
    semantic: Any  # the model's semantic features of the last context frame + task text
    goal: torch.Tensor | None  # (C, h, w) latent of the episode's last frame, if asked for
    pose: np.ndarray  # (57,) float64 stored pose of the last context frame
    frame_index: int  # index of the last context frame in the episode


class EpisodeWindows:
    """The episodes a :class:`~dexac_env.world_core.WorldCore` draws from, and its windows
    encoded once (least-recently-used cache of 256 windows and 256 demonstrations)."""

    def __init__(self, model: Any, store: EpisodeStore, task: str | None, split: str | None,
                 device: torch.device, needs_goal: bool):
        self.model, self.store, self.device, self.needs_goal = model, store, device, needs_goal
        wm = model.config
        self.context_frames = int(wm.context_frames)
        compression = int(wm.temporal_compression)
        # pixel frames that encode to context_frames latents (causal VAE: 1 + (c - 1) * tc)
        self.context_pixel_frames = (
            self.context_frames if compression == 1 else 1 + (self.context_frames - 1) * compression
        )
        self.resolution = int(wm.tokenizer.resolution)
        # fails at construction if the task/split filters match nothing
        self.names = matching_episodes(store, task, split, self.context_pixel_frames)
        self._windows: _LRU = _LRU()
        self._demos: _LRU = _LRU()

    def pick(self, rng: np.random.Generator, options: dict | None) -> tuple[str, int]:
        """The window a reset with these ``options`` starts from (see :func:`pick_window`)."""
        return pick_window(self.names, self.store, rng, options)

    def demo_actions(self, name: str) -> np.ndarray:
        """(L, 57) float64 stored actions of episode ``name``."""
        cached = self._demos.get_recent(name)
        if cached is None:
            cached = self._demos.put(name, self.store.episode(name).read("action").astype(np.float64))
        return cached

    def load(self, name: str, start: int) -> Window:
        """The encoded window ``(name, start)`` (cached)."""
        cached = self._windows.get_recent((name, start))
        return cached if cached is not None else self._windows.put((name, start),
                                                                   self._encode(name, start))

    def _encode(self, name: str, start: int) -> Window:
        episode = self.store.episode(name)
        stop = start + self.context_pixel_frames
        if start < 0 or stop > episode.length:
            raise ValueError(
                f"start {start} leaves no room for {self.context_pixel_frames} context frames in "
                f"episode {name!r} of {episode.length} frames "
                f"(valid: 0..{episode.length - self.context_pixel_frames})"
            )
        rgb = episode.read("rgb", start, stop)  # (T, H, W, 3)
        if rgb.shape[1:3] != (self.resolution, self.resolution):
            raise ValueError(
                f"episode {name!r} has {rgb.shape[1]}x{rgb.shape[2]} frames, the world model "
                f"expects {self.resolution}x{self.resolution}; use a store rendered at that size"
            )
        with torch.no_grad():
            frames = torch.from_numpy(rgb).to(self.device)
            context = self.model.encode(frames[None])[0]  # (context_frames, C, h, w)
            if context.shape[0] != self.context_frames:
                raise ValueError(
                    f"encoding {len(rgb)} frames gave {context.shape[0]} latent frames, "
                    f"expected {self.context_frames}"
                )
            semantic = self.model.encode_semantic(frames[-1:], [episode.task_text])
            goal = None
            if self.needs_goal:
                last = torch.from_numpy(episode.read("rgb", episode.length - 1)).to(self.device)
                goal = self.model.encode(last[None])[0, -1]  # (C, h, w)
        return Window(context=context, semantic=semantic, goal=goal,
                      pose=self.demo_actions(name)[stop - 1], frame_index=stop - 1)
