"""``DexACReplay-v0``: stored episodes through the same API as ``DexACWorld-v0``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from dexac_env.actions import ACTION_DIM
from dexac_env.rewards import RewardInput, check_reward_output, make_reward
from dexac_env.world_core import OBS_MODES, action_bounds, load_world_model, open_store
from dexac_env.world_env import render_fps, validate_action


@dataclass(frozen=True)
class ReplayEnvConfig:
    """store/task/split/frames_per_step/obs_mode/render_mode as in ``WorldEnvConfig``.

    context_frames: frames before the first observation (use the world model's
        ``context_frames`` so both envs start on the same frame).
    reward: ``"pose_tracking"`` (default), ``"stored"`` (the episode's ``reward`` array summed
        over the frames a step covers; 0 if it has none), ``"learned"``/``"goal_image"``
        (need ``checkpoint``), or a callable.
    checkpoint: only needed for ``obs_mode="latent"`` or a model-based reward.
    """

    store: Any = None
    task: str | None = None
    split: str | None = None
    context_frames: int = 1
    frames_per_step: int = 1
    obs_mode: str = "rgb"
    reward: Any = "pose_tracking"
    checkpoint: Any = None
    device: str = "cpu"
    render_mode: str | None = None

    def __post_init__(self) -> None:
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        for name in ("context_frames", "frames_per_step"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {self.render_mode!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> ReplayEnvConfig:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(f"unknown DexACReplay-v0 argument(s) {unknown}; known: {known}")
        return cls(**kwargs)


class DexACReplayEnv(gym.Env):
    """
    ## Description

    Replays a stored episode through the ``DexACWorld-v0`` interface, for open-loop
    evaluation and debugging: the observations are the stored frames whatever the actions
    are. Send ``info["demo_action"]`` to follow the demonstration exactly.

    ## Action Space

    ``Box(57,)`` float32, as in ``DexACWorld-v0`` (validated the same way; it does not change
    what is shown, but it is what the reward scores).

    ## Observation Space

    As in ``DexACWorld-v0``: ``"rgb"`` (H, W, 3) uint8, ``"dict"`` (``image`` + ``proprio``,
    the commanded pose; the stored pose at reset), ``"latent"`` (needs ``checkpoint``).

    ## Rewards

    ``"pose_tracking"`` by default (the commanded pose against the stored one), ``"stored"``,
    or any reward of ``dexac_env.rewards`` (model-based ones need ``checkpoint``).

    ## Starting State

    Frame ``start + context_frames - 1`` of an episode drawn with ``self.np_random`` (or
    ``options={"episode": name_or_index, "start": frame}``; ``start`` defaults to 0).

    ## Episode End

    Terminated when the stored episode has no frame left; truncated by ``max_episode_steps``.

    ## Arguments

    See ``ReplayEnvConfig``; unknown keys raise ValueError.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # set from the store's fps

    def __init__(self, **kwargs: Any):
        self.config = ReplayEnvConfig.from_kwargs(**kwargs)
        self.store = open_store(self.config.store)
        self.reward_name = self.config.reward if isinstance(self.config.reward, str) else None
        self.reward_fn = None if self.reward_name == "stored" else make_reward(self.config.reward)
        needs_model = self.config.obs_mode == "latent" or self.reward_name in ("learned", "goal_image")
        if needs_model and self.config.checkpoint is None:
            raise ValueError(
                "DexACReplay-v0 needs checkpoint=... for obs_mode='latent' or a learned/goal_image reward"
            )
        self.model = load_world_model(self.config.checkpoint, self.config.device) if needs_model else None
        names = [
            e.name for e in self.store.episodes(self.config.split)
            if (self.config.task is None or e.attrs.get("task") == self.config.task)
            and e.length > self.config.context_frames
        ]
        if not names:
            raise ValueError(f"no episode in {self.store.path} matches task={self.config.task!r}, "
                             f"split={self.config.split!r} with > {self.config.context_frames} frames")
        self.names = names
        first = self.store.episode(names[0])
        self.resolution = tuple(first.read("rgb", 0, 1).shape[1:3])
        self.render_mode = self.config.render_mode
        self.metadata = {**self.metadata, "render_fps": render_fps(self.store, self.config.frames_per_step)}
        low, high = action_bounds()
        self.action_space = spaces.Box(low, high, dtype=np.float32)
        image = spaces.Box(0, 255, (*self.resolution, 3), dtype=np.uint8)
        if self.config.obs_mode == "rgb":
            self.observation_space = image
        elif self.config.obs_mode == "dict":
            proprio = spaces.Box(-np.inf, np.inf, (ACTION_DIM,), dtype=np.float32)
            self.observation_space = spaces.Dict({"image": image, "proprio": proprio})
        else:
            shape = tuple(self._encode(first.read("rgb", 0, 1)).shape[1:])
            self.observation_space = spaces.Box(-np.inf, np.inf, shape, dtype=np.float32)
        stats = self.store.action_stats or self.store.compute_action_stats(None)
        self.action_std = np.maximum(stats.std, 1e-6)
        self._episode = None

    def _encode(self, rgb: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode(torch.from_numpy(rgb)[None].to(self.config.device))[0]

    def _frame(self) -> np.ndarray:
        return self._episode.read("rgb", self._index, self._index + 1)[0]

    def _obs(self) -> Any:
        if self.config.obs_mode == "latent":
            return self._encode(self._episode.read("rgb", self._index, self._index + 1))[-1].cpu().numpy()
        if self.config.obs_mode == "rgb":
            return self._frame()
        return {"image": self._frame(), "proprio": self._pose.astype(np.float32)}

    def _info(self) -> dict[str, Any]:
        nxt = min(self._index + self.config.frames_per_step, self._episode.length - 1)
        # `info["episode"]` is reserved for episode statistics (RecordEpisodeStatistics, Monitor)
        return {"episode_name": self._episode.name, "frame_index": self._index,
                "demo_action": self._actions[nxt].astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"episode", "start"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; known: ['episode', 'start']")
        episode = options.get("episode")
        if episode is None:
            episode = self.names[int(self.np_random.integers(len(self.names)))]
        elif isinstance(episode, int | np.integer):
            if not 0 <= int(episode) < len(self.names):
                raise ValueError(f"episode index must be in 0..{len(self.names) - 1}, got {episode}")
            episode = self.names[int(episode)]
        self._episode = self.store.episode(str(episode))
        self._actions = self._episode.read("action").astype(np.float64)
        self._index = int(options.get("start", 0)) + self.config.context_frames - 1
        if not 0 <= self._index < self._episode.length - 1:
            raise ValueError(f"start {options.get('start')} leaves no frame to step to in "
                             f"{self._episode.name!r} of {self._episode.length} frames")
        self._pose = self._actions[self._index].copy()
        return self._obs(), self._info()

    def step(self, action: Any):
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        self._pose = validate_action(action)
        previous = self._index
        self._index = min(previous + self.config.frames_per_step, self._episode.length - 1)
        terminated = self._index >= self._episode.length - 1
        return self._obs(), self._reward(previous), terminated, False, self._info()

    def _reward(self, previous: int) -> float:
        if self.reward_name == "stored":
            if "reward" not in self._episode:
                return 0.0
            return float(self._episode.read("reward", previous + 1, self._index + 1).sum())
        latents, goal = None, None
        if self.model is not None:
            latents = self._encode(self._episode.read("rgb", previous + 1, self._index + 1))[None]
            if self.reward_fn.needs_goal:
                goal = self._encode(self._episode.read("rgb", self._episode.length - 1))[-1:]
        reward = self.reward_fn(RewardInput(
            latents=latents, pose=self._pose[None], frame_index=np.array([self._index]),
            demo_actions=[self._actions], goal_latent=goal, action_std=self.action_std,
            model=self.model,
        ))
        return float(check_reward_output(reward, 1, self.reward_fn.name)[0])

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._episode is None:
            return None
        return self._frame()
