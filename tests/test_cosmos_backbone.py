"""DexAC on diffusers' Cosmos transformer (world_model/cosmos_backbone.py), on a tiny random
config (2 layers, width 64) on CPU: pretrained weights load unchanged, DexAC trains, every
variant and the facade run on it."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import CosmosTransformer3DModel

from tests.wm_helpers import VARIANTS, fake_semantic, gap_actions, latents, tiny_model
from world_model import WorldModel
from world_model.cosmos_backbone import transformer_kwargs

TINY_DIT = {"hidden_dim": 64, "depth": 2, "heads": 2, "adaln_lora_dim": 16}


def cosmos_model(variant="dexac", semantic=False, **cosmos) -> WorldModel:
    return tiny_model(variant, semantic=semantic, backbone="cosmos", dit=TINY_DIT, cosmos=cosmos)


def save_bare_cosmos(model: WorldModel, directory, seed=3, **changes) -> CosmosTransformer3DModel:
    """A random-weight CosmosTransformer3DModel of ``model``'s architecture, saved with
    diffusers' ``save_pretrained`` as a Cosmos-Predict2.5 directory would hold it."""
    cfg = model.config
    kwargs = transformer_kwargs(cfg.dit, cfg.cosmos, cfg.tokenizer.latent_channels)
    torch.manual_seed(seed)
    bare = CosmosTransformer3DModel(**{**kwargs, **changes}).eval()
    bare.save_pretrained(directory)
    return bare


def run_backbone(model, frames, sigma, actions, semantic=None):
    context = model._context(actions, None, model._semantic_kv(semantic, use_cache=False))
    return model.dit(frames, sigma, context, model.config.context_frames)


def run_bare(bare, model, frames, sigma, context_tokens=None, padding_channel=False):
    """diffusers' own forward as Cosmos-Predict2.5's pipeline calls it; (B, T, C, h, w) out.
    ``padding_channel``: append Cosmos's (all-zero) padding mask after the condition mask as
    an ordinary input channel, for a model built with ``concat_padding_mask=False``."""
    b, t, _, h, w = frames.shape
    is_context = (torch.arange(t) < model.config.context_frames).float()
    timestep = torch.where(is_context.bool()[None], 0.0, sigma[:, None])  # (B, T)
    if context_tokens is None:  # no semantic branch: one all-zero context token
        context_tokens = torch.zeros(b, 1, bare.config.text_embed_dim)
    hidden = [frames.transpose(1, 2), is_context[None, None, :, None, None].expand(b, 1, t, h, w)]
    if padding_channel:
        hidden.append(torch.zeros(b, 1, t, h, w))
    out = bare(
        hidden_states=torch.cat(hidden, dim=1),  # what the condition_mask argument does
        timestep=timestep[:, None, :, None, None],
        encoder_hidden_states=context_tokens,
        return_dict=False,
    )[0]
    return out.transpose(1, 2)


def frames_and_actions(model, batch=2):
    cfg = model.config
    frames = latents(model, batch, cfg.context_frames + cfg.chunk_frames, seed=5)
    return frames, torch.tensor([0.3, 0.8])[:batch], gap_actions(batch, cfg.action_rows)


@pytest.mark.parametrize("variant", VARIANTS)
def test_dexac_wrapper_of_a_pretrained_directory_is_the_bare_model_at_initialisation(
    tmp_path, variant
):
    template = cosmos_model(variant)
    bare = save_bare_cosmos(template, tmp_path / "transformer")
    model = cosmos_model(variant, pretrained_dir=str(tmp_path), subfolder="transformer").eval()
    frames, sigma, actions = frames_and_actions(model)
    with torch.no_grad():
        expected = run_bare(bare, model, frames, sigma)
        assert expected.abs().mean() > 0.1  # random pretrained weights: a non-trivial function
        other = gap_actions(2, model.config.action_rows, seed=9)
        for moved in (actions, other):  # at step 0 the actions change nothing
            torch.testing.assert_close(run_backbone(model, frames, sigma, moved), expected)


def test_semantic_tokens_enter_through_cosmos_own_cross_attention(tmp_path):
    template = cosmos_model(semantic=True)
    bare = save_bare_cosmos(template, tmp_path)
    model = cosmos_model(semantic=True, pretrained_dir=str(tmp_path)).eval()
    frames, sigma, actions = frames_and_actions(model)
    features = fake_semantic(model, 2)
    with torch.no_grad():
        tokens = model.dit.semantic_tokens(features.image, features.text)
        expected = run_bare(bare, model, frames, sigma, context_tokens=tokens)
        got = run_backbone(model, frames, sigma, actions, features)
    torch.testing.assert_close(got, expected)


def test_padding_mask_channel_needs_no_torchvision(tmp_path):
    """concat_padding_mask=True (Cosmos-Predict2.5's weights): the wrapper supplies the zero
    padding channel itself; the same weights read that channel as an ordinary input."""
    model = cosmos_model(concat_padding_mask=True).eval()
    c = model.config.tokenizer.latent_channels
    plain = save_bare_cosmos(model, tmp_path, concat_padding_mask=False, in_channels=c + 2)
    model.dit.transformer.load_state_dict(plain.state_dict())
    frames, sigma, actions = frames_and_actions(model)
    with torch.no_grad():
        expected = run_bare(plain, model, frames, sigma, padding_channel=True)
        torch.testing.assert_close(run_backbone(model, frames, sigma, actions), expected)


def test_pretrained_directory_that_does_not_match_the_config_is_one_clear_error(tmp_path):
    save_bare_cosmos(cosmos_model(), tmp_path, num_layers=3)
    with pytest.raises(ValueError, match="num_layers"):
        cosmos_model(pretrained_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        cosmos_model(pretrained_dir=str(tmp_path / "missing"))


@pytest.mark.parametrize("variant", ["dexac", "mlp_global"])
def test_dexac_parameters_receive_gradients_and_train(variant):
    """From the real initialisation (zero output layers), a few AdamW steps move every
    parameter of the action path: the conditioner and the per-block action layers."""
    model = cosmos_model(variant)
    frames, _, actions = frames_and_actions(model)
    cfg = model.config
    batch = {
        "context_latents": frames[:, : cfg.context_frames],
        "target_latents": frames[:, cfg.context_frames :],
        "actions": actions,
    }
    names = [
        n
        for n, p in model.named_parameters()
        if (n.startswith("dit.action_layers") or n.startswith("conditioner"))
        and "null_tokens" not in n  # the "no action" input only trains with action_dropout
    ]
    assert names and (variant != "dexac" or any("action_attn" in n for n in names))
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in names}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(4):
        torch.manual_seed(step)
        loss, _ = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:  # the zero-initialised outputs get a gradient at once
            zero_outputs = [n for n in names if n.endswith(("to_out.weight", "out.2.weight"))]
            zero_outputs += [n for n in names if n.endswith("mlp.2.weight")]
            assert zero_outputs and all(params[n].grad.abs().sum() > 0 for n in zero_outputs)
        optimizer.step()
    frozen = [n for n in names if torch.equal(params[n].detach(), before[n])]
    assert not frozen, f"parameters that never moved: {frozen[:8]} ({len(frozen)} in all)"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_predicts_and_trains_through_the_facade(variant):
    semantic = variant == "dexac"
    model = cosmos_model(variant, semantic=semantic, gradient_checkpointing=True)
    frames, _, actions = frames_and_actions(model)
    cfg = model.config
    features = fake_semantic(model, 2) if semantic else None
    context = frames[:, : cfg.context_frames]
    out = model.predict(context, actions, features, num_steps=2, cfg_scale=1.5)
    assert out.shape == (2, cfg.chunk_frames, *frames.shape[2:]) and torch.isfinite(out).all()
    model.train()
    batch = {"context_latents": context, "target_latents": out, "actions": actions}
    if semantic:
        batch["semantic_image"], batch["semantic_text"] = features.image, features.text
    loss, logs = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and "flow_loss" in logs


def test_world_model_checkpoint_needs_no_cosmos_directory(tmp_path):
    """A saved cosmos world model holds every weight: it loads after the Cosmos directory is
    gone and predicts exactly as before."""
    cosmos_dir = tmp_path / "cosmos"
    save_bare_cosmos(cosmos_model(), cosmos_dir)
    model = cosmos_model(pretrained_dir=str(cosmos_dir)).eval()
    frames, _, actions = frames_and_actions(model)
    context = frames[:, : model.config.context_frames]

    def predict(m):
        return m.predict(context, actions, generator=torch.Generator().manual_seed(0), num_steps=2)

    expected = predict(model)
    path = model.save_pretrained(str(tmp_path / "wm"))
    shutil.rmtree(cosmos_dir)
    loaded = WorldModel.from_pretrained(path)
    assert loaded.config.backbone == "cosmos"
    assert torch.equal(predict(loaded), expected)
