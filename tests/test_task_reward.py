"""The task reward head (world_model/task_reward.py), its env reward and its training entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_model.keypoint_prior import project_action_keypoints
from world_model.task_reward import (
    TaskRewardConfig,
    TaskRewardHead,
    load_task_reward,
    save_task_reward,
)

CAMERA = (0.714074, 0.714074, 0.5, 0.5)
LEFT_INDEX, RIGHT_INDEX = 3, 9  # keypoint order: per hand wrist, thumb, index, ...
STEPS = 300


@pytest.fixture(scope="module")
def stored_poses() -> np.ndarray:
    """(N, 57) real poses of the shipped store (hands in view)."""
    from dexac_env.defaults import open_store

    store = open_store(None)
    return np.concatenate([e.read("action") for e in store.episodes()]).astype(np.float32)


def _head(**overrides) -> TaskRewardHead:
    return TaskRewardHead(TaskRewardConfig(**({"latent_channels": 4, "latent_size": 8,
                                                "text_dim": 6, "width": 16} | overrides)))


def test_outputs_and_input_checks():
    head = _head()
    latents, actions, text = torch.randn(5, 4, 8, 8), torch.zeros(5, 57), torch.randn(5, 6)
    reward, log_reward, logit = head(latents, actions, text)
    assert reward.shape == log_reward.shape == logit.shape == (5,)
    with pytest.raises(ValueError, match="latents must have shape"):
        head(torch.randn(5, 3, 8, 8), actions, text)
    with pytest.raises(ValueError, match="actions must be"):
        head(latents, torch.zeros(5, 56), text)
    with pytest.raises(ValueError, match="sigma > 0"):
        TaskRewardConfig(sigma=0.0)


def test_save_and_load_give_the_same_function(tmp_path):
    torch.manual_seed(0)
    head = _head().eval()
    for p in head.parameters():  # the FiLM layers start at zero: make them matter
        torch.nn.init.normal_(p, std=0.1)
    path = save_task_reward(head, tmp_path / "h.safetensors", {"note": "x"})
    loaded = load_task_reward(path)
    inputs = (torch.randn(3, 4, 8, 8), torch.randn(3, 57), torch.randn(3, 6))
    for a, b in zip(head(*inputs), loaded(*inputs), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(FileNotFoundError):
        load_task_reward(tmp_path / "missing.safetensors")


def test_head_learns_which_fingertip_the_text_names_and_where_the_object_is(stored_poses):
    """Synthetic task: a blob in the latent marks the object; text A scores the left index
    fingertip's image distance to it, text B the right one's. A head that ignored the text,
    the pose or the latent could not fit it."""
    g = torch.Generator().manual_seed(0)
    n = 1280
    poses = torch.from_numpy(stored_poses[torch.randint(len(stored_poses), (n,), generator=g).numpy()])
    poses[:, 9:12] += 0.06 * torch.randn(n, 3, generator=g)  # left wrist
    poses[:, 18:21] += 0.06 * torch.randn(n, 3, generator=g)  # right wrist
    uv, visible = project_action_keypoints(poses, CAMERA)
    cell = torch.randint(0, 4, (n, 2), generator=g)
    latents = 0.1 * torch.randn(n, 4, 4, 4, generator=g)
    latents[torch.arange(n), 0, cell[:, 1], cell[:, 0]] = 3.0
    blob = (cell.float() + 0.5) / 4
    which = torch.randint(0, 2, (n,), generator=g)
    texts = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0]])[which]
    tip = torch.where(which[:, None] == 0, uv[:, LEFT_INDEX], uv[:, RIGHT_INDEX])
    seen = torch.where(which == 0, visible[:, LEFT_INDEX], visible[:, RIGHT_INDEX])
    reward = torch.where(seen, 0.9 * torch.exp(-(tip - blob).norm(dim=1) / 0.15), torch.zeros(n))
    batch = {"latents": latents, "actions": poses, "text": texts, "reward": reward,
             "success": (reward > 0.7).float()}
    torch.manual_seed(0)
    head = _head(latent_size=4, width=24)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    train, test = slice(0, 1024), slice(1024, n)
    for _ in range(STEPS):
        rows = torch.randint(0, 1024, (96,), generator=g)
        loss, _ = head.loss({k: v[train][rows] for k, v in batch.items()})
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    head.eval()
    with torch.no_grad():
        predicted, _, _ = head(latents[test], poses[test], texts[test])
        swapped, _, _ = head(latents[test], poses[test], texts[test].flip(1))
    truth = reward[test]
    fitted = np.corrcoef(predicted.numpy(), truth.numpy())[0, 1]
    with_wrong_text = np.corrcoef(swapped.numpy(), truth.numpy())[0, 1]
    assert fitted > 0.8, fitted
    assert with_wrong_text < fitted - 0.2, (fitted, with_wrong_text)


def test_make_reward_reads_task_head_specs(tmp_path):
    from dexac_env.rewards import TaskHeadReward, make_reward

    path = save_task_reward(_head(), tmp_path / "h.safetensors")
    reward = make_reward(f"task_head:{path}")
    assert isinstance(reward, TaskHeadReward) and not reward.log
    assert make_reward(f"task_head_log:{path}").log
    with pytest.raises(ValueError, match="reward must be one of"):
        make_reward("task_head:")
    with pytest.raises(FileNotFoundError):
        make_reward(f"task_head:{tmp_path / 'nope.safetensors'}")


def test_imagined_steps_are_scored_by_the_head_with_the_task_text(tmp_path):
    """In DexACWorld-v0's core the head sees the newest imagined latent, the commanded pose
    and the semantic branch's text embedding: the env's reward equals the head called on them."""
    from dexac_env.vector_env import DexACWorldVectorEnv

    model, head, path = _default_model_head(tmp_path)
    venv = DexACWorldVectorEnv(num_envs=2, checkpoint=model, split=None, sampling_steps=1,
                               obs_mode="latent", reward=f"task_head:{path}")
    venv.reset(seed=0)
    core = venv.core
    targets = core.pose.copy()
    reward, latents = core.step(targets)
    with torch.no_grad():
        expected, _, _ = head(latents[:, -1], torch.as_tensor(targets, dtype=torch.float32),
                              core._semantic().text[:, 0])
    np.testing.assert_allclose(reward, expected.double().numpy(), rtol=1e-5, atol=1e-6)
    venv.close()


def test_config_lists_of_any_length(tmp_path):
    from training.config import load_config
    from training.train_task_reward import TaskRewardRunConfig

    config = load_config(TaskRewardRunConfig, "configs/task_reward/touch.yaml",
                         ["data.stores=[a.zarr]", "data.tasks=[touch, push, lift]"])
    assert config.data.stores == ("a.zarr",) and config.data.tasks == ("touch", "push", "lift")


def _default_model_head(tmp_path):
    """A random task head shaped for the shipped world model, saved; (model, head, path)."""
    from dexac_env.defaults import load_world_model

    model = load_world_model(None)
    probe = model.encode(torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8))
    torch.manual_seed(0)
    head = TaskRewardHead(TaskRewardConfig(latent_channels=int(probe.shape[2]),
                                           latent_size=int(probe.shape[3]), text_dim=384, width=8))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model, head.eval(), save_task_reward(head, tmp_path / "h.safetensors")


def test_planning_in_the_simulator_with_a_learned_objective(tmp_path):
    """The diagnostic scorer: true dynamics, the head's objective on the encoded frames. Its
    scores differ from the true reward's and depend on the sequences."""
    from agents.actions import action_dim
    from agents.branching import SimBranch
    from agents.envs import AgentEnvConfig, make_env

    model, _, path = _default_model_head(tmp_path)
    config = AgentEnvConfig(kind="sim", max_episode_steps=3)
    env = make_env(config)
    env.reset(seed=0)
    learned = SimBranch(config, objective=f"task_head:{path}", model=model, view_penalty=1.0)
    oracle = SimBranch(config)
    for scorer in (learned, oracle):
        scorer.sync(env.unwrapped.get_state(), env.delta.get_state())
    sequences = np.random.default_rng(0).uniform(-1, 1, (3, 2, action_dim(config.action_set)))
    scores, truth = learned(sequences), oracle(sequences)
    assert scores.shape == truth.shape == (3,) and np.all(np.isfinite(scores))
    assert not np.allclose(scores, truth) and np.ptp(scores) > 0
    with pytest.raises(ValueError, match="needs the world model"):
        SimBranch(config, objective=f"task_head:{path}")
    for closable in (learned, oracle, env):
        closable.close()


def test_training_entry_writes_a_scored_head_and_reuses_its_cache(tmp_path):
    import json

    from dexac_env.defaults import DEFAULT_STORE
    from training.train_task_reward import main

    out = tmp_path / "head.safetensors"
    args = ["--config", "configs/task_reward/touch.yaml", "--no-deepspeed",
            "--set", f"data.stores=[{DEFAULT_STORE}]", "--set", "data.eval_splits=[val]",
            "--set", "data.batch_episodes=4", "--set", f"data.cache={tmp_path / 'cache'}",
            "--set", "trainer.steps=2", "--set", "trainer.batch_size=8",
            "--set", "trainer.checkpoint_every=2", "--set", "trainer.warmup_steps=1",
            "--set", f"trainer.out_dir={tmp_path / 'run'}", "--set", f"output={out}"]
    assert main(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["scores"]) == {"val"} and "push/imagined" in report["scores"]["val"]
    head = load_task_reward(out)
    assert head.config.text_dim == 384
    caches = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(caches) == 2  # train and val of the one store
    stamps = [c.stat().st_mtime_ns for c in caches]
    assert main([*args, "--resume"]) == 0
    assert [c.stat().st_mtime_ns for c in caches] == stamps  # read, not re-encoded
    scores = tmp_path / "scores.json"
    assert main([*args, "--score", str(out), "--score-out", str(scores)]) == 0
    assert json.loads(scores.read_text())["heads"][str(out)] == report["scores"]


def test_shipped_head_fits_the_shipped_world_model():
    """The shipped head reads the shipped model's latents and text embedding: if the default
    world model is retrained with another latent shape, the head must be retrained too."""
    from dexac_env.defaults import ASSETS_DIR, load_world_model

    head = load_task_reward(ASSETS_DIR / "task_reward_touch.safetensors")
    model = load_world_model(None)
    probe = model.encode(torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8))
    assert (head.config.latent_channels, head.config.latent_size) == (probe.shape[2], probe.shape[3])
    assert head.config.text_dim == 384
    assert tuple(head.config.camera) == tuple(model.config.conditioning.camera)
