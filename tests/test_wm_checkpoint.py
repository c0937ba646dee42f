"""Checkpoints: save -> load gives identical outputs; a mismatched config is one clear error."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors import safe_open

from tests.wm_helpers import fake_semantic, gap_actions, latents, tiny_model, wake
from world_model import WorldModel, WorldModelConfig
from world_model.checkpoint import read_metadata


@pytest.mark.parametrize("variant", ["dexac", "frame_adaln"])
def test_save_load_gives_identical_outputs(tmp_path, variant):
    model = tiny_model(variant)
    wake(model)
    model.tokenizer.set_latent_stats(torch.linspace(-1, 1, 8), torch.linspace(0.5, 2, 8))
    cfg = model.config
    context = latents(model, 2, cfg.context_frames)
    actions = gap_actions(2, cfg.action_rows)
    features = fake_semantic(model, 2)
    frames = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)

    path = model.save_pretrained(str(tmp_path / "ckpt"))
    loaded = WorldModel.from_pretrained(str(tmp_path / "ckpt"))
    assert loaded.config == cfg
    gen = torch.Generator()
    torch.testing.assert_close(
        loaded.predict(context, actions, features, gen.manual_seed(3), num_steps=3),
        model.predict(context, actions, features, gen.manual_seed(3), num_steps=3),
        rtol=0,
        atol=0,
    )
    assert torch.equal(loaded.encode(frames), model.encode(frames))
    assert torch.equal(loaded.decode(context), model.decode(context))
    assert torch.equal(loaded.reward(context)[0], model.reward(context)[0])
    assert torch.equal(
        loaded.encode_semantic(frames[:, 0], ["a", "b"]).image,
        model.encode_semantic(frames[:, 0], ["a", "b"]).image,
    )
    meta = read_metadata(path)
    assert meta["config"] == cfg.to_dict() and len(meta["action_std"]) == 57
    assert meta["latent_std"] == pytest.approx(torch.linspace(0.5, 2, 8).tolist())
    with safe_open(path, framework="pt") as handle:  # plain tensors only, nothing pickled
        assert json.loads(handle.metadata()["action_mean"]) == pytest.approx(
            model.action_mean.tolist()
        )


def test_config_that_does_not_match_the_weights_is_one_clear_error(tmp_path):
    model = tiny_model("dexac", semantic=False)
    model.save_pretrained(str(tmp_path / "model.safetensors"))
    other = WorldModelConfig.from_size(
        "tiny",
        variant="dexac",
        semantic={"enabled": False},
        dit=dataclasses.replace(model.config.dit, depth=5),
    )
    with pytest.raises(
        ValueError, match=r"config does not match the weights.*missing \[dit\.blocks\.4"
    ):
        WorldModel.from_pretrained(str(tmp_path / "model.safetensors"), config=other)
    wider = model.config.replace(conditioning={"token_dim": 32})
    with pytest.raises(ValueError, match="with another shape"):
        WorldModel.from_pretrained(str(tmp_path / "model.safetensors"), config=wider)
    with pytest.raises(ValueError, match="no world-model checkpoint"):
        WorldModel.from_pretrained(str(tmp_path / "missing"))


def test_config_round_trips_through_json():
    for size in ("tiny", "small", "base", "paper-2b"):
        config = WorldModelConfig.from_size(size, variant="mlp_global", sampler={"num_steps": 4})
        again = WorldModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config and again.sampler.num_steps == 4
    with pytest.raises(ValueError, match="unknown WorldModelConfig keys"):
        WorldModelConfig.from_dict({"depth": 3})


def _assert_predicts_like(loaded, model, features=None):
    """``loaded`` samples what ``model`` samples from the same context, actions and noise."""
    cfg = model.config
    context, actions = latents(model, 2, cfg.context_frames), gap_actions(2, cfg.action_rows)
    gen = torch.Generator()
    torch.testing.assert_close(
        loaded.predict(context, actions, features, gen.manual_seed(3), num_steps=3),
        model.predict(context, actions, features, gen.manual_seed(3), num_steps=3),
        rtol=0,
        atol=5e-2,
    )


def test_compact_inference_checkpoint_is_smaller_and_predicts_the_same(tmp_path):
    model = tiny_model("dexac")
    wake(model)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    full = model.save_pretrained(str(tmp_path / "full.safetensors"))
    compact = model.save_pretrained(
        str(tmp_path / "compact.safetensors"), inference_only=True, dtype="float16"
    )
    assert os.path.getsize(compact) < 0.5 * os.path.getsize(full)
    with safe_open(compact, framework="pt") as handle:
        assert not [k for k in handle.keys() if "ssl_vit.student" in k]
    loaded = WorldModel.from_pretrained(compact)
    features = model.encode_semantic(frames, ["push", "lift"])
    torch.testing.assert_close(
        loaded.encode_semantic(frames, ["push", "lift"]).image, features.image, rtol=0, atol=2e-2
    )
    _assert_predicts_like(loaded, model, features)
    with pytest.raises(ValueError, match="dtype must be one of"):
        model.save_pretrained(str(tmp_path / "x.safetensors"), dtype="int4")


def test_int8_storage_halves_the_file_within_half_a_step_per_weight(tmp_path):
    model = tiny_model("dexac")
    wake(model)
    half = model.save_pretrained(
        str(tmp_path / "h.safetensors"), inference_only=True, dtype="float16"
    )
    int8 = model.save_pretrained(str(tmp_path / "q.safetensors"), inference_only=True, dtype="int8")
    assert os.path.getsize(int8) < 0.65 * os.path.getsize(half)
    loaded = WorldModel.from_pretrained(int8)
    with safe_open(int8, framework="pt") as handle:
        quantised = [k for k in handle.keys() if handle.get_slice(k).get_dtype() == "I8"]
        assert len(quantised) > 10
        for name in quantised:
            weight = model.state_dict()[name]
            step = handle.get_tensor(name + ".int8_scale").view(-1, *[1] * (weight.ndim - 1))
            error = (loaded.state_dict()[name] - weight).abs()
            assert (error <= step / 2 + 1e-6).all(), name
    _assert_predicts_like(loaded, model)
