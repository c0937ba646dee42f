"""The task reward head (world_model/task_reward.py), its env reward and its training entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_model.keypoint_prior import camera_keypoints, project_action_keypoints
from world_model.task_reward import (
    FINGERTIPS,
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


def _fit(head: TaskRewardHead, batch: dict, n_train: int, batch_size: int,
         g: torch.Generator) -> TaskRewardHead:
    """``STEPS`` Adam steps of the head's own loss on the first ``n_train`` rows; eval mode."""
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(STEPS):
        rows = torch.randint(0, n_train, (batch_size,), generator=g)
        loss, _ = head.loss({k: v[:n_train][rows] for k, v in batch.items()})
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return head.eval()


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
    head = _fit(_head(latent_size=4, width=24), batch, 1024, 96, g)
    test = slice(1024, n)
    with torch.no_grad():
        predicted, _, _ = head(latents[test], poses[test], texts[test])
        swapped, _, _ = head(latents[test], poses[test], texts[test].flip(1))
    truth = reward[test]
    fitted = np.corrcoef(predicted.numpy(), truth.numpy())[0, 1]
    with_wrong_text = np.corrcoef(swapped.numpy(), truth.numpy())[0, 1]
    assert fitted > 0.8, fitted
    assert with_wrong_text < fitted - 0.2, (fitted, with_wrong_text)


def test_contact_structure_rewards_one_distance_to_the_located_object(stored_poses):
    """The contact head's reward is a decreasing function of the named fingertip's distance to
    the place it locates, and that place does not move with the commanded pose."""
    torch.manual_seed(0)
    head = _head(structure="contact").eval()
    for p in head.parameters():  # the FiLM layers start at zero: make them matter
        torch.nn.init.normal_(p, std=0.1)
    with pytest.raises(ValueError, match="structure must be one of"):
        TaskRewardConfig(structure="dense")
    latents, text = torch.randn(1, 4, 8, 8), torch.randn(1, 6)
    finger = 6  # the text names the right index fingertip (keypoint 8) without doubt
    with torch.no_grad():
        head.finger.weight.zero_()
        head.finger.bias.copy_(20.0 * torch.nn.functional.one_hot(torch.tensor(finger), 10))
        centre, _ = head.locate(latents, text)
    tip = FINGERTIPS[finger]
    pose = torch.from_numpy(stored_poses[:1]).clone()
    wrist = 9 if tip < 6 else 18
    # move the whole hand (its wrist, in the episode frame) so the fingertip walks toward the
    # located centre: camera frame = episode frame here (head at rest, identity rotation)
    pose[0, 0:9] = torch.tensor([0, 0, 0, 1, 0, 0, 0, 1, 0], dtype=pose.dtype)
    points, _, _ = camera_keypoints(pose, CAMERA)
    offset = centre[0] - points[0, tip]
    rewards, distances = [], []
    for fraction in (0.0, 0.5, 0.9, 1.0):
        moved = pose.clone()
        moved[0, wrist : wrist + 3] += fraction * offset
        with torch.no_grad():
            reward, log_reward, _ = head(latents, moved, text)
            distances.append(float(head.contact_distance(latents, moved, text)))
        rewards.append(float(reward))
        assert torch.allclose(head.locate(latents, text)[0], centre)
    assert distances == sorted(distances, reverse=True) and distances[-1] < 0.0
    assert rewards == sorted(rewards) and rewards[-1] > rewards[0]


def test_contact_head_locates_the_named_object_and_fingertip(stored_poses):
    """Synthetic touch: two objects drawn as blobs in two latent channels (depth in a third);
    the text names one object and one fingertip; the reward is 0.9 exp(-d / 0.05) of that
    fingertip's distance to the named object's surface, and the named object's centre is
    given as in training. The head must place the object within a few centimetres, and the
    wrong text must break the fit."""
    g = torch.Generator().manual_seed(0)
    n = 1536
    poses = torch.from_numpy(stored_poses[torch.randint(len(stored_poses), (n,), generator=g).numpy()])
    poses[:, 0:9] = torch.tensor([0, 0, 0, 1, 0, 0, 0, 1, 0])  # head at the episode frame
    points, _, _ = camera_keypoints(poses, CAMERA)
    which = torch.randint(0, 2, (n,), generator=g)  # text: object 0 + left index, 1 + right
    tip = torch.where(which[:, None] == 0, points[:, LEFT_INDEX], points[:, RIGHT_INDEX])
    objects = points[:, [LEFT_INDEX, RIGHT_INDEX]] + 0.06 * torch.randn(n, 2, 3, generator=g)
    objects[..., 2] = objects[..., 2].clamp(min=0.2)
    fx, fy, cx, cy = CAMERA
    uv = torch.stack([fx * objects[..., 0] / objects[..., 2] + cx,
                      fy * objects[..., 1] / objects[..., 2] + cy], -1).clamp(0.02, 0.98)
    centres = (torch.arange(8) + 0.5) / 8
    latents = 0.05 * torch.randn(n, 4, 8, 8, generator=g)
    for k in range(2):
        blob = torch.exp(-((centres[None, None, :] - uv[:, k, 0, None, None]) ** 2
                           + (centres[None, :, None] - uv[:, k, 1, None, None]) ** 2) / (2 * 0.06**2))
        latents[:, k] += 2.0 * blob
        latents[:, 2] += blob * (objects[:, k, 2, None, None] - 0.4) * 10
    # camera-frame object, re-derived from the (clamped) image place and the depth
    target = torch.where(which[:, None] == 0, objects[:, 0], objects[:, 1])
    target_uv = torch.where(which[:, None] == 0, uv[:, 0], uv[:, 1])
    target = torch.stack([(target_uv[:, 0] - cx) / fx * target[:, 2],
                          (target_uv[:, 1] - cy) / fy * target[:, 2], target[:, 2]], -1)
    distance = (tip - target).norm(dim=1) - 0.02
    reward = torch.where(distance <= 0.013, torch.ones(n), 0.9 * torch.exp(-distance.clamp(min=0) / 0.05))
    texts = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0]])[which]
    batch = {"latents": latents, "actions": poses, "text": texts, "reward": reward,
             "success": (distance <= 0.013).float(), "object": target}
    batch["object"][::7] = float("nan")  # rows without a known place still train the reward
    torch.manual_seed(0)
    head = _fit(_head(width=24, sub=2, structure="contact", log_weight=1.0), batch, 1280, 128, g)
    test = slice(1280, n)
    with torch.no_grad():
        located, _ = head.locate(latents[test], texts[test])
        _, log_predicted, _ = head(latents[test], poses[test], texts[test])
        _, log_swapped, _ = head(latents[test], poses[test], texts[test].flip(1))
    error = (located - target[test]).norm(dim=1).nanmedian()
    truth = torch.log(reward[test].clamp(max=0.9, min=1e-3)).numpy()
    fitted = np.corrcoef(log_predicted.numpy(), truth)[0, 1]
    with_wrong_text = np.corrcoef(log_swapped.numpy(), truth)[0, 1]
    assert error < 0.03, error
    assert fitted > 0.7, fitted
    assert with_wrong_text < fitted - 0.3, (fitted, with_wrong_text)


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


def test_training_entry_contact_structure_learns_object_places(tmp_path):
    """structure=contact: touch rows only, each with its episode's named object place
    (recovered by a simulator reset, cached beside the frames), and the located centre's
    error in the scores."""
    import json

    import numpy as np

    from dexac_env.defaults import DEFAULT_STORE
    from training.train_task_reward import main

    out = tmp_path / "head.safetensors"
    args = ["--config", "configs/task_reward/touch_contact.yaml", "--no-deepspeed",
            "--set", f"data.stores=[{DEFAULT_STORE}]", "--set", "data.true_only_stores=[]",
            "--set", "data.eval_splits=[train]", "--set", "data.imagined=false",
            "--set", f"data.cache={tmp_path / 'cache'}",
            "--set", "trainer.steps=2", "--set", "trainer.batch_size=8",
            "--set", "trainer.checkpoint_every=2", "--set", "trainer.warmup_steps=1",
            "--set", f"trainer.out_dir={tmp_path / 'run'}", "--set", f"output={out}"]
    assert main(args) == 0
    scores = json.loads(out.with_suffix(".json").read_text())["scores"]["train"]
    assert set(scores) == {"all", "touch/true"}  # push and the other tasks are left out
    assert 0 < scores["touch/true"]["locate_error_cm_median"] < 100
    places = np.load(next((tmp_path / "cache").glob("*_objects.npy")))
    assert np.isfinite(places).all(1).sum() == 2  # the store's two touch episodes
    assert load_task_reward(out).config.structure == "contact"


@pytest.mark.parametrize("name", ["task_reward_touch", "task_reward_touch_contact"])
def test_shipped_head_fits_the_shipped_world_model(name):
    """The shipped heads read the shipped model's latents and text embedding: if the default
    world model is retrained with another latent shape, the heads must be retrained too."""
    from dexac_env.defaults import ASSETS_DIR, load_world_model

    head = load_task_reward(ASSETS_DIR / f"{name}.safetensors")
    model = load_world_model(None)
    probe = model.encode(torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8))
    assert (head.config.latent_channels, head.config.latent_size) == (probe.shape[2], probe.shape[3])
    assert head.config.text_dim == 384
    assert tuple(head.config.camera) == tuple(model.config.conditioning.camera)
