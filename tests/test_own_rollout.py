"""Training on the model's own rollouts (training/own_rollout.py): the scored chunk, the
imagined context (the frames the env's rollout would feed back), and the clear errors."""

from __future__ import annotations

import pytest
import torch

from tests.wm_helpers import gap_actions, latents, tiny_model, wake
from training.config import ConfigError, OwnRolloutConfig
from training.own_rollout import own_rollout_loss, with_own_context


@pytest.fixture(scope="module")
def model():
    model = tiny_model(semantic=False, chunk_frames=1)
    wake(model)
    return model.train()


def _window(model, batch: int, chunks: int) -> dict:
    c, k = model.config.context_frames, model.config.chunk_frames
    frames = latents(model, batch, c + chunks * k, seed=3)
    return {
        "context_latents": frames[:, :c],
        "target_latents": frames[:, c:],
        "actions": gap_actions(batch, 1 + chunks * k, seed=4),
        "reward": torch.arange(batch * chunks * k, dtype=torch.float32).reshape(batch, -1),
    }


def test_recorded_context_is_the_frames_before_the_last_chunk(model):
    window = _window(model, 3, chunks=3)
    scored, share = with_own_context(model, window, OwnRolloutConfig(chunks=2, probability=0.0))
    frames = torch.cat([window["context_latents"], window["target_latents"]], 1)
    assert share == 0.0
    assert torch.equal(scored["context_latents"], frames[:, 2:4])
    assert torch.equal(scored["target_latents"], frames[:, 4:])
    assert torch.equal(scored["actions"], window["actions"][:, 2:])
    assert torch.equal(scored["reward"], window["reward"][:, -1:])


@pytest.mark.parametrize("start_sigma", [1.0, 0.6])
def test_imagined_context_is_the_env_rollout_of_the_same_noise(model, start_sigma):
    """With probability 1 the context is what ``WorldModel.predict`` imagines chunk by chunk
    from the window's first frames under its actions, with the same noise and sampler."""
    saved = model.config
    model.config = model.config.replace(sampler={"start_sigma": start_sigma})
    window = _window(model, 2, chunks=3)
    torch.manual_seed(11)
    scored, share = with_own_context(model, window, OwnRolloutConfig(chunks=2, probability=1.0))
    assert share == 1.0
    generator = torch.Generator().manual_seed(11)
    torch.rand(2, generator=generator)  # the per-window draw comes first
    context, actions = window["context_latents"], window["actions"]
    for j in range(2):
        chunk = model.predict(context[:, -2:], actions[:, j : j + 2], generator=generator, num_steps=2)
        context = torch.cat([context, chunk], 1)
    torch.testing.assert_close(scored["context_latents"], context[:, -2:])
    recorded = window["target_latents"][:, :2]
    assert (scored["context_latents"] - recorded).abs().mean() > 0.1  # not the recorded frames
    model.config = saved


def test_some_windows_imagined_and_gradients_only_through_the_scored_chunk(model):
    window = _window(model, 8, chunks=2)
    torch.manual_seed(0)
    scored, share = with_own_context(model, window, OwnRolloutConfig(chunks=1, probability=0.5))
    recorded = window["target_latents"][:, :1]
    imagined = [not torch.equal(scored["context_latents"][i, -1:], recorded[i]) for i in range(8)]
    assert share == sum(imagined) / 8 and 0 < share < 1
    assert not scored["context_latents"].requires_grad
    model.zero_grad()
    loss, logs = own_rollout_loss(OwnRolloutConfig(chunks=1))(model, {**window, "_index": 0})
    loss.backward()
    assert "own_context_share" in logs and torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.dit.parameters())


def test_wrong_window_and_config_are_clear_errors(model):
    with pytest.raises(ValueError, match="3 target frames"):
        with_own_context(model, _window(model, 2, chunks=2), OwnRolloutConfig(chunks=2))
    with pytest.raises(ConfigError, match="probability"):
        OwnRolloutConfig(chunks=1, probability=1.5)
    with pytest.raises(ConfigError, match="chunks"):
        OwnRolloutConfig(chunks=-1)


def test_imagined_pack_holds_the_rollout_and_reads_recorded_targets(tmp_path):
    """The offline form: every episode imagined once from its first frames (the frames
    ``WorldModel.predict`` gives for the same noise), the recorded latents kept as targets."""
    import numpy as np

    from training.latent_pack import PackedWindowDataset, write_pack
    from training.own_rollout import imagine_pack
    from training.synthetic import write_random_store

    model = tiny_model(semantic=False, chunk_frames=1)
    wake(model)
    checkpoint = model.save_pretrained(str(tmp_path / "wm.safetensors"))
    store = tmp_path / "s.zarr"
    write_random_store(store, episodes=3, length=7, resolution=16, latent_shape=(8, 8, 8))
    pack = write_pack(store, "train", tmp_path / "train.npz")
    imagined = imagine_pack(checkpoint, pack, tmp_path / "imagined.npz", seed=5)
    recorded, own = np.load(pack), np.load(imagined)
    np.testing.assert_array_equal(own["latent_target"], recorded["latent"])
    latent, frames = recorded["latent"].reshape(3, 7, 8, 8, 8), own["latent"].reshape(3, 7, 8, 8, 8)
    np.testing.assert_array_equal(frames[:, :2], latent[:, :2])  # the recorded context
    assert np.abs(frames[:, 2:] - latent[:, 2:]).mean() > 0.1
    actions = torch.from_numpy(recorded["action"].reshape(3, 7, 57))
    first = model.predict(torch.from_numpy(latent[:, :2]), actions[:, 1:3], num_steps=2,
                          generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(frames[:, 2:3], first.numpy(), atol=1e-5)
    # its windows: the context imagined, the target recorded
    windows = PackedWindowDataset(imagined, "train", 2, 1)
    item = windows[3]  # episode 0, start 3
    np.testing.assert_array_equal(item["context_latents"].numpy(), frames[0, 3:5])
    np.testing.assert_array_equal(item["target_latents"].numpy(), latent[0, 5:6])
    with pytest.raises(ValueError, match="already an imagined pack"):
        imagine_pack(checkpoint, imagined, tmp_path / "again.npz")
