"""Tokenizer (diffusers AutoencoderKL / AutoencoderKLWan), ssl-vit-tiny, semantic encoder."""

from __future__ import annotations

import pytest
import torch

from world_model.semantic import SemanticConfig, SemanticEncoder, SemanticFeatures
from world_model.ssl_vit import SSLViT, SSLViTConfig
from world_model.tokenizer import TokenizerConfig, VideoTokenizer


def _frames(b=2, t=3, size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=generator)


def test_kl_tiny_round_trip_shapes_stats_and_training_step():
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(TokenizerConfig())
    frames = _frames()
    assert tokenizer.latent_shape(3, 64, 64) == (3, 8, 8, 8)
    mean, std = tokenizer.compute_latent_stats(frames)
    latents = tokenizer.encode(frames)
    assert latents.shape == (2, 3, 8, 8, 8) and latents.dtype == torch.float32
    # normalised with the fitted statistics; deterministic (posterior mean)
    assert latents.mean().abs() < 1e-3 and (latents.std() - 1).abs() < 0.05
    assert torch.equal(latents, tokenizer.encode(frames))
    decoded = tokenizer.decode(latents)
    assert decoded.shape == frames.shape and decoded.dtype == torch.uint8
    optimiser = torch.optim.Adam(tokenizer.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss, logs = tokenizer.loss(frames[:, :1])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert {"l1", "mse", "kl", "psnr"} <= set(logs) and losses[-1] < losses[0]
    with pytest.raises(ValueError, match="uint8 of shape"):
        tokenizer.encode(frames.float())


def test_cpu_decode_feeds_the_vae_channels_last_and_draws_the_same_frames():
    """On a CPU the decoder gets channels-last input (oneDNN's own layout, E24); the frames are
    those of the NCHW path up to rounding."""
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(TokenizerConfig())
    frames = _frames()
    tokenizer.compute_latent_stats(frames)
    latents = tokenizer.encode(frames)
    decode, seen = tokenizer.vae.decode, []

    def recording(z, *args, **kwargs):
        seen.append(z.is_contiguous(memory_format=torch.channels_last))
        return decode(z, *args, **kwargs)

    tokenizer.vae.decode = recording
    fast = tokenizer.decode(latents)
    assert seen == [True]
    tokenizer.vae.decode = lambda z, *a, **k: decode(z.contiguous(), *a, **k)  # plain NCHW
    plain = tokenizer.decode(latents)
    assert (fast.int() - plain.int()).abs().max() <= 2


def test_worst_pixel_term_is_the_mean_of_the_largest_errors_and_is_checked():
    """``hard_pixel_weight`` adds that weight x the mean of each frame's worst pixel errors
    (summed over RGB), which is above the mean error: a tiny object the plain mean lets go
    counts in full there."""
    tokenizer = VideoTokenizer(TokenizerConfig())
    frames = _frames()[:, :1]
    torch.manual_seed(3)
    plain, logs = tokenizer.loss(frames)
    torch.manual_seed(3)
    weighted, hard_logs = tokenizer.loss(frames, hard_pixel_weight=2.0, hard_pixel_fraction=0.02)
    assert "hard" not in logs and torch.isclose(weighted - plain, torch.tensor(2 * hard_logs["hard"]))
    assert hard_logs["hard"] > 3 * hard_logs["l1"]  # worst 2% of pixels, summed over RGB
    torch.manual_seed(3)
    _, all_logs = tokenizer.loss(frames, hard_pixel_weight=1.0, hard_pixel_fraction=1.0)
    assert abs(all_logs["hard"] - 3 * all_logs["l1"]) < 1e-4  # every pixel: 3 x the L1 mean
    with pytest.raises(ValueError, match="hard_pixel_fraction"):
        tokenizer.loss(frames, hard_pixel_weight=1.0, hard_pixel_fraction=0.0)


def test_wan_tokenizer_loads_from_a_local_directory(tmp_path):
    from diffusers import AutoencoderKLWan

    with pytest.raises(ValueError, match="local diffusers directory"):
        VideoTokenizer(TokenizerConfig(kind="wan", latent_channels=16))
    # a tiny randomly initialised AutoencoderKLWan stands in for the real weights
    AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1).save_pretrained(
        tmp_path
    )
    tokenizer = VideoTokenizer(
        TokenizerConfig(kind="wan", latent_channels=16, pretrained_dir=str(tmp_path))
    )
    assert tokenizer.temporal_compression == 4 and tokenizer.latent_shape(5, 32, 32) == (
        2,
        16,
        4,
        4,
    )
    latents = tokenizer.encode(_frames(1, 5, 32))
    assert latents.shape == (1, 2, 16, 4, 4)
    assert tokenizer.decode(latents).shape == (1, 5, 32, 32, 3)
    rebuilt = VideoTokenizer(tokenizer.config, vae_config=dict(tokenizer.vae.config))
    rebuilt.load_state_dict(tokenizer.state_dict())
    assert torch.equal(rebuilt.encode(_frames(1, 5, 32)), latents)


def test_ssl_vit_dino_objective_trains_and_gives_dense_features():
    torch.manual_seed(0)
    model = SSLViT(SSLViTConfig(dim=64, depth=2, out_dim=64))
    frames = _frames(8, 1)[:, 0]
    assert model.features(frames).shape == (8, 64, 64)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = [p.clone() for p in model.teacher.parameters()]
    loss, logs = model.loss(frames, torch.Generator().manual_seed(0))
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    model.update_teacher(0.9)
    assert {"dino_loss", "teacher_entropy"} <= set(logs) and torch.isfinite(loss)
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.teacher.parameters(), strict=True)
    )


def test_semantic_encoder_with_packaged_minilm():
    encoder = SemanticEncoder(SemanticConfig(ssl_vit_dim=64, ssl_vit_depth=1))
    frames = _frames(2, 1)[:, 0]
    features = encoder.extract(frames, ["pick up the cup", "open the drawer"])
    assert features.image.shape == (2, 64, 64) and features.text.shape == (2, 1, 384)
    assert encoder.num_tokens == 65 and "ssl-vit-tiny" in encoder.name
    torch.testing.assert_close(features.text.norm(dim=-1), torch.ones(2, 1))
    same = encoder.text_features(["pick up the cup", "pick up the cup"])
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], features.text[0])
    assert not torch.allclose(features.text[0], features.text[1])
    both = SemanticFeatures.cat([features.index(1), features.index(0)])
    assert torch.equal(both.text[0], features.text[1])
    assert not any("text" in name for name, _ in encoder.state_dict().items())
    with pytest.raises(ValueError, match="local directory"):
        SemanticEncoder(SemanticConfig(image_encoder="dinov3"))


def test_dinov2_image_encoder_from_a_local_directory(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=64,
    )
    Dinov2Model(config).save_pretrained(tmp_path)
    encoder = SemanticEncoder(
        SemanticConfig(image_encoder="dinov2", image_encoder_dir=str(tmp_path), image_size=64)
    )
    assert encoder.image_dim == 32 and encoder.num_tokens == 65
    image = encoder.image_features(_frames(2, 1)[:, 0])
    assert image.shape == (2, 64, 32)  # CLS dropped, patch tokens kept
    assert encoder.state_dict() == {}  # external weights are not world-model weights
