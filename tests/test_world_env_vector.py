"""The batched world core as a Gymnasium VectorEnv and an SB3 VecEnv (tiny random model)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from dexac_env.sb3_vec_env import DexACWorldSB3VecEnv
from dexac_env.world_core import WorldCore, WorldEnvConfig, open_store, select_state
from tests.test_world_env import RESOLUTION, build_tiny_model, make_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return str(make_store(tmp_path_factory.mktemp("world_env_vector") / "episodes.zarr"))


@pytest.fixture(scope="module")
def tiny_model(store_path):
    return build_tiny_model(store_path)


def test_make_vec_four_envs_next_step_autoreset(tiny_model, store_path):
    envs = gym.make_vec("DexACWorld-v0", num_envs=4, vectorization_mode="vector_entry_point",
                        checkpoint=tiny_model, store=store_path, sampling_steps=1,
                        max_episode_steps=2)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, infos = envs.reset(seed=0)
    assert obs.shape == (4, RESOLUTION, RESOLUTION, 3) and obs.dtype == np.uint8
    assert envs.observation_space.contains(obs)
    start_index = infos["frame_index"].copy()
    actions = envs.unwrapped.core.pose.astype(np.float32)
    _, rewards, terminated, truncated, infos = envs.step(actions)
    assert rewards.shape == (4,) and not truncated.any() and not terminated.any()
    _, _, _, truncated, infos = envs.step(actions)
    assert truncated.all()
    obs, rewards, terminated, truncated, infos = envs.step(actions)  # the autoreset step
    np.testing.assert_array_equal(rewards, 0.0)
    assert not truncated.any()
    assert (infos["frame_index"] == start_index).all()
    assert envs.observation_space.contains(obs)
    envs.close()


def test_vector_seed_determinism_and_partial_reset(tiny_model, store_path):
    envs = gym.make_vec("DexACWorld-v0", num_envs=3, checkpoint=tiny_model, store=store_path,
                        sampling_steps=1, obs_mode="latent")

    def run():
        envs.reset(seed=11)
        actions = envs.unwrapped.core.pose.astype(np.float32)
        return np.stack([envs.step(actions)[0] for _ in range(2)])

    np.testing.assert_array_equal(run(), run())
    before = envs.unwrapped.core.context.clone()
    envs.reset(options={"reset_mask": np.array([False, True, False]), "episode": "ep2"})
    after = envs.unwrapped.core.context
    assert torch.equal(before[[0, 2]], after[[0, 2]]) and not torch.equal(before[1], after[1])
    assert envs.unwrapped.core.episodes[1][0] == "ep2"


def test_batched_core_matches_single_env_core(tiny_model, store_path):
    """Each env draws noise from its own generator: batching does not change its future."""
    config = WorldEnvConfig(checkpoint=tiny_model, sampling_steps=2, obs_mode="latent")
    store = open_store(store_path)
    batch = WorldCore(tiny_model, config, 3, store)
    picks = [("ep0", 0), ("ep1", 2), ("ep2", 1)]
    batch.reset_envs([0, 1, 2], picks)
    batch.seed([0, 1, 2], [5, 6, 7])
    targets = batch.pose + 0.02
    batch.step(targets)
    for i, pick in enumerate(picks):
        single = WorldCore(tiny_model, config, 1, store)
        single.reset_envs([0], [pick])
        single.seed([0], [5 + i])
        single.step(targets[i : i + 1])
        torch.testing.assert_close(single.context[0], batch.context[i], rtol=1e-4, atol=1e-4)


def test_state_branching_for_planners(tiny_model, store_path):
    envs = gym.make_vec("DexACWorld-v0", num_envs=4, checkpoint=tiny_model, store=store_path,
                        sampling_steps=1, obs_mode="latent").unwrapped
    envs.reset(seed=0)
    # Branch env 2 four ways with the same generator state: same actions, same futures; then
    # reseed one branch: another future. (A random DiT ignores actions: its action
    # conditioning is zero-initialised, so action sensitivity needs a trained checkpoint.)
    branched = select_state(envs.get_state(), [2, 2, 2, 2])
    envs.set_state(branched)
    assert envs.core.episodes == [envs.core.episodes[0]] * 4
    actions = np.repeat(envs.core.pose[:1], 4, axis=0).astype(np.float32)
    envs.core.seed([3], [99])
    obs = envs.step(actions)[0]
    np.testing.assert_allclose(obs[0], obs[1], atol=1e-5)
    np.testing.assert_allclose(obs[0], obs[2], atol=1e-5)
    assert not np.allclose(obs[0], obs[3], atol=1e-5)


def test_sb3_vec_env_same_step_reset_and_learn(tiny_model, store_path):
    from stable_baselines3 import PPO

    venv = DexACWorldSB3VecEnv(num_envs=2, max_episode_steps=2, checkpoint=tiny_model,
                               store=store_path, sampling_steps=1, obs_mode="latent")
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (2, *venv.observation_space.shape)
    actions = venv.core.pose.astype(np.float32)
    _, rewards, dones, infos = venv.step(actions)
    assert rewards.shape == (2,) and not dones.any()
    obs, _, dones, infos = venv.step(actions)
    assert dones.all()
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"]
        assert info["terminal_observation"].shape == venv.observation_space.shape
        assert not np.array_equal(info["terminal_observation"], obs[i])  # obs is the new episode
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=8)


def test_branched_state_carries_each_envs_goal_and_time_limit(tiny_model, store_path):
    envs = gym.make_vec("DexACWorld-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        checkpoint=tiny_model, store=store_path, sampling_steps=1,
                        obs_mode="latent", reward="goal_image", max_episode_steps=2).unwrapped
    envs.reset(seed=0, options={"episode": ["ep0", "ep2"]})
    actions = envs.core.pose.astype(np.float32)
    envs.step(actions)
    envs.reset(options={"reset_mask": np.array([True, False]), "episode": ["ep0", "ep2"]})
    state = envs.get_state()
    assert state.elapsed.tolist() == [0, 1] and state.goal_latent.shape[0] == 2
    branched = select_state(state, [1, 1])  # env 1 (ep2, one step from its time limit) twice
    assert branched.elapsed.tolist() == [1, 1]
    assert branched.episodes == [state.episodes[1]] * 2
    torch.testing.assert_close(branched.goal_latent[0], state.goal_latent[1])
    envs.set_state(branched)
    _, _, _, truncated, _ = envs.step(envs.core.pose.astype(np.float32))
    assert truncated.tolist() == [True, True]
    envs.close()


def test_compile_is_a_bool_or_frozen(tiny_model):
    with pytest.raises(ValueError, match="compile must be True, False or 'frozen'"):
        WorldEnvConfig(checkpoint=tiny_model, compile="yes")
    assert WorldEnvConfig(checkpoint=tiny_model, compile="frozen").compile == "frozen"
