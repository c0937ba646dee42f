"""DexACWorld-v0 and DexACReplay-v0: contracts, semantics and validation (tiny random model).

``make_store`` and ``build_tiny_model`` are shared with test_world_env_vector.py.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dexac_env  # noqa: F401  (registers the envs)
from dexac_env.actions import ACTION_DIM
from dexac_env.replay.store import EpisodeStore
from dexac_env.world_core import select_state
from world_model.metrics import psnr

EPISODE_LENGTH = 14
RESOLUTION = 64


def make_store(path, episodes: int = 3, length: int = EPISODE_LENGTH):
    """A small store of smooth synthetic episodes (moving colour gradients, slow poses)."""
    store = EpisodeStore.create(path)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:RESOLUTION, 0:RESOLUTION] / RESOLUTION
    for e in range(episodes):
        t = np.arange(length)[:, None, None]
        rgb = np.stack([
            128 + 100 * np.sin(2 * np.pi * (xx[None] + 0.05 * t + e / 3)),
            128 + 100 * np.cos(2 * np.pi * (yy[None] - 0.03 * t)),
            np.broadcast_to(64.0 * (e + 1), (length, RESOLUTION, RESOLUTION)),
        ], axis=-1).astype(np.uint8)
        base = rng.normal(0.0, 0.05, ACTION_DIM)
        action = base + 0.01 * np.arange(length)[:, None] * rng.normal(0, 1, ACTION_DIM)
        store.write_episode(
            f"ep{e}", rgb, action.astype(np.float32),
            np.zeros((length, 12, 2), np.float32), np.ones((length, 12), bool),
            {"task": "pour" if e < 2 else "stack", "description": f"task number {e}", "fps": 30,
             "source": "sim", "split": "train", "intrinsics": np.eye(3)},
            extra={"reward": np.linspace(0, 1, length).astype(np.float32)},
        )
    store.compute_action_stats(None)
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return str(make_store(tmp_path_factory.mktemp("world_env") / "episodes.zarr"))


def build_tiny_model(store_path):
    """A randomly initialised tiny WorldModel with the store's action statistics."""
    from world_model.config import WorldModelConfig
    from world_model.facade import WorldModel

    torch.manual_seed(0)
    stats = EpisodeStore.open(store_path).action_stats
    return WorldModel(WorldModelConfig.from_size("tiny"), stats.mean, stats.std).eval()


@pytest.fixture(scope="module")
def tiny_model(store_path):
    return build_tiny_model(store_path)


def make_env(tiny_model, store_path, **kwargs):
    kwargs = {"checkpoint": tiny_model, "store": store_path, "sampling_steps": 1, **kwargs}
    return gym.make("DexACWorld-v0", **kwargs)


@pytest.mark.parametrize("obs_mode", ["rgb", "latent", "dict"])
def test_gymnasium_check_env_world(tiny_model, store_path, obs_mode):
    env = make_env(tiny_model, store_path, obs_mode=obs_mode, render_mode="rgb_array")
    gym_check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("obs_mode", ["rgb", "dict"])
def test_sb3_check_env_world(tiny_model, store_path, obs_mode):
    sb3_check_env(make_env(tiny_model, store_path, obs_mode=obs_mode).unwrapped, warn=False)


@pytest.mark.parametrize("obs_mode", ["rgb", "dict"])
def test_check_env_replay(store_path, obs_mode):
    env = gym.make("DexACReplay-v0", store=store_path, obs_mode=obs_mode, render_mode="rgb_array")
    gym_check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(gym.make("DexACReplay-v0", store=store_path, obs_mode=obs_mode).unwrapped, warn=False)


def test_same_seed_same_episode(tiny_model, store_path):
    env = make_env(tiny_model, store_path)
    action = env.unwrapped.core.pose[0].astype(np.float32) + 0.01

    def rollout(seed):
        obs, info = env.reset(seed=seed)
        frames = [obs] + [env.step(action)[0] for _ in range(3)]
        return info["episode_name"], np.stack(frames)

    name_a, frames_a = rollout(7)
    name_b, frames_b = rollout(7)
    assert name_a == name_b
    np.testing.assert_array_equal(frames_a, frames_b)
    # The sampler is stochastic: same window and actions, another seed -> another future.
    env.reset(seed=7)
    first = env.unwrapped.get_state()
    env.unwrapped.core.seed([0], [12345])
    other = env.step(action)[0]
    env.unwrapped.set_state(first)
    assert not np.array_equal(other, env.step(action)[0])


@pytest.mark.parametrize("env_id", ["DexACWorld-v0", "DexACReplay-v0"])
def test_bad_actions_raise(tiny_model, store_path, env_id):
    if env_id == "DexACWorld-v0":
        env = make_env(tiny_model, store_path)
    else:
        env = gym.make(env_id, store=store_path)
    env.reset(seed=0)
    good = np.zeros(ACTION_DIM, dtype=np.float32)
    bad = {
        "shape": np.zeros(ACTION_DIM - 1, np.float32),
        "batch": np.zeros((1, ACTION_DIM), np.float32),
        "nan": np.where(np.arange(ACTION_DIM) == 30, np.nan, good),
        "inf": np.where(np.arange(ACTION_DIM) == 3, np.inf, good),
        "complex": good.astype(np.complex64),
        "bool": good.astype(bool),
        "object": np.array([None] * ACTION_DIM, dtype=object),
        "str": np.array(["0"] * ACTION_DIM),
    }
    for name, action in bad.items():
        with pytest.raises(ValueError):
            env.step(action)
            pytest.fail(f"{name} action accepted")
    env.step(good)  # still usable afterwards


def test_config_errors(tiny_model, store_path, tmp_path):
    with pytest.raises(ValueError, match="unknown DexACWorld-v0 argument.*bogus"):
        make_env(tiny_model, store_path, bogus=1)
    with pytest.raises(ValueError, match="unknown DexACReplay-v0 argument"):
        gym.make("DexACReplay-v0", store=store_path, sampling_steps=3)
    with pytest.raises(ValueError, match="obs_mode"):
        make_env(tiny_model, store_path, obs_mode="depth")
    with pytest.raises(ValueError, match="reward"):
        make_env(tiny_model, store_path, reward="fun")
    with pytest.raises(ValueError, match="task"):
        make_env(tiny_model, store_path, task="juggle")
    # A checkpoint trained on 48-D actions (EgoDex without the head) is refused by name.
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tiny_model.save_pretrained(str(tmp_path / "model.safetensors"))
    with safe_open(path, framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    metadata["action_mean"] = json.dumps([0.0] * 48)
    metadata["action_std"] = json.dumps([1.0] * 48)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match="48-D actions.*57-D"):
        make_env(tiny_model, store_path, checkpoint=str(tmp_path / "bad.safetensors"))
    env = make_env(tiny_model, store_path, checkpoint=path)  # the good file loads
    assert env.reset(seed=0)[0].shape == (RESOLUTION, RESOLUTION, 3)


def test_reset_options_and_render(tiny_model, store_path):
    env = make_env(tiny_model, store_path, render_mode="rgb_array", task="pour")
    obs, info = env.reset(seed=0, options={"episode": "ep1", "start": 3})
    context = env.unwrapped.core.context_pixel_frames
    assert (info["episode_name"], info["start"], info["frame_index"]) == ("ep1", 3, 3 + context - 1)
    np.testing.assert_array_equal(env.render(), obs)
    assert env.reset(options={"episode": 0})[1]["episode_name"] == "ep0"
    for options in ({"episode": 5}, {"start": EPISODE_LENGTH}, {"colour": 1}):
        with pytest.raises(ValueError):
            env.reset(options=options)


def test_frames_per_step_interpolates_and_slides(tiny_model, store_path):
    env = make_env(tiny_model, store_path, frames_per_step=6, obs_mode="latent")
    env.reset(seed=0)
    core = env.unwrapped.core
    assert core.action_frames == 4
    pose = core.pose.copy()
    target = pose + 1.0
    rows = core.step_rows(target)[0]  # (1 + 6, 57)
    expected = np.concatenate([[0], np.arange(1, 7) / 6])
    np.testing.assert_allclose(rows - pose[0], np.repeat(expected[:, None], ACTION_DIM, 1))
    calls = []  # the rollout loop: two sampler calls, the second starts at the first's last row
    predict = core.model.predict
    core.model.predict = lambda ctx, chunk, *a, **k: calls.append(chunk.clone()) or predict(
        ctx, chunk, *a, **k)
    state = core.get_state()
    core.step(target)
    core.model.predict = predict
    core.set_state(state)
    assert len(calls) == 2 and calls[0].shape[1] == 5
    np.testing.assert_allclose(calls[0][0, -1].numpy(), calls[1][0, 0].numpy())
    np.testing.assert_allclose(calls[1][0, -1].numpy() - pose[0], 1.0, rtol=1e-5)  # holds target
    index = core.frame_index[0]
    old_context = core.context.clone()
    obs, *_ = env.step(target[0].astype(np.float32))
    assert core.frame_index[0] == index + 6
    assert not torch.equal(core.context, old_context)
    np.testing.assert_array_equal(obs, core.context[0, -1].numpy())
    assert core._frames is None  # latent observations never decode


def test_rewards(tiny_model, store_path):
    # pose_tracking: following the demonstration exactly scores 0, leaving it scores < 0.
    env = make_env(tiny_model, store_path, reward="pose_tracking", frames_per_step=1)
    _, info = env.reset(seed=0, options={"episode": "ep0"})
    demo = EpisodeStore.open(store_path).episode("ep0").read("action")
    assert env.step(demo[info["frame_index"] + 1])[1] == pytest.approx(0.0, abs=1e-9)
    assert env.step(demo[info["frame_index"] + 2] + 0.1)[1] < -1.0
    # goal_image: the distance to the episode's last frame latent, 0 only at the goal.
    env = make_env(tiny_model, store_path, reward="goal_image")
    env.reset(seed=0, options={"episode": "ep2"})
    core = env.unwrapped.core
    goal = core.model.encode(torch.from_numpy(
        EpisodeStore.open(store_path).episode("ep2").read("rgb", EPISODE_LENGTH - 1)[None]))[0, -1]
    torch.testing.assert_close(core.goal_latent[0], goal)
    _, reward, *_ = env.step(core.pose[0].astype(np.float32))
    expected = -(core.context[0, -1] - goal).pow(2).mean().sqrt().item()
    assert reward == pytest.approx(expected, rel=1e-5)
    # learned: the reward head summed over the step's frames.
    env = make_env(tiny_model, store_path, reward="learned", obs_mode="latent")
    env.reset(seed=0)
    state = env.unwrapped.get_state()
    _, reward, *_ = env.step(env.unwrapped.core.pose[0].astype(np.float32))
    env.unwrapped.set_state(state)
    _, latents = env.unwrapped.core.step(env.unwrapped.core.pose.copy())
    assert reward == pytest.approx(tiny_model.reward(latents)[0].sum().item(), rel=1e-5)
    # a callable, and its output is checked
    env = make_env(tiny_model, store_path, reward=lambda step: step.frame_index * 1.0)
    _, info = env.reset(seed=0)
    assert env.step(np.zeros(ACTION_DIM, np.float32))[1] == info["frame_index"] + 1  # one frame per step by default
    env = make_env(tiny_model, store_path, reward=lambda step: np.zeros(3))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(ACTION_DIM, np.float32))


def test_state_restore_branches_identically(tiny_model, store_path):
    env = make_env(tiny_model, store_path, obs_mode="dict").unwrapped
    env.reset(seed=3)
    action = env.core.pose[0].astype(np.float32)
    state = env.get_state()
    first = env.step(action)[0]
    env.step(action)
    env.set_state(state)
    again = env.step(action)[0]
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["proprio"], action)
    with pytest.raises(ValueError, match="select"):
        env.set_state(select_state(state, [0, 0]))


def test_replay_follows_the_store(store_path):
    env = gym.make("DexACReplay-v0", store=store_path, obs_mode="dict", reward="stored",
                   context_frames=2, max_episode_steps=100)
    obs, info = env.reset(seed=0, options={"episode": "ep1"})
    episode = EpisodeStore.open(store_path).episode("ep1")
    np.testing.assert_array_equal(obs["image"], episode.read("rgb", 1, 2)[0])
    rewards, terminated = [], False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(info["demo_action"])
        rewards.append(reward)
        np.testing.assert_array_equal(obs["image"], episode.read("rgb", info["frame_index"],
                                                                 info["frame_index"] + 1)[0])
    assert info["frame_index"] == EPISODE_LENGTH - 1 and len(rewards) == EPISODE_LENGTH - 2
    np.testing.assert_allclose(sum(rewards), episode.read("reward", 2).sum(), rtol=1e-5)


def test_first_frame_round_trip_psnr():
    """The shipped tokenizer reproduces the stored first frame: PSNR >= 24 dB (64 px)."""
    from dexac_env.defaults import DEFAULT_CHECKPOINT, DEFAULT_STORE

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip(f"needs the trained checkpoint {DEFAULT_CHECKPOINT} (not shipped yet)")
    if not (DEFAULT_STORE / "zarr.json").is_file():
        pytest.skip(f"needs the default episode store {DEFAULT_STORE} (not shipped yet)")
    env = gym.make("DexACWorld-v0", sampling_steps=1)
    obs, info = env.reset(seed=0, options={"episode": 0, "start": 0})
    stored = EpisodeStore.open(DEFAULT_STORE).episode(info["episode_name"]).read(
        "rgb", info["frame_index"], info["frame_index"] + 1)[0]
    value = float(psnr(obs, stored))
    assert value >= 24.0, f"round-trip PSNR {value:.1f} dB < 24 dB"


def test_imagine_command_writes_a_video(tiny_model, store_path, tmp_path, capsys):
    from dexac_env.cli import main

    checkpoint = tiny_model.save_pretrained(str(tmp_path / "tiny.safetensors"))
    out = tmp_path / "not_yet_made" / "rollout.gif"  # the folder is created
    code = main(["imagine", "--steps", "3", "--out", str(out), "--checkpoint", checkpoint,
                 "--store", store_path, "--sampling-steps", "1", "--actions", "scripted",
                 "--scale", "1"])
    assert code == 0 and out.stat().st_size > 0
    assert "no env_seed" in capsys.readouterr().out  # sim-sourced but without a seed
    import imageio.v2 as imageio

    assert len(imageio.mimread(out)) == 4  # the context frame + 3 imagined frames


def test_demo_runs_on_the_embedded_default(tmp_path, capsys):
    """`make demo` = `dexac demo`: the shipped checkpoint + default store, beside the simulator."""
    from dexac_env.cli import main
    from dexac_env.defaults import DEFAULT_CHECKPOINT, DEFAULT_STORE

    if not DEFAULT_CHECKPOINT.is_file() or not (DEFAULT_STORE / "zarr.json").is_file():
        pytest.skip("the shipped checkpoint or default store is absent from this checkout")
    assert main(["demo", "--steps", "3", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "rollout.mp4").stat().st_size > 0
    assert "PSNR" in capsys.readouterr().out
