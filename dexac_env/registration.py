"""Registration of the project's Gymnasium environments (called when dexac_env is imported)."""

from __future__ import annotations

import gymnasium as gym

ENV_SPECS = {
    "DexACSim-v0": {"entry_point": "dexac_env.sim.env:DexACSimEnv", "max_episode_steps": 64},
    "DexACWorld-v0": {
        "entry_point": "dexac_env.world_env:DexACWorldEnv",
        "vector_entry_point": "dexac_env.vector_env:DexACWorldVectorEnv",
        "max_episode_steps": 64,
    },
    "DexACReplay-v0": {"entry_point": "dexac_env.replay_env:DexACReplayEnv", "max_episode_steps": 64},
}


def register_envs() -> None:
    for env_id, kwargs in ENV_SPECS.items():
        if env_id not in gym.registry:
            gym.register(env_id, **kwargs)
