"""One config, two worlds: the wrapped ``DexACSim-v0`` or ``DexACWorld-v0`` for learners.

``make_env(config)`` gives one :class:`~agents.wrappers.AgentWrapper` env;
``make_vec_env(config, num_envs)`` an SB3 ``VecEnv`` with the same spaces: for ``world`` the
batched ``DexACWorldSB3VecEnv`` (one sampler call per step for all envs), for ``sim`` a
``DummyVecEnv`` of simulators. Both are monitored (episode returns in ``info["episode"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

import dexac_env  # noqa: F401  (registers the envs)
from agents.actions import DEFAULT_ACTION_SET, StepLimits
from agents.wrappers import AgentVecEnv, AgentWrapper, SuccessTermination

ENV_KINDS = {"sim": "DexACSim-v0", "world": "DexACWorld-v0"}


@dataclass(frozen=True)
class AgentEnvConfig:
    """Everything that makes an agent env.

    kind: ``"sim"`` (DexACSim-v0, ground truth) or ``"world"`` (DexACWorld-v0, imagination).
    task: simulator task; for ``world`` the store episodes drawn (their ``task`` attribute).
    action_set: a name in ``agents.actions.ACTION_SETS``.
    max_episode_steps: env steps (frames at 10 fps) per episode.
    color_split: simulator object colours (``"test"``: colours held out of training data).
    checkpoint, store, split: world model and the episodes whose first frames start imagined
        episodes (None: the shipped defaults; ``split`` None: all).
    sampling_steps: sampler steps per imagined chunk (None: the model's).
    cfg_scale: classifier-free guidance on actions (None: the model's; > 1 needs a model
        trained with ``conditioning.action_dropout``).
    reward: world reward (``"learned"``, ``"goal_image"``, ``"pose_tracking"``).
    precision: the world model's inference precision (``"fp32"`` or ``"bf16"`` autocast;
        DexACWorld-v0's ``precision``).
    success_termination: end imagined episodes when the success head's probability reaches
        this (None: never; the imagined world has no terminal state otherwise).
    """

    kind: str = "sim"
    task: str = "touch"
    action_set: str = DEFAULT_ACTION_SET
    max_episode_steps: int = 30
    color_split: str = "train"
    checkpoint: str | None = None
    store: str | None = None
    split: str | None = "train"
    sampling_steps: int | None = 2
    cfg_scale: float | None = None
    reward: str = "learned"
    success_termination: float | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.kind not in ENV_KINDS:
            raise ValueError(f"kind must be one of {sorted(ENV_KINDS)}, got {self.kind!r}")
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (a WorldModel or store object given in place of a path is named
        by its type)."""
        plain = (str, int, float, bool, type(None))
        return {f.name: v if isinstance(v := getattr(self, f.name), plain) else type(v).__name__
                for f in fields(self)}

    def world_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of DexACWorld-v0 (dict observations)."""
        return {"checkpoint": self.checkpoint, "store": self.store, "task": self.task,
                "split": self.split, "sampling_steps": self.sampling_steps,
                "cfg_scale": self.cfg_scale, "precision": self.precision,
                "reward": self.reward, "obs_mode": "dict"}


def make_raw_env(config: AgentEnvConfig, render_mode: str | None = None) -> gym.Env:
    """The registered env (with its TimeLimit), before the agent wrappers."""
    if config.kind == "sim":
        return gym.make("DexACSim-v0", task=config.task, color_split=config.color_split,
                        max_episode_steps=config.max_episode_steps, render_mode=render_mode)
    env = gym.make("DexACWorld-v0", max_episode_steps=config.max_episode_steps,
                   render_mode=render_mode, **config.world_kwargs())
    if config.success_termination is not None:
        env = SuccessTermination(env, config.success_termination)
    return env


def make_env(config: AgentEnvConfig, limits: StepLimits | None = None,
             render_mode: str | None = None) -> AgentWrapper:
    return AgentWrapper(make_raw_env(config, render_mode), config.action_set, limits)


def make_vec_env(config: AgentEnvConfig, num_envs: int, seed: int = 0,
                 limits: StepLimits | None = None) -> VecEnv:
    """``num_envs`` monitored envs with the agent spaces (see the module docstring)."""
    if config.kind == "world" and config.success_termination is None:
        from dexac_env.sb3_vec_env import DexACWorldSB3VecEnv  # noqa: PLC0415

        inner: VecEnv = VecMonitor(DexACWorldSB3VecEnv(
            num_envs=num_envs, max_episode_steps=config.max_episode_steps,
            **config.world_kwargs()))
    else:
        # the simulator, or imagination with success termination (which the batched adapter
        # does not know): one env per process slot, stepped in turn
        inner = DummyVecEnv([lambda: Monitor(make_raw_env(config)) for _ in range(num_envs)])
    inner.seed(seed)
    return AgentVecEnv(inner, config.action_set, limits)
