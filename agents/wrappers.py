"""Wrappers that give learners the same spaces in ``DexACWorld-v0`` and ``DexACSim-v0``.

Both envs are wrapped to:

- **action** ``Box(-1, 1, (A,), float32)``: a normalised delta pose (:mod:`agents.actions`);
  0 holds the pose.
- **observation** ``Dict(image=Box(0, 255, (3, H, W), uint8), proprio=Box(-10, 10, (57,),
  float32))``: the newest frame channel-first (what SB3's CNNs expect, no warning to silence)
  and the env's pose (the simulator's reached pose, the world model's commanded pose), each
  family divided by its scale (``PROPRIO_SCALE``).

so a policy trained in one runs in the other unchanged (``model.set_env(sim_vec_env)``).
:class:`AgentWrapper` wraps one ``gym.Env``; :class:`AgentVecEnv` wraps an SB3 ``VecEnv`` whose
envs give ``{"image", "proprio"}`` dicts (``DexACWorldSB3VecEnv(obs_mode="dict")`` or a
``DummyVecEnv`` of simulators). :class:`SuccessTermination` ends an imagined episode when the
world model's success head fires.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents.actions import DEFAULT_ACTION_SET, DeltaPose, StepLimits
from dexac_env.actions import ACTION_DIM, FAMILY_INDEX, HEAD, LEFT_WRIST, RIGHT_WRIST

PROPRIO_BOUND = 10.0


def _proprio_scale() -> np.ndarray:
    """(57,) divisor per dim: 0.5 m for head/wrist positions, 1 for 6D entries, 0.1 m for
    fingertips (in the wrist frame) -- each family lands on roughly unit range."""
    scale = np.where(FAMILY_INDEX == 2, 0.1, 1.0)
    for dims in (HEAD, LEFT_WRIST, RIGHT_WRIST):
        scale[dims.start : dims.start + 3] = 0.5
    return scale


PROPRIO_SCALE = _proprio_scale()


def agent_observation_space(resolution: int) -> spaces.Dict:
    return spaces.Dict({
        "image": spaces.Box(0, 255, (3, resolution, resolution), np.uint8),
        "proprio": spaces.Box(-PROPRIO_BOUND, PROPRIO_BOUND, (ACTION_DIM,), np.float32),
    })


def agent_observation(image: np.ndarray, pose: np.ndarray) -> dict[str, np.ndarray]:
    """image (..., H, W, 3) uint8, pose (..., 57) -> {"image" (..., 3, H, W), "proprio" (..., 57)}."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (..., H, W, 3), got {image.dtype} {image.shape}")
    proprio = np.clip(np.asarray(pose, np.float64) / PROPRIO_SCALE, -PROPRIO_BOUND, PROPRIO_BOUND)
    return {"image": np.ascontiguousarray(np.moveaxis(image, -1, -3)),
            "proprio": proprio.astype(np.float32)}


def _check_dict_env(space: spaces.Space, what: str) -> int:
    if not (isinstance(space, spaces.Dict) and {"image", "proprio"} <= set(space.spaces)):
        raise ValueError(
            f"{what} must give dict observations {{'image', 'proprio'}}, got {space}; make "
            f"DexACWorld-v0 with obs_mode='dict' (DexACSim-v0 always gives them)"
        )
    return int(space["image"].shape[0])


class AgentWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """One env (``DexACWorld-v0`` with ``obs_mode="dict"`` or ``DexACSim-v0``) with normalised
    delta-pose actions and channel-first observations. ``step_pose(pose)`` sends an absolute
    57-D pose instead (scripted experts) and keeps the delta tracking consistent."""

    def __init__(self, env: gym.Env, action_set: str = DEFAULT_ACTION_SET,
                 limits: StepLimits | None = None):
        # recorded so that env.spec.make() rebuilds the wrapper (Gymnasium's check_env does)
        gym.utils.RecordConstructorArgs.__init__(self, action_set=action_set, limits=limits)
        super().__init__(env)
        resolution = _check_dict_env(env.observation_space, "the wrapped env")
        self.delta = DeltaPose(1, action_set, limits)
        self.action_space = spaces.Box(-1.0, 1.0, (self.delta.dim,), np.float32)
        self.observation_space = agent_observation_space(resolution)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.delta.reset(obs["proprio"][None])
        return agent_observation(obs["image"], obs["proprio"]), info

    def step(self, action):
        pose = self.delta(np.asarray(action, dtype=np.float64)[None])[0]
        return self._step(pose)

    def step_pose(self, pose: np.ndarray):
        """Step with an absolute 57-D pose; later delta actions start from it."""
        pose = np.asarray(pose, dtype=np.float64)
        self.delta.state.pose[0] = pose
        return self._step(pose)

    def _step(self, pose: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(pose.astype(np.float32))
        return agent_observation(obs["image"], obs["proprio"]), reward, terminated, truncated, info

    @property
    def commanded_pose(self) -> np.ndarray:
        """(57,) the pose commanded last."""
        return self.delta.state.pose[0].copy()


class SuccessTermination(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Ends an imagined episode (``terminated=True``) when the world model's success head
    says the newest frame succeeded with probability >= ``threshold``; ``info["success_prob"]``
    carries the probability. Wrap a ``DexACWorld-v0`` env (any obs_mode)."""

    def __init__(self, env: gym.Env, threshold: float = 0.5):
        gym.utils.RecordConstructorArgs.__init__(self, threshold=threshold)
        super().__init__(env)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not hasattr(env.unwrapped, "core"):
            raise ValueError("SuccessTermination needs DexACWorld-v0 (an env with a world core)")
        self.threshold = threshold

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        prob = float(success_probability(self.env.unwrapped.core)[0])
        info["success_prob"] = prob
        return obs, reward, terminated or prob >= self.threshold, truncated, info


def success_probability(core: Any) -> np.ndarray:
    """(N,) the success head's probability on each env's newest latent frame."""
    with torch.no_grad():
        _, logit = core.model.reward(core.context[:, -1:])  # (N, 1)
    return torch.sigmoid(logit[:, 0]).double().cpu().numpy()


class AgentVecEnv(VecEnvWrapper):
    """The :class:`AgentWrapper` spaces over an SB3 ``VecEnv`` of dict-observation envs.

    Episodes that end are restarted by the inner VecEnv (SB3 same-step autoreset); their delta
    tracking restarts from the new episode's first pose, and ``terminal_observation`` is
    converted like every observation.
    """

    def __init__(self, venv: VecEnv, action_set: str = DEFAULT_ACTION_SET,
                 limits: StepLimits | None = None):
        resolution = _check_dict_env(venv.observation_space, "the wrapped VecEnv")
        self.delta = DeltaPose(venv.num_envs, action_set, limits)
        super().__init__(
            venv,
            observation_space=agent_observation_space(resolution),
            action_space=spaces.Box(-1.0, 1.0, (self.delta.dim,), np.float32),
        )

    def reset(self):
        obs = self.venv.reset()
        self.delta.reset(obs["proprio"])
        return agent_observation(obs["image"], obs["proprio"])

    def step_async(self, actions: np.ndarray) -> None:
        poses = self.delta(np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1))
        self.venv.step_async(poses.astype(np.float32))

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        ended = np.flatnonzero(dones)
        if ended.size:
            self.delta.reset(obs["proprio"][ended], ended)
            for i in ended:
                last = infos[i].get("terminal_observation")
                if last is not None:
                    infos[i]["terminal_observation"] = agent_observation(last["image"], last["proprio"])
        return agent_observation(obs["image"], obs["proprio"]), rewards, dones, infos
