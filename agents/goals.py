"""Goal frames for the ``goal_image`` objective when planning in the simulator's episodes.

As in DINO-WM, a goal-conditioned planner is given an image of the solved task. Here it is
the last frame of the scripted expert's episode from the same seed, run in a private
simulator (the real env is not touched).
"""

from __future__ import annotations

import numpy as np


def expert_goal_frame(env, seed: int, steps: int = 30) -> np.ndarray:
    """(H, W, 3) uint8: the expert's frame after ``steps`` steps of episode ``seed``."""
    from dexac_env.sim.env import DexACSimEnv  # noqa: PLC0415
    from dexac_env.sim.experts import ScriptedExpert  # noqa: PLC0415

    sim_env = env.unwrapped
    sim = DexACSimEnv(task=sim_env.task, resolution=sim_env.resolution,
                      color_split=sim_env.color_split)
    try:
        obs, _ = sim.reset(seed=seed)
        expert = ScriptedExpert(sim, np.random.default_rng(seed))
        for _ in range(steps):
            obs, *_ = sim.step(expert.act())
        return obs["image"]
    finally:
        sim.close()
