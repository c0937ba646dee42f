"""The RL user's own tools on every env (Gymnasium's and SB3's wrappers, vectorisation, PPO/SAC),
and a simulator that stays physical under any action in its space (issue 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import SubprocVecEnv

import dexac_env  # noqa: F401  (registers the envs)
from dexac_env.sim import env as sim_env
from dexac_env.sim.scene import TABLE_CENTER_Y, TABLE_HALF
from dexac_env.sim.tasks import TASK_NAMES, sample_task

ROOT = Path(__file__).resolve().parents[1]
# the shipped default model and store: what a new user gets from a bare gym.make
ENV_KWARGS = {
    "DexACWorld-v0": {"sampling_steps": 1},
    "DexACReplay-v0": {},
    "DexACSim-v0": {"resolution": 36},
}


def _policy(space: gym.Space) -> str:
    return "MultiInputPolicy" if isinstance(space, gym.spaces.Dict) else "CnnPolicy"


def _learn(env) -> None:
    policy = _policy(env.observation_space)
    PPO(policy, env, n_steps=4, batch_size=4, n_epochs=1, seed=0).learn(8)
    SAC(policy, env, buffer_size=16, learning_starts=2, batch_size=2, seed=0).learn(4)


@pytest.mark.parametrize("env_id", sorted(ENV_KWARGS))
def test_ppo_and_sac_learn_through_monitor_and_episode_statistics(env_id):
    env = gym.make(env_id, max_episode_steps=3, **ENV_KWARGS[env_id])
    env = Monitor(gym.wrappers.RecordEpisodeStatistics(env))
    _learn(env)  # episodes end every 3 steps: both wrappers write info["episode"]
    assert env.get_episode_rewards(), "Monitor recorded no episode"


@pytest.mark.slow
@pytest.mark.parametrize("env_id", sorted(ENV_KWARGS))
def test_ppo_and_sac_learn_on_subproc_vec_env(env_id):
    # SB3's workers start fresh (forkserver): "module:EnvId" makes gym.make import dexac_env
    venv = make_vec_env(f"dexac_env:{env_id}", n_envs=2, vec_env_cls=SubprocVecEnv,
                        env_kwargs={"max_episode_steps": 3, **ENV_KWARGS[env_id]})
    try:
        _learn(venv)
    finally:
        venv.close()


def test_world_env_render_fps_is_the_store_frame_rate():
    env = gym.make("DexACWorld-v0", sampling_steps=1)
    store = env.unwrapped.core.store
    fps = float(store.episode(store.episode_names()[0]).attrs["fps"])
    assert env.metadata["render_fps"] == fps / env.unwrapped.core.frames_per_step
    _, info = env.reset(seed=0)
    assert "episode" not in info and isinstance(info["episode_name"], str)


def test_async_make_vec_does_not_hang_after_the_parent_built_an_env():
    """The parent builds a dummy env (torch's OpenMP pool starts), then forks its workers."""
    script = (
        "import gymnasium as gym, numpy as np, dexac_env\n"
        "envs = gym.make_vec('DexACWorld-v0', num_envs=2, vectorization_mode='async',"
        " sampling_steps=1)\n"
        "envs.reset(seed=0)\n"
        "obs = envs.step(np.stack([envs.single_action_space.sample()] * 2))[0]\n"
        "envs.close()\n"
        "print('stepped', obs.shape)\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                                text=True, timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("gym.make_vec(..., vectorization_mode='async') hung")
    assert result.returncode == 0 and "stepped (2, 64, 64, 3)" in result.stdout, result.stderr


def test_sim_make_vec_stacks_infos_of_different_layouts():
    envs = gym.make_vec("DexACSim-v0", num_envs=3, resolution=32)
    _, infos = envs.reset(seed=0)
    _, _, _, _, infos = envs.step(envs.action_space.sample())
    assert infos["object_poses"].shape == (3, sim_env.MAX_OBJECTS, 7)
    for poses, count in zip(infos["object_poses"], infos["object_count"], strict=True):
        assert np.abs(poses[:count, 3:]).sum() > 0 and not poses[count:].any()
    envs.close()


def test_no_task_layout_exceeds_max_objects():
    for task in TASK_NAMES:
        most = max(len(sample_task(task, np.random.default_rng(s), "all").layout.objects)
                   for s in range(300))
        assert most <= sim_env.MAX_OBJECTS, task


def _random_rollout(seed: int, steps: int) -> tuple[float, int]:
    """Lowest object centre over the table (m) and the count of physics resets."""
    env = gym.make("DexACSim-v0", task=TASK_NAMES[seed % len(TASK_NAMES)], resolution=32)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    lowest, resets = np.inf, 0
    for _ in range(steps):
        _, _, _, _, info = env.step(env.action_space.sample())
        pos = info["object_poses"][: info["object_count"], :3]
        resets += int(info["physics_reset"])
        assert np.isfinite(pos).all()
        over_table = (np.abs(pos[:, 0]) < TABLE_HALF[0]) & (
            np.abs(pos[:, 1] - TABLE_CENTER_Y) < TABLE_HALF[1]
        )  # objects pushed off the table fall to the floor: physical
        lowest = min([lowest, *pos[over_table, 2]])
    env.close()
    return lowest, resets


def test_uniform_random_actions_keep_objects_on_the_table():
    # seeds 1, 2, 4, 6 and 8 pushed objects through the table without the wrist limits
    for seed in range(10):
        lowest, resets = _random_rollout(seed, steps=12)
        assert lowest > -0.005, f"seed {seed}: an object sank to z = {lowest:.3f} m"
        assert resets == 0, f"seed {seed}: the solver failed {resets} times"


def test_solver_failure_is_undone_and_flagged(monkeypatch):
    """Without the wrist limits random actions blow the solver up: the step is undone."""
    from dexac_env.sim import hand

    monkeypatch.setattr(sim_env, "MAX_WRIST_SPEED", 1e9)
    monkeypatch.setattr(hand, "WRIST_MIN_Z", -1e9)
    resets = 0
    for seed in (4, 6, 8):
        lowest, count = _random_rollout(seed, steps=12)
        resets += count
        assert lowest > -0.01, f"seed {seed}: an object stayed inside the table"
    assert resets > 0


def test_every_env_has_the_one_action_space():
    """Same units and meaning in every env, so the same bounds: dexac_env.actions.action_space()."""
    from dexac_env.actions import action_space

    for env_id, kwargs in ENV_KWARGS.items():
        env = gym.make(env_id, **kwargs)
        assert env.action_space == action_space(), env_id
        env.close()
    venv = gym.make_vec("DexACWorld-v0", num_envs=2, **ENV_KWARGS["DexACWorld-v0"])
    assert venv.single_action_space == action_space()
    venv.close()
