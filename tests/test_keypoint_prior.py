"""The projected-keypoint prior (world_model/keypoint_prior.py): its projection agrees with the
env's, its heatmaps peak where the points are, and the DiT reads it (zero-initialised)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dexac_env.actions import WorldPoses, poses_to_actions, project_keypoints, se3
from tests.wm_helpers import fake_semantic, latents, tiny_model, wake
from world_model import WorldModelConfig
from world_model.keypoint_prior import (
    keypoint_heatmaps,
    keypoint_patches,
    project_action_keypoints,
)

CAMERA = (0.71, 0.74, 0.5, 0.48)  # fx / W, fy / H, cx / W, cy / H
WIDTH = HEIGHT = 64


def _random_rotations(rng, count):
    q, _ = np.linalg.qr(rng.standard_normal((count, 3, 3)))
    return q * np.sign(np.linalg.det(q))[:, None, None]


def _scene_actions(length=6, seed=0):
    """Actions of a camera that moves and turns a little, hands in front of it (some points
    leave the image or go behind the camera)."""
    rng = np.random.default_rng(seed)

    def yaw(angle):
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])

    camera = np.stack([se3(yaw(0.05 * t), [0.02 * t, -0.01 * t, 0.0]) for t in range(length)])

    def wrist(position):
        jitter = 0.03 * rng.standard_normal((length, 3))
        return se3(_random_rotations(rng, length), np.array(position) + jitter)

    def tips(wrist_pose):
        return wrist_pose[:, None, :3, 3] + 0.06 * rng.standard_normal((length, 5, 3))

    left, right = wrist([-0.12, 0.05, 0.35]), wrist([0.15, 0.08, 0.4])
    right[-1, :3, 3] = [0.0, 0.0, -0.2]  # behind the camera
    poses = WorldPoses(camera, left, right, tips(left), tips(right))
    return poses_to_actions(poses)


def test_projection_agrees_with_the_env():
    actions = _scene_actions()
    intrinsics = np.array(
        [
            [CAMERA[0] * WIDTH, 0, CAMERA[2] * WIDTH],
            [0, CAMERA[1] * HEIGHT, CAMERA[3] * HEIGHT],
            [0, 0, 1],
        ]
    )
    uv_env, visible_env = project_keypoints(actions, intrinsics, WIDTH, HEIGHT)
    uv, visible = project_action_keypoints(torch.as_tensor(actions), CAMERA)
    assert visible.shape == (len(actions), 12) and uv.shape == (len(actions), 12, 2)
    assert 0 < visible_env.sum() < visible_env.size  # the scene has both kinds of points
    np.testing.assert_array_equal(visible.numpy(), visible_env)
    scale = np.array([WIDTH, HEIGHT])
    np.testing.assert_allclose(uv.numpy()[visible_env] * scale, uv_env[visible_env], atol=1e-4)
    assert (uv[~visible] == 0).all()


def test_heatmaps_peak_at_the_points_and_respect_their_weight():
    uv = torch.tensor([[[0.3, 0.7], [0.9, 0.1]]])  # (1, K=2, 2)
    maps = keypoint_heatmaps(uv, torch.tensor([[1.0, 0.0]]), 16, 32, sigma=0.05)  # (1, 2, 16, 32)
    row, col = divmod(int(maps[0, 0].argmax()), 32)
    assert (row, col) == (int(0.7 * 16), int(0.3 * 32))
    assert maps[0, 0].max() > 0.9 and maps[0, 1].abs().max() == 0


def test_patches_follow_the_dit_token_order():
    # one point in latent cell (row 5, col 2) of an 8 x 8 grid: patch 2 -> token (2, 1) of 4 x 4
    uv = torch.tensor([[[[2.5 / 8, 5.5 / 8]]]])  # (B=1, T=1, K=1, 2)
    patches = keypoint_patches(uv, torch.ones(1, 1, 1), (8, 8), patch=2, sub=4, sigma=0.01)
    assert patches.shape == (1, 1, 16, 64)
    assert int(patches[0, 0].sum(-1).argmax()) == 2 * 4 + 1


def _prior_model(**conditioning):
    return tiny_model(
        "dexac", conditioning={"keypoint_prior": True, "camera": CAMERA, **conditioning}
    )


def test_config_needs_the_camera():
    with pytest.raises(ValueError, match="camera"):
        WorldModelConfig.from_size("tiny", conditioning={"keypoint_prior": True})


def test_prior_starts_as_the_same_function_and_then_moves_with_the_hand():
    plain, prior = tiny_model("dexac"), _prior_model()
    wake(plain)  # as after training: zero-initialised output layers would hide everything
    missing, unexpected = prior.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == {"dit.keypoint_embed.weight", "dit.keypoint_embed.bias"}
    assert not unexpected
    cfg = prior.config
    context = latents(prior, 2, cfg.context_frames)
    actions = torch.as_tensor(_scene_actions(cfg.action_rows), dtype=torch.float32)
    actions = actions[None].repeat(2, 1, 1)
    semantic = fake_semantic(prior, 2)

    def sample(model, chunk):
        generator = torch.Generator().manual_seed(0)
        return model.predict(context, chunk, semantic, generator=generator, num_steps=2)

    torch.testing.assert_close(sample(prior, actions), sample(plain, actions))  # zero init
    with torch.no_grad():
        prior.dit.keypoint_embed.weight.normal_(0, 0.05)
    prior.clear_cache()
    assert not torch.allclose(sample(prior, actions), sample(plain, actions))  # the DiT reads it
    moved = actions.clone()
    moved[:, 1:, 18:21] += torch.tensor([0.03, 0.02, 0.0])  # the right wrist moves in the image
    shift = prior.conditioner(moved).keypoints - prior.conditioner(actions).keypoints
    # row 0 (the last context frame) did not move; the last row's wrist is behind the camera
    assert shift[:, 0].abs().max() == 0 and shift[:, 1:-1, 6].abs().min() > 0.01
    # "no action" (classifier-free guidance's other half) drops the heatmaps with the tokens
    conditioning = prior.conditioner(actions, drop=torch.tensor([False, True]))
    assert conditioning.keypoint_weight[0].sum() > 0 and conditioning.keypoint_weight[1].sum() == 0


def test_a_run_starts_from_a_checkpoint_without_the_prior(tmp_path):
    from training.config import ConfigError  # noqa: PLC0415
    from training.train_wm import start_from_checkpoint  # noqa: PLC0415

    plain = tiny_model("dexac")
    wake(plain)
    path = plain.save_pretrained(str(tmp_path / "plain.safetensors"))
    prior = _prior_model()
    start_from_checkpoint(prior, path)
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(prior.state_dict()[name], tensor, rtol=0, atol=0)
    assert prior.dit.keypoint_embed.weight.abs().max() == 0  # kept its (zero) init
    with pytest.raises(ConfigError, match="does not fit this model"):
        start_from_checkpoint(tiny_model("mlp_global"), path)
    with pytest.raises(ConfigError, match="does not exist"):
        start_from_checkpoint(prior, str(tmp_path / "missing.safetensors"))
