"""Shared helpers of the world-model tests (tiny configs, the paper's action-scale gap)."""

from __future__ import annotations

import numpy as np
import torch

from world_model import WorldModel, WorldModelConfig
from world_model.conditioning import VARIANTS as CONDITIONERS
from world_model.semantic import SemanticFeatures

VARIANTS = tuple(CONDITIONERS)  # every registered variant: a new one is tested without edits here
# The paper's scale gap: head/wrist positions vary over ~1e0 variance, fingertips (in their
# wrist's frame) over ~1e-5.
GAP_STD = np.array([1.0] * 9 + [0.5] * 18 + [3e-3] * 30)
GAP_MEAN = np.array([0.0] * 27 + [0.05] * 30)
CONDITIONING_PATHS = ("conditioner.", "action_attn.to_out", "semantic_attn.to_out")


def tiny_model(variant: str = "dexac", semantic: bool = True, **overrides) -> WorldModel:
    torch.manual_seed(0)
    config = WorldModelConfig.from_size(
        "tiny", variant=variant, semantic={"enabled": semantic}, **overrides
    )
    return WorldModel(config, GAP_MEAN, GAP_STD).eval()


def wake(model: torch.nn.Module, skip: tuple[str, ...] = (), seed: int = 1) -> None:
    """Give every all-zero parameter small random values (except names containing ``skip``),
    as a few training steps would; zero-initialised layers otherwise block gradients."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if any(s in name for s in skip) or parameter.abs().sum() != 0:
                continue
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    if hasattr(model, "clear_cache"):
        model.clear_cache()


def gap_actions(batch: int, rows: int, seed: int = 0) -> torch.Tensor:
    """(B, rows, 57) raw actions drawn with the paper's per-dimension scale gap."""
    rng = np.random.default_rng(seed)
    return torch.as_tensor(
        GAP_MEAN + GAP_STD * rng.standard_normal((batch, rows, 57)), dtype=torch.float32
    )


def fake_semantic(model: WorldModel, batch: int, seed: int = 0) -> SemanticFeatures:
    encoder = model.semantic_encoder
    generator = torch.Generator().manual_seed(seed)
    return SemanticFeatures(
        image=torch.randn(batch, encoder.num_tokens - 1, encoder.image_dim, generator=generator),
        text=torch.randn(batch, 1, encoder.text_dim, generator=generator),
    )


def latents(model: WorldModel, batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    cfg = model.config
    size = cfg.tokenizer.resolution // 8
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(
        batch, frames, cfg.tokenizer.latent_channels, size, size, generator=generator
    )
