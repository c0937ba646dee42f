"""``DexACWorld-v0`` as a Gymnasium ``VectorEnv``: N imagined episodes, one sampler call a step.

``gym.make_vec("DexACWorld-v0", num_envs=N)`` builds this (the registered
``vector_entry_point``). Autoreset mode: ``AutoresetMode.NEXT_STEP`` (Gymnasium's default):
the step after an episode ends resets that env, ignores its action and returns its first
observation with reward 0. Truncation after ``max_episode_steps`` steps (registered: 64).

Planners branch with :meth:`get_state` / :meth:`set_state` (see ``world_core.select_state``
to tile one env's state over the batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dexac_env.actions import action_space
from dexac_env.world_core import (
    CoreState,
    WorldCore,
    WorldEnvConfig,
    load_world_model,
    open_store,
)
from dexac_env.world_env import core_observation_space, render_fps, validate_action


@dataclass
class VectorState(CoreState):
    """A :class:`CoreState` plus the vector env's time-limit bookkeeping (one entry per env)."""

    elapsed: np.ndarray | None = None  # (N,) int64 steps since each env's reset
    autoreset: np.ndarray | None = None  # (N,) bool: the env ended and restarts next step


def per_env_options(options: dict | None, num_envs: int) -> list[dict]:
    """Split ``{"episode": x | [x_0..], "start": s | [s_0..]}`` into one options dict per env."""
    options = dict(options or {})
    options.pop("reset_mask", None)
    out: list[dict] = [{} for _ in range(num_envs)]
    for key, value in options.items():
        if isinstance(value, Sequence) and not isinstance(value, str) or isinstance(value, np.ndarray):
            if len(value) != num_envs:
                raise ValueError(f"options[{key!r}] has {len(value)} entries, expected {num_envs}")
            for i in range(num_envs):
                out[i][key] = value[i]
        else:
            for i in range(num_envs):
                out[i][key] = value
    return out


class DexACWorldVectorEnv(VectorEnv):
    """N copies of ``DexACWorld-v0`` stepped by one batched :class:`WorldCore`.

    Arguments are those of ``DexACWorld-v0`` plus ``num_envs`` and ``max_episode_steps``.
    """

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 10,  # set from the store's fps
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 64, **kwargs: Any):
        self.config = WorldEnvConfig.from_kwargs(**kwargs)
        model = load_world_model(self.config.checkpoint, self.config.device)
        self.core = WorldCore(model, self.config, num_envs, open_store(self.config.store))
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = self.config.render_mode
        self.single_action_space = action_space()
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = core_observation_space(self.core)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        fps = render_fps(self.core.store, self.core.frames_per_step)
        self.metadata = {**self.metadata, "render_fps": fps}
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._has_reset = False

    def _restart(self, indices: list[int], options: list[dict] | None = None) -> None:
        """Reset envs ``indices`` (``options``: one reset-options dict per env of the batch)."""
        options = options or [{} for _ in range(self.num_envs)]
        picks = [self.core.pick(self.np_random, options[i]) for i in indices]
        self.core.reset_envs(indices, picks)
        self.core.seed(indices, [int(self.np_random.integers(2**63 - 1)) for _ in indices])
        self._elapsed[indices] = 0

    def _advance(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step every env to ``targets`` (N, 57). Returns (rewards (N,), truncated (N,) bool):
        the time limit, the only way an imagined episode ends (it never terminates)."""
        rewards, _ = self.core.step(targets)
        self._elapsed += 1
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = self._elapsed >= self.max_episode_steps
        return rewards, truncated

    def _infos(self) -> dict[str, Any]:
        ones = np.ones(self.num_envs, dtype=bool)
        return {
            "episode_name": np.array([name for name, _ in self.core.episodes], dtype=object),
            "_episode_name": ones,
            "frame_index": self.core.frame_index.copy(),
            "_frame_index": ones.copy(),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset all envs (or those in ``options["reset_mask"]``); seeds the sampler too."""
        super().reset(seed=seed)
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
        self._restart([int(i) for i in np.flatnonzero(mask)], per_env_options(options, self.num_envs))
        self._autoreset[mask] = False
        self._has_reset = True
        return self.core.observations(), self._infos()

    def step(self, actions: Any):
        if not self._has_reset:
            raise RuntimeError("call reset() before step()")
        targets = validate_action(actions, batch=self.num_envs)
        restart = np.flatnonzero(self._autoreset)
        # Envs restarting this step are advanced with their own pose (result discarded) so the
        # batch keeps its shape; then they are reset.
        targets[restart] = self.core.pose[restart]
        rewards, truncated = self._advance(targets)
        if restart.size:
            self._restart([int(i) for i in restart])
            rewards[restart] = 0.0
            truncated[restart] = False
        terminated = np.zeros(self.num_envs, dtype=bool)
        self._autoreset = terminated | truncated
        return self.core.observations(), rewards, terminated, truncated, self._infos()

    def render(self) -> np.ndarray | None:
        """(N, H, W, 3) uint8 newest frames (render_mode ``"rgb_array"``), else None."""
        if self.render_mode != "rgb_array":
            return None
        return self.core.frames().copy()

    def get_state(self) -> VectorState:
        """Snapshot of every env, time limits included (restore with :meth:`set_state`)."""
        core = self.core.get_state()
        return VectorState(**{f.name: getattr(core, f.name) for f in fields(core)},
                           elapsed=self._elapsed.copy(), autoreset=self._autoreset.copy())

    def set_state(self, state: CoreState) -> None:
        """Restore a snapshot (a plain :class:`CoreState` restarts the time limits at 0)."""
        self.core.set_state(state)
        elapsed = getattr(state, "elapsed", None)
        autoreset = getattr(state, "autoreset", None)
        self._elapsed = np.zeros(self.num_envs, np.int64) if elapsed is None else elapsed.astype(np.int64)
        self._autoreset = np.zeros(self.num_envs, bool) if autoreset is None else autoreset.astype(bool)

