"""``DexACReplay-v0``: stored episodes through the same API as ``DexACWorld-v0``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from dexac_env.actions import action_space
from dexac_env.episode_windows import matching_episodes, pick_window
from dexac_env.rewards import RewardInput, action_scale, check_reward_output, make_reward
from dexac_env.world_core import EnvKwargs, load_world_model, open_store
from dexac_env.world_env import observation_space, render_fps, validate_action


@dataclass(frozen=True)
class ReplayEnvConfig(EnvKwargs):
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

    ENV_ID: ClassVar[str] = "DexACReplay-v0"

    def __post_init__(self) -> None:
        self.check("context_frames", "frames_per_step", allow_none=False)


class DexACReplayEnv(gym.Env):
    """
    ## Description

    Replays a stored episode through the ``DexACWorld-v0`` interface, for open-loop
    evaluation and debugging: the observations are the stored frames whatever the actions
    are. Send ``info["demo_action"]`` to follow the demonstration exactly.

    ## Action Space

    ``dexac_env.actions.action_space()``, the one action space of every env, as in
    ``DexACWorld-v0`` (validated the same way; it does not change what is shown, but it is what
    the reward scores).

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
        self.names = matching_episodes(self.store, self.config.task, self.config.split,
                                       self.config.context_frames + 1)
        first = self.store.episode(self.names[0])
        self.resolution = tuple(first.read("rgb", 0, 1).shape[1:3])
        self.render_mode = self.config.render_mode
        self.metadata = {**self.metadata, "render_fps": render_fps(self.store, self.config.frames_per_step)}
        self.action_space = action_space()
        latent_shape = None
        if self.config.obs_mode == "latent":
            latent_shape = tuple(self._encode(first.read("rgb", 0, 1)).shape[1:])
        self.observation_space = observation_space(self.config.obs_mode, self.resolution, latent_shape)
        self.action_std = action_scale(self.store)
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
        name, start = pick_window(self.names, self.store, self.np_random, options)
        self._episode = self.store.episode(name)
        self._actions = self._episode.read("action").astype(np.float64)
        self._index = start + self.config.context_frames - 1
        if not 0 <= self._index < self._episode.length - 1:
            raise ValueError(f"start {start} leaves no frame to step to in "
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
