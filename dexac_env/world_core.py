"""The batched core of ``DexACWorld-v0``: N imagined episodes advanced by one sampler call.

The single env (:mod:`dexac_env.world_env`), the Gymnasium vector env
(:mod:`dexac_env.vector_env`) and the SB3 adapter (:mod:`dexac_env.sb3_vec_env`) are thin
layers over :class:`WorldCore`. The core knows the world model only through its facade
(``encode``, ``encode_semantic``, ``predict``, ``decode``, ``reward``).

Per environment it holds the context window of clean latent frames, the current 57-D pose,
the episode's semantic features (computed once per episode window and cached), the episode's
demonstration and, if the reward needs one, the goal latent. :meth:`WorldCore.get_state` /
:meth:`WorldCore.set_state` snapshot and restore all of it (and the sampler's generator) so
that planners can branch.

Action rows: one env step covers ``frames_per_step`` frames. Row 0 is the current pose; row j
(1..frames_per_step) is the linear interpolation ``pose + j / frames_per_step * (target -
pose)`` (6D rotations are interpolated linearly too, the model's Gram-Schmidt reads them back
as rotations). The rows go through :func:`world_model.rollout.rollout_latents`, the one
rollout loop of the project: when a sampler call predicts more frames than the step needs
(``action_frames`` of the model), the extra rows hold the target and the extra predicted frames
are dropped; when it predicts fewer, the sampler runs several times, each call's row 0 being
the previous call's last row.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from dexac_env.actions import ACTION_DIM, HEAD, LEFT_FINGERS, LEFT_WRIST, RIGHT_FINGERS, RIGHT_WRIST
from dexac_env.defaults import load_world_model, open_store
from dexac_env.replay.store import EpisodeStore
from dexac_env.rewards import Reward, RewardInput, check_reward_output, make_reward
from world_model.rollout import rollout_latents

__all__ = ["CoreState", "WorldCore", "WorldEnvConfig", "action_bounds", "load_world_model",
           "open_store", "select_state"]

OBS_MODES = ("rgb", "latent", "dict")
_CACHE_SIZE = 256


@dataclass(frozen=True)
class WorldEnvConfig:
    """Configuration of the imagined environment (every key ``gym.make`` accepts).

    checkpoint: a ``WorldModel`` instance or a path to its ``.safetensors`` (None: the default).
    store: path to an episode store or an open ``EpisodeStore`` (None: the default store).
    task: only draw episodes whose ``task`` attribute equals this (None: all).
    split: only draw episodes of this split (None: all).
    sampling_steps: sampler steps per predicted chunk (None: the model's default).
    cfg_scale: classifier-free guidance scale (None: the model's default).
    frames_per_step: frames one ``step`` covers (the action is the pose of the last one);
        None: one frame, like the simulator's step (the tokenizer's temporal compression
        when it packs several frames per latent). ``action_frames`` is the fast setting: one
        sampler call per step and no predicted frame discarded.
    obs_mode: ``"rgb"`` (uint8 H, W, 3), ``"latent"`` (float32 C, h, w) or ``"dict"``.
    reward: ``"learned"``, ``"goal_image"``, ``"pose_tracking"`` or a callable (rewards.py).
    device: torch device the model runs on.
    render_mode: None or ``"rgb_array"``.
    """

    checkpoint: Any = None
    store: Any = None
    task: str | None = None
    split: str | None = None
    sampling_steps: int | None = None
    cfg_scale: float | None = None
    frames_per_step: int | None = None
    obs_mode: str = "rgb"
    reward: Any = "learned"
    device: str = "cpu"
    render_mode: str | None = None

    def __post_init__(self) -> None:
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        if self.frames_per_step is not None and (
            not isinstance(self.frames_per_step, int) or self.frames_per_step < 1
        ):
            raise ValueError(f"frames_per_step must be an int >= 1, got {self.frames_per_step!r}")
        if self.sampling_steps is not None and (
            not isinstance(self.sampling_steps, int) or self.sampling_steps < 1
        ):
            raise ValueError(f"sampling_steps must be an int >= 1, got {self.sampling_steps!r}")
        if self.render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {self.render_mode!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> WorldEnvConfig:
        """Build from keyword arguments; unknown keys raise one ValueError naming them all."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(f"unknown DexACWorld-v0 argument(s) {unknown}; known: {known}")
        return cls(**kwargs)


def action_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Physical plausibility bounds of the 57-D pose: positions in metres, 6D entries in [-1, 1].

    Head and wrist positions within 2 m of the episode frame's origin; fingertips within
    0.3 m of their wrist. Actions outside are accepted as given (they are poses, not torques).
    """
    high = np.ones(ACTION_DIM, dtype=np.float32)
    for dims in (HEAD, LEFT_WRIST, RIGHT_WRIST):
        high[dims.start : dims.start + 3] = 2.0
    high[LEFT_FINGERS] = 0.3
    high[RIGHT_FINGERS] = 0.3
    return -high, high


@dataclass
class CoreState:
    """A snapshot of a :class:`WorldCore` batch (tensors cloned; safe to keep and restore)."""

    context: torch.Tensor  # (N, context_frames, C, h, w)
    pose: np.ndarray  # (N, 57) float64
    frame_index: np.ndarray  # (N,) int64
    episodes: list[tuple[str, int]]  # (episode name, start) per env
    generator_states: list[torch.Tensor]  # one per env
    extra: dict[str, Any] = field(default_factory=dict)


class WorldCore:
    """N imagined episodes stepped together. Indices in ``reset_envs`` pick which restart."""

    def __init__(self, model: Any, config: WorldEnvConfig, num_envs: int, store: EpisodeStore):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.model = model
        self.config = config
        self.num_envs = num_envs
        self.store = store
        self.device = torch.device(config.device)
        self.reward_fn: Reward = make_reward(config.reward)
        wm = model.config
        self.context_frames = int(wm.context_frames)
        self.chunk_frames = int(wm.chunk_frames)
        self.action_frames = int(wm.action_frames)
        self.temporal_compression = int(wm.temporal_compression)
        self.frames_per_step = config.frames_per_step or self.temporal_compression
        if self.frames_per_step % self.temporal_compression:
            raise ValueError(
                f"frames_per_step must be a multiple of the tokenizer's temporal compression "
                f"{self.temporal_compression}, got {self.frames_per_step}"
            )
        self.resolution = int(wm.tokenizer.resolution)
        self.context_pixel_frames = (
            self.context_frames if self.temporal_compression == 1
            else 1 + (self.context_frames - 1) * self.temporal_compression
        )
        with torch.no_grad():
            probe = torch.zeros(1, 1, self.resolution, self.resolution, 3, dtype=torch.uint8)
            self.latent_shape = tuple(model.encode(probe.to(self.device)).shape[2:])  # (C, h, w)
        # One generator per env: predict() draws each env's noise from its own, so an env's
        # imagined episode depends on its seed only, not on the batch it runs in.
        self.generators = [torch.Generator(device=self.device) for _ in range(num_envs)]
        self._window_cache: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._demo_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._candidates: list[str] | None = None
        self.candidates()  # fail at construction if the task/split filters match nothing
        stats = store.action_stats or store.compute_action_stats(None)
        self.action_std = np.maximum(stats.std, 1e-6)
        # Batch state; filled by reset_envs.
        self.context = torch.zeros((num_envs, self.context_frames, *self.latent_shape),
                                   device=self.device)
        self.pose = np.zeros((num_envs, ACTION_DIM), dtype=np.float64)
        self.frame_index = np.zeros(num_envs, dtype=np.int64)
        self.episodes: list[tuple[str, int]] = [("", 0)] * num_envs
        self._semantic_rows: list[Any] = [None] * num_envs
        self._semantic_batch: Any = None
        self.goal_latent: torch.Tensor | None = None
        self._frames: np.ndarray | None = None  # decoded newest frames, (N, H, W, 3)

    # -- episodes ------------------------------------------------------------------------------

    def demo_actions(self, name: str) -> np.ndarray:
        if name not in self._demo_cache:
            self._demo_cache[name] = self.store.episode(name).read("action").astype(np.float64)
            _trim(self._demo_cache)
        return self._demo_cache[name]

    def _load_window(self, name: str, start: int) -> dict[str, Any]:
        """Encoded context, semantic features and goal latent of one episode window (cached)."""
        key = (name, start)
        if key in self._window_cache:
            self._window_cache.move_to_end(key)
            return self._window_cache[key]
        episode = self.store.episode(name)
        stop = start + self.context_pixel_frames
        if start < 0 or stop > episode.length:
            raise ValueError(
                f"start {start} leaves no room for {self.context_pixel_frames} context frames in "
                f"episode {name!r} of {episode.length} frames (valid: 0..{episode.length - self.context_pixel_frames})"
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
            if self.reward_fn.needs_goal:
                last = torch.from_numpy(episode.read("rgb", episode.length - 1)).to(self.device)
                goal = self.model.encode(last[None])[0, -1]  # (C, h, w)
        entry = {"context": context, "semantic": semantic, "goal": goal,
                 "pose": self.demo_actions(name)[stop - 1], "frame_index": stop - 1}
        self._window_cache[key] = entry
        _trim(self._window_cache)
        return entry

    def reset_envs(self, indices: list[int], picks: list[tuple[str, int]]) -> None:
        """Restart envs ``indices`` on the given (episode name, start) windows."""
        if len(indices) != len(picks):
            raise ValueError(f"{len(indices)} indices but {len(picks)} episode picks")
        goal_rows = []
        for i, (name, start) in zip(indices, picks, strict=True):
            entry = self._load_window(name, int(start))
            self.context[i] = entry["context"]
            self.pose[i] = entry["pose"]
            self.frame_index[i] = entry["frame_index"]
            self.episodes[i] = (name, int(start))
            self._semantic_rows[i] = entry["semantic"]
            goal_rows.append((i, entry["goal"]))
        if self.reward_fn.needs_goal:
            if self.goal_latent is None:
                self.goal_latent = torch.zeros((self.num_envs, *self.latent_shape),
                                               device=self.device)
            for i, goal in goal_rows:
                self.goal_latent[i] = goal
        self._semantic_batch = None
        self._frames = None

    def candidates(self) -> list[str]:
        """Episode names this core draws from (task/split filters, long enough for a context)."""
        if self._candidates is None:
            found = [
                e for e in self.store.episodes(self.config.split)
                if (self.config.task is None or e.attrs.get("task") == self.config.task)
                and e.length >= self.context_pixel_frames
            ]
            if not found:
                tasks = sorted({str(e.attrs.get("task")) for e in self.store.episodes()})
                raise ValueError(
                    f"no episode in {self.store.path} with task={self.config.task!r}, "
                    f"split={self.config.split!r} and >= {self.context_pixel_frames} frames; "
                    f"tasks in the store: {tasks}"
                )
            self._candidates = [e.name for e in found]
        return self._candidates

    def pick(self, rng: np.random.Generator, options: dict | None) -> tuple[str, int]:
        """An (episode, start) window: ``options["episode"]`` (name or index) and
        ``options["start"]`` if given, else a random episode from ``rng`` starting at frame 0."""
        options = dict(options or {})
        unknown = sorted(set(options) - {"episode", "start"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; known: ['episode', 'start']")
        names = self.candidates()
        episode = options.get("episode")
        if episode is None:
            name = names[int(rng.integers(len(names)))]
        elif isinstance(episode, int | np.integer):
            if not 0 <= int(episode) < len(names):
                raise ValueError(f"episode index must be in 0..{len(names) - 1}, got {episode}")
            name = names[int(episode)]
        elif isinstance(episode, str):
            if not self.store.has_episode(episode):
                raise ValueError(f"no episode {episode!r} in {self.store.path}")
            name = episode
        else:
            raise ValueError(f"options['episode'] must be a name or an index, got {episode!r}")
        return name, int(options.get("start", 0))

    def seed(self, indices: list[int], seeds: list[int]) -> None:
        """Seed the sampler generators of envs ``indices``."""
        for i, seed in zip(indices, seeds, strict=True):
            self.generators[i].manual_seed(int(seed))

    # -- stepping ------------------------------------------------------------------------------

    def _semantic(self) -> Any:
        if self._semantic_batch is None and self._semantic_rows[0] is not None:
            rows = self._semantic_rows
            self._semantic_batch = type(rows[0]).cat(rows) if len(rows) > 1 else rows[0]
        return self._semantic_batch

    def step_rows(self, targets: np.ndarray) -> np.ndarray:
        """Action rows (N, 1 + frames_per_step, 57) of one step: the current pose, then the
        linear interpolation towards ``targets`` (the last row is the target itself)."""
        k = self.frames_per_step
        fractions = np.arange(1, k + 1, dtype=np.float64) / k  # (k,)
        rows = self.pose[:, None] + fractions[None, :, None] * (targets - self.pose)[:, None]
        return np.concatenate([self.pose[:, None], rows], axis=1)

    def step(self, targets: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Advance every env to the (validated, (N, 57)) targets. Returns (reward (N,), latents).

        The rows go through :func:`world_model.rollout.rollout_latents`, the rollout loop the
        evaluation uses too (each sampler call keeps all it predicts; the last call's extra
        frames, which hold the target, are dropped)."""
        rows = torch.as_tensor(self.step_rows(targets), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            latents, self.context = rollout_latents(
                self.model, self.context, rows, self._semantic(), generator=self.generators,
                num_steps=self.config.sampling_steps, cfg_scale=self.config.cfg_scale,
            )  # (N, T_step, C, h, w)
        self.pose = targets.astype(np.float64).copy()
        self.frame_index = self.frame_index + self.frames_per_step
        self._frames = None
        reward = self.reward_fn(RewardInput(
            latents=latents, pose=self.pose, frame_index=self.frame_index,
            demo_actions=[self.demo_actions(name) for name, _ in self.episodes],
            goal_latent=self.goal_latent, action_std=self.action_std, model=self.model,
        ))
        return check_reward_output(reward, self.num_envs, self.reward_fn.name), latents

    # -- observations --------------------------------------------------------------------------

    def frames(self) -> np.ndarray:
        """(N, H, W, 3) uint8 newest frame of every env, decoded once per step."""
        if self._frames is None:
            with torch.no_grad():
                decoded = self.model.decode(self.context[:, -1:])  # (N, T, H, W, 3)
            self._frames = decoded[:, -1].cpu().numpy()
        return self._frames

    def latents(self) -> np.ndarray:
        """(N, C, h, w) float32 newest latent frame of every env."""
        return self.context[:, -1].float().cpu().numpy().copy()

    def observations(self) -> Any:
        """Batched observations in ``config.obs_mode`` (decodes only when pixels are needed)."""
        if self.config.obs_mode == "latent":
            return self.latents()
        if self.config.obs_mode == "rgb":
            return self.frames().copy()
        return {"image": self.frames().copy(), "proprio": self.pose.astype(np.float32)}

    # -- planner support -----------------------------------------------------------------------

    def get_state(self) -> CoreState:
        return CoreState(
            context=self.context.clone(), pose=self.pose.copy(),
            frame_index=self.frame_index.copy(), episodes=list(self.episodes),
            generator_states=[g.get_state() for g in self.generators],
            extra={"goal": None if self.goal_latent is None else self.goal_latent.clone(),
                   "semantic_rows": list(self._semantic_rows)},
        )

    def set_state(self, state: CoreState) -> None:
        if state.context.shape != self.context.shape:
            raise ValueError(
                f"state holds a batch of shape {tuple(state.context.shape)}, this core has "
                f"{tuple(self.context.shape)}; use CoreState.select to pick envs"
            )
        self.context = state.context.clone()
        self.pose = state.pose.copy()
        self.frame_index = state.frame_index.copy()
        self.episodes = list(state.episodes)
        for generator, generator_state in zip(self.generators, state.generator_states, strict=True):
            generator.set_state(generator_state)
        goal = state.extra.get("goal")
        self.goal_latent = None if goal is None else goal.clone()
        self._semantic_rows = list(state.extra["semantic_rows"])
        self._semantic_batch = None
        self._frames = None


def select_state(state: CoreState, indices: list[int] | np.ndarray) -> CoreState:
    """The sub-batch ``indices`` of a state (repeat an index to branch one env N ways)."""
    idx = [int(i) for i in indices]
    extra = {}
    for key, value in state.extra.items():
        if isinstance(value, torch.Tensor | np.ndarray):
            extra[key] = value[idx].copy() if isinstance(value, np.ndarray) else value[idx].clone()
        elif isinstance(value, list):
            extra[key] = [value[i] for i in idx]
        else:
            extra[key] = value
    return replace(
        state, context=state.context[idx].clone(), pose=state.pose[idx].copy(),
        frame_index=state.frame_index[idx].copy(), episodes=[state.episodes[i] for i in idx],
        generator_states=[state.generator_states[i].clone() for i in idx], extra=extra,
    )


def _trim(cache: OrderedDict) -> None:
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
