"""A Stable-Baselines3 ``VecEnv`` over the batched world core (``DexACWorld-v0``).

SB3 expects same-step autoreset: when an episode ends, ``step_wait`` returns the first
observation of the next episode, ``done=True``, and the last observation of the ended one in
``infos[i]["terminal_observation"]`` (with ``infos[i]["TimeLimit.truncated"]``). This adapter
does exactly that over one :class:`~dexac_env.world_core.WorldCore`, so all N envs advance in
one sampler call::

    from dexac_env.sb3_vec_env import DexACWorldSB3VecEnv
    venv = DexACWorldSB3VecEnv(num_envs=8, obs_mode="rgb", sampling_steps=2)
    model = stable_baselines3.PPO("CnnPolicy", venv)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from dexac_env.vector_env import DexACWorldVectorEnv
from dexac_env.world_env import validate_action


class DexACWorldSB3VecEnv(VecEnv):
    """Arguments: those of ``DexACWorld-v0`` plus ``num_envs`` and ``max_episode_steps``."""

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 64, **kwargs: Any):
        # The Gymnasium vector env holds the core, spaces and the episode RNG; this class
        # only changes the autoreset convention.
        self.venv = DexACWorldVectorEnv(num_envs, max_episode_steps=max_episode_steps, **kwargs)
        self.core = self.venv.core
        self.render_mode = self.venv.render_mode
        super().__init__(num_envs, self.venv.single_observation_space,
                         self.venv.single_action_space)
        self._actions: np.ndarray | None = None

    def _obs_at(self, obs: Any, i: int) -> Any:
        if isinstance(obs, dict):
            return {k: v[i] for k, v in obs.items()}
        return obs[i]

    def reset(self):
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, _ = self.venv.reset(seed=seed, options=options)
        self._reset_seeds()
        self._reset_options()
        self.venv._autoreset[:] = False
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = validate_action(actions, batch=self.num_envs)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("call step_async() before step_wait()")
        core = self.core
        rewards, truncated = self.venv._advance(self._actions)
        self._actions = None
        dones = truncated.copy()  # the imagined world never terminates by itself
        infos: list[dict[str, Any]] = [
            {"episode_name": core.episodes[i][0], "frame_index": int(core.frame_index[i])}
            for i in range(self.num_envs)
        ]
        ended = [int(i) for i in np.flatnonzero(dones)]
        if ended:
            last = core.observations()
            for i in ended:
                infos[i]["terminal_observation"] = self._obs_at(last, i)
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
            self.venv._restart(ended)
        return core.observations(), rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.core.frames().copy())

    # -- attribute access: one underlying vector env, so every index sees the same object -----

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None,
                   **method_kwargs) -> list[Any]:
        method = getattr(self.venv, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
