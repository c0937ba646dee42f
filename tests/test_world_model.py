"""Unit tests of the world model on tiny configs: shapes, zero-init, gradients, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.wm_helpers import (
    CONDITIONING_PATHS,
    VARIANTS,
    fake_semantic,
    gap_actions,
    latents,
    tiny_model,
    wake,
)
from world_model import WorldModelConfig
from world_model.conditioning import ConditioningConfig, build_conditioner
from world_model.dit import DIT_SIZES, DiT


def _batch(model, batch=2, seed=0):
    cfg = model.config
    return {
        "context_latents": latents(model, batch, cfg.context_frames, seed),
        "target_latents": latents(model, batch, cfg.chunk_frames, seed + 1),
        "actions": gap_actions(batch, cfg.action_rows, seed),
    }


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("semantic", [True, False])
def test_shapes_of_every_variant(variant, semantic):
    model = tiny_model(variant, semantic=semantic)
    cfg = model.config
    batch = _batch(model, batch=3)
    features = fake_semantic(model, 3) if semantic else None
    out = model.predict(batch["context_latents"], batch["actions"], features, num_steps=2)
    assert out.shape == (3, cfg.chunk_frames, 8, 8, 8)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    model.train()
    if semantic:
        batch["semantic_image"], batch["semantic_text"] = features.image, features.text
    batch["reward"], batch["success"] = (
        torch.rand(3, cfg.chunk_frames),
        torch.ones(3, cfg.chunk_frames),
    )
    loss, logs = model.loss(batch)
    loss.backward()
    assert loss.ndim == 0 and {"flow_loss", "reward_loss", "success_loss", "loss"} <= set(logs)
    reward, success_logit = model.reward(batch["target_latents"])
    assert reward.shape == success_logit.shape == (3, cfg.chunk_frames)


def test_conditioning_outputs_per_variant():
    expected = {
        "dexac": ("tokens", "global_emb"),
        "dexac_no_local": ("global_emb",),
        "dexac_no_global": ("tokens",),
        "mlp_global": ("global_emb",),
        "frame_adaln": ("frame_emb",),
    }
    for variant, present in expected.items():
        conditioner = build_conditioner(
            ConditioningConfig(variant=variant, token_dim=32), 9, 48, 4, np.zeros(57), np.ones(57)
        )
        out = conditioner(torch.randn(2, 9, 57))
        shapes = {"tokens": (2, 57, 32), "global_emb": (2, 48), "frame_emb": (2, 4, 48)}
        for field, shape in shapes.items():
            value = getattr(out, field)
            assert (value is not None) == (field in present), (variant, field)
            if value is not None:
                assert value.shape == shape
    grouped = build_conditioner(
        ConditioningConfig(temporal_encoder="family", token_dim=32),
        9,
        48,
        4,
        np.zeros(57),
        np.ones(57),
    )
    tokens = grouped(torch.randn(2, 9, 57)).tokens
    assert tokens.shape == (2, 57, 32) and torch.isfinite(tokens).all()
    assert len(grouped.tokenizer.encoders) == 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_zero_init_network_outputs_zero_and_conditioning_paths_are_identity(variant):
    model = tiny_model(variant)
    batch = _batch(model)
    sigma = torch.full((2,), 0.5)
    frames = torch.cat([batch["context_latents"], batch["target_latents"]], dim=1)

    def run(actions, features):
        context = model._context(actions, None, model._semantic_kv(features, use_cache=False))
        return model.dit(frames, sigma, context, model.config.context_frames)

    actions_a, actions_b = batch["actions"], gap_actions(2, model.config.action_rows, seed=7)
    sem_a, sem_b = fake_semantic(model, 2, 0), fake_semantic(model, 2, 1)
    with torch.no_grad():
        # 1. untrained: exactly zero velocity
        assert run(actions_a, sem_a).abs().max() == 0
        # 2. trunk trained, conditioning paths untouched: actions and semantics change nothing
        wake(model, skip=CONDITIONING_PATHS)
        trunk = run(actions_a, sem_a)
        assert trunk.abs().max() > 0
        assert torch.equal(trunk, run(actions_b, sem_b))
        # 3. once the conditioning paths are trained, they do change the output
        wake(model, seed=2)
        assert not torch.allclose(run(actions_a, sem_a), run(actions_b, sem_a))
        assert not torch.allclose(run(actions_a, sem_a), run(actions_a, sem_b))


@pytest.mark.parametrize("variant", ["dexac", "dexac_no_local", "dexac_no_global"])
def test_gradient_reaches_every_action_dimension_token(variant):
    model = tiny_model(variant, semantic=False)
    wake(model)
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["tokens"] = output

    model.conditioner.tokenizer.register_forward_hook(keep)
    torch.manual_seed(0)
    loss, _ = model.loss(_batch(model))
    loss.backward()
    per_token = captured["tokens"].grad.norm(dim=(0, 2))  # (57,)
    assert per_token.shape == (57,)
    assert (per_token > 0).all(), (
        f"dimensions without gradient: {torch.nonzero(per_token == 0).tolist()}"
    )


def family_sensitivity(variant: str) -> dict[str, float]:
    """RMS over each family of |dL/da_d| * std_d: the loss's sensitivity to a one-std move
    of each action dimension, on data with the paper's scale gap."""
    from tests.wm_helpers import GAP_STD

    model = tiny_model(variant, semantic=False)
    wake(model)
    batch = _batch(model, batch=4)
    actions = batch["actions"].requires_grad_(True)
    torch.manual_seed(0)
    loss, _ = model.loss(batch)
    loss.backward()
    scaled = (
        (actions.grad.abs() * torch.as_tensor(GAP_STD, dtype=torch.float32)).pow(2).mean(dim=(0, 1))
    )
    slices = {"head": slice(0, 9), "wrist": slice(9, 27), "finger": slice(27, 57)}
    return {name: float(scaled[s].mean().sqrt()) for name, s in slices.items()}


def test_finger_gradients_do_not_vanish_under_dexac_but_do_under_mlp_global():
    dexac = family_sensitivity("dexac")
    mlp = family_sensitivity("mlp_global")
    dexac_ratio = dexac["finger"] / dexac["wrist"]
    mlp_ratio = mlp["finger"] / mlp["wrist"]
    print(
        f"\nfinger/wrist sensitivity: dexac {dexac_ratio:.3g} {dexac}, mlp_global {mlp_ratio:.3g} {mlp}"
    )
    assert dexac_ratio > 0.1, dexac
    # recorded behaviour of the Cosmos baseline (raw units): fingers drown
    assert mlp_ratio < 0.1 * dexac_ratio, (mlp, dexac)


def test_predict_is_deterministic_and_batch_invariant_with_per_sample_generators():
    model = tiny_model("dexac")
    wake(model)
    batch = _batch(model)
    features = fake_semantic(model, 2)

    def sample(seeds, rows=slice(None)):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return model.predict(
            batch["context_latents"][rows],
            batch["actions"][rows],
            features.index(rows),
            generator=generators,
            num_steps=3,
        )

    first, again = sample([1, 2]), sample([1, 2])
    assert torch.equal(first, again)
    assert not torch.allclose(first, sample([3, 4]))
    alone = sample([1], rows=slice(0, 1))
    torch.testing.assert_close(alone, first[:1], atol=1e-5, rtol=1e-5)
    shared = torch.Generator().manual_seed(5)
    one = model.predict(
        batch["context_latents"], batch["actions"], features, generator=shared, num_steps=2
    )
    shared.manual_seed(5)
    two = model.predict(
        batch["context_latents"], batch["actions"], features, generator=shared, num_steps=2
    )
    assert torch.equal(one, two)


def test_semantic_projection_is_cached_within_a_rollout(monkeypatch):
    model = tiny_model("dexac")
    batch = _batch(model)
    features = fake_semantic(model, 2)
    calls = []
    original = model.dit.semantic_keys_values
    monkeypatch.setattr(
        model.dit, "semantic_keys_values", lambda *a: calls.append(1) or original(*a)
    )
    for _ in range(3):
        model.predict(batch["context_latents"], batch["actions"], features, num_steps=2)
    assert len(calls) == 1
    model.predict(
        batch["context_latents"], batch["actions"], fake_semantic(model, 2, 3), num_steps=2
    )
    assert len(calls) == 2


def test_classifier_free_guidance_on_actions():
    model = tiny_model("dexac", conditioning={"action_dropout": 0.2})
    wake(model)
    batch = _batch(model)
    gen = torch.Generator()
    plain = model.predict(
        batch["context_latents"], batch["actions"], None, gen.manual_seed(0), 3, 1.0
    )
    guided = model.predict(
        batch["context_latents"], batch["actions"], None, gen.manual_seed(0), 3, 3.0
    )
    assert guided.shape == plain.shape and not torch.allclose(guided, plain)


def test_bad_inputs_raise_value_errors_that_name_the_shapes():
    model = tiny_model("dexac", semantic=False)
    batch = _batch(model)
    with pytest.raises(ValueError, match=r"action_chunk must have shape \(2, 5, 57\)"):
        model.predict(batch["context_latents"], batch["actions"][:, :3])
    with pytest.raises(ValueError, match="context_latents must have shape"):
        model.predict(batch["context_latents"][:, :1], batch["actions"])
    with pytest.raises(ValueError, match="variant must be one of"):
        WorldModelConfig.from_size("tiny", variant="mlp")


def test_paper_2b_parameter_count_is_within_ten_percent_of_2b():
    config = WorldModelConfig.from_size("paper-2b")
    assert config.dit == DIT_SIZES["paper-2b"]
    counts = {}
    for variant in ("mlp_global", "dexac"):
        conditioning = ConditioningConfig(variant=variant, token_dim=1024, global_heads=16)
        with torch.device("meta"):
            dit = DiT(
                config.dit, 16, 1024 if conditioning.uses_local else None, semantic_dims=(1024, 384)
            )
            conditioner = build_conditioner(
                conditioning, config.action_rows, 2048, 4, np.zeros(57), np.ones(57)
            )
        counts[variant] = sum(p.numel() for m in (dit, conditioner) for p in m.parameters())
    print(f"\npaper-2b parameters: {counts}")
    for count in counts.values():
        assert abs(count - 2e9) / 2e9 < 0.10


@pytest.mark.parametrize("variant", ["dexac", "mlp_global"])
def test_fresh_model_trains_every_block_with_real_optimizer_steps(variant):
    """No ``wake``: from the real initialisation, a few AdamW steps must move every trainable
    weight of the DiT blocks and of the action path (zero-initialised output layers under a
    zero gate would otherwise stay at zero forever)."""
    torch.manual_seed(0)
    model = tiny_model(variant, semantic=True)
    batch = _batch(model)
    batch["semantic_image"] = fake_semantic(model, 2).image
    batch["semantic_text"] = fake_semantic(model, 2).text
    names = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad
        and (n.startswith("dit.blocks") or n.startswith("conditioner"))
        and "null_tokens" not in n  # the "no action" input only trains with action_dropout
    ]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(5):  # zero layers open one per step along the deepest path (AdaLN -> query)
        loss, _ = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    params = dict(model.named_parameters())
    frozen = [n for n in names if torch.equal(params[n].detach(), before[n])]
    assert not frozen, f"parameters that never moved: {frozen[:8]} ({len(frozen)} in all)"


def test_context_noise_augmentation_trains_and_samples_with_its_level():
    from world_model.dit import frame_noise_levels

    levels = frame_noise_levels(
        torch.tensor([0.9, 0.5]), torch.tensor([True, True, False]), torch.tensor([0.1, 0.2])
    )
    torch.testing.assert_close(levels, torch.tensor([[0.1, 0.1, 0.9], [0.2, 0.2, 0.5]]))
    plain = tiny_model("dexac", semantic=False)
    noisy = tiny_model("dexac", semantic=False, flow={"context_noise_max": 0.5})
    for model in (plain, noisy):
        wake(model)
    batch = _batch(plain)
    seen = []
    original = noisy.dit.forward
    noisy.dit.forward = lambda latents, sigma, context, c: (
        seen.append((latents[:, :c].clone(), context.context_sigma))
        or original(latents, sigma, context, c)
    )
    noisy.train()
    torch.manual_seed(3)
    noisy.loss(batch)
    context, level = seen[-1]
    assert level is not None and (level >= 0).all() and (level <= 0.5).all()
    assert not torch.allclose(context, batch["context_latents"])  # the context was noised
    noisy.eval()  # no augmentation outside training
    noisy.loss(batch)
    assert seen[-1][1] is None and torch.equal(seen[-1][0], batch["context_latents"])
    # sampling: the configured level reaches the network; results stay deterministic
    noisy.config = noisy.config.replace(sampler={"context_noise": 0.1})
    gen = torch.Generator()
    one = noisy.predict(batch["context_latents"], batch["actions"], None, gen.manual_seed(0), 2)
    assert torch.allclose(seen[-1][1], torch.full((2,), 0.1))
    two = noisy.predict(batch["context_latents"], batch["actions"], None, gen.manual_seed(0), 2)
    assert torch.equal(one, two)
    clean = plain.predict(batch["context_latents"], batch["actions"], None, gen.manual_seed(0), 2)
    assert not torch.allclose(one, clean)
    with pytest.raises(ValueError, match="context_noise"):
        WorldModelConfig.from_size("tiny", sampler={"context_noise": 1.5})


def test_start_sigma_starts_each_chunk_from_the_last_context_frame():
    """sampler.start_sigma < 1 (SDEdit's start): near 0 the chunk is the last context frame
    carried over; at 1 it is the plain sampler; the schedule spans [start_sigma, 0]."""
    model = tiny_model("dexac", semantic=False, chunk_frames=1)
    wake(model)
    batch = _batch(model)
    gen = torch.Generator()
    plain = model.predict(batch["context_latents"], batch["actions"], None, gen.manual_seed(0), 2)
    model.config = model.config.replace(sampler={"start_sigma": 1.0})
    same = model.predict(batch["context_latents"], batch["actions"], None, gen.manual_seed(0), 2)
    torch.testing.assert_close(same, plain)
    model.config = model.config.replace(sampler={"start_sigma": 1e-3})
    kept = model.predict(batch["context_latents"], batch["actions"], None, gen.manual_seed(0), 2)
    last = batch["context_latents"][:, -1:]
    assert (kept - last).abs().max() < 0.05 < (plain - last).abs().mean()
    _, sigmas = model.sampler.schedule(2, torch.device("cpu"), 0.6)
    torch.testing.assert_close(sigmas, torch.tensor([0.6, 0.3, 0.0]))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="start_sigma"):
            WorldModelConfig.from_size("tiny", sampler={"start_sigma": bad})


def test_hard_cell_term_adds_the_worst_cells_error():
    from world_model.flow import FlowConfig, FlowMatching

    clean = torch.zeros(2, 1, 3, 4, 5)  # (B, T, C, h, w): 20 cells per target
    wrong = torch.zeros_like(clean)
    wrong[:, :, :, 0, 0] = 2.0  # one cell off by 2 in every channel: squared error 4
    # the network returns the target plus ``wrong``: its squared error is known exactly
    gen = torch.Generator()

    def run(config):
        flow = FlowMatching(config)

        def velocity(noisy, sigma):  # noisy = sigma * noise when clean is 0; the target: noise
            return noisy / sigma.reshape(-1, 1, 1, 1, 1) + wrong

        return flow.loss(velocity, clean, gen.manual_seed(0))

    plain, logs = run(FlowConfig())
    assert plain.item() == pytest.approx(4 / 20) and "hard_cell_loss" not in logs
    hard, logs = run(FlowConfig(hard_cell_weight=0.5, hard_cell_fraction=0.1))  # worst 2 cells
    assert logs["hard_cell_loss"] == pytest.approx(4 / 2)
    assert hard.item() == pytest.approx(4 / 20 + 0.5 * 4 / 2)
    assert logs["flow_loss"] == pytest.approx(4 / 20)  # the plain mean stays comparable
    for bad in ({"hard_cell_weight": -1.0}, {"hard_cell_fraction": 0.0}):
        with pytest.raises(ValueError, match="hard_cell"):
            FlowConfig(**bad)
    # through the model: the term changes the loss and reaches the gradients
    model = tiny_model("dexac", semantic=False)
    wake(model)
    hard_model = tiny_model("dexac", semantic=False, flow={"hard_cell_weight": 1.0})
    hard_model.load_state_dict(model.state_dict())
    batch = _batch(model)
    torch.manual_seed(0)
    a, _ = model.loss(batch)
    torch.manual_seed(0)
    b, logs = hard_model.loss(batch)
    assert b.item() > a.item() and logs["flow_loss"] == pytest.approx(a.item(), rel=1e-5)


def test_repatch_starts_a_finer_patch_from_a_coarser_one(tmp_path):
    from training.train_wm import start_from_checkpoint
    from world_model.dit import patchify, unpatchify
    from world_model.repatch import repatch_state_dict

    camera = {"keypoint_prior": True, "camera": [0.7, 0.7, 0.5, 0.5]}
    coarse = tiny_model("dexac", semantic=False, conditioning=camera)
    wake(coarse)
    fine = tiny_model("dexac", semantic=False, conditioning=camera, dit={"patch_size": 1})
    sub = coarse.dit.keypoint_prior[0]
    channels = coarse.config.tokenizer.latent_channels
    state = repatch_state_dict(coarse.dit.state_dict(), channels, 2, 1, sub)
    fine.dit.load_state_dict(state)  # strict: every shape fits
    # content constant over each 2 x 2 patch embeds, in each of its four finer tokens, as before
    blocks = torch.randn(2, 3, channels + 1, 4, 4)
    x = blocks.repeat_interleave(2, 3).repeat_interleave(2, 4)  # (B, T, C + 1, 8, 8)
    old = coarse.dit.patch_embed(patchify(x, 2))  # (B, T, 16, D)
    new = fine.dit.patch_embed(patchify(x, 1))  # (B, T, 64, D)
    new_grid = new.unflatten(2, (4, 2, 4, 2))  # (B, T, 4, 2, 4, 2, D): block, then its cell
    for qy in (0, 1):
        for qx in (0, 1):
            torch.testing.assert_close(new_grid[:, :, :, qy, :, qx].flatten(2, 3), old,
                                       atol=1e-5, rtol=1e-5)
    # the final projection of a finer token, from the coarse token's state, is its patch's mean
    hidden = torch.randn(2, 3, 16, coarse.config.dit.hidden_dim)
    old_out = unpatchify(coarse.dit.final_proj(hidden), 2, (8, 8))  # (B, T, C, 8, 8)
    fine_hidden = hidden.unflatten(2, (4, 4)).repeat_interleave(2, 2).repeat_interleave(2, 3)
    new_out = unpatchify(fine.dit.final_proj(fine_hidden.flatten(2, 3)), 1, (8, 8))
    mean = old_out.unflatten(3, (4, 2)).unflatten(5, (4, 2)).mean((4, 6))  # (B, T, C, 4, 4)
    torch.testing.assert_close(new_out, mean.repeat_interleave(2, 3).repeat_interleave(2, 4),
                               atol=1e-5, rtol=1e-5)
    # the keypoint prior: heatmaps repeating in each quarter of the old patch embed as before
    cells = sub  # heatmap cells per side of a finer patch
    pattern = torch.randn(5, state["keypoint_embed.weight"].shape[1])
    quarter = pattern.unflatten(1, (-1, cells, cells))
    whole = quarter.repeat(1, 1, 2, 2).flatten(1)  # (5, K (2 s)^2)
    torch.testing.assert_close(fine.dit.keypoint_embed(pattern), coarse.dit.keypoint_embed(whole),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        repatch_state_dict(coarse.dit.state_dict(), channels, 2, 3)
    # train_wm's init_checkpoint converts a coarser file on its own
    path = coarse.save_pretrained(str(tmp_path / "coarse.safetensors"))
    start = tiny_model("dexac", semantic=False, conditioning=camera, dit={"patch_size": 1})
    start_from_checkpoint(start, path)
    for name, value in fine.dit.state_dict().items():  # converted and carried-over alike
        torch.testing.assert_close(start.dit.state_dict()[name], value)
    # a finer file does not start a coarser model: repatch's check, as the run's config error
    from training.config import ConfigError

    fine_path = fine.save_pretrained(str(tmp_path / "fine.safetensors"))
    with pytest.raises(ConfigError, match="multiple"):
        start_from_checkpoint(tiny_model("dexac", semantic=False, conditioning=camera), fine_path)
