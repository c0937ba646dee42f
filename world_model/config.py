"""The world model's full config and the size registry (tiny ... paper-2b).

One frozen dataclass per component, gathered in :class:`WorldModelConfig`. Baselines and
ablations are switches of the same config (``conditioning.variant``, ``semantic.enabled``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from world_model.backbones import BACKBONES
from world_model.conditioning import ConditioningConfig
from world_model.cosmos_backbone import CosmosConfig
from world_model.dit import DIT_SIZES, DiTConfig
from world_model.flow import FlowConfig
from world_model.json_config import JSONConfig
from world_model.reward_head import RewardHeadConfig
from world_model.sampler import SamplerConfig
from world_model.semantic import SemanticConfig
from world_model.tokenizer import TokenizerConfig

SIZES = tuple(DIT_SIZES)


@dataclass(frozen=True)
class WorldModelConfig(JSONConfig):
    """Attributes:
    tokenizer, dit, conditioning, semantic, flow, sampler, reward: component configs.
    context_frames: clean latent frames given as context to each prediction.
    chunk_frames: latent frames predicted per call (one action chunk).
    size: name of the size preset this config came from (informational).
    backbone: the network, a key of ``backbones.BACKBONES``: "dexac_dit" (our DiT) or
        "cosmos" (diffusers' Cosmos-Predict2.5 transformer with DexAC; ``dit`` gives its
        width and depth, ``cosmos`` its weight directory and Cosmos-only settings).
    cosmos: settings of the cosmos backbone (unused by "dexac_dit").
    """

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    reward: RewardHeadConfig = field(default_factory=RewardHeadConfig)
    context_frames: int = 2
    chunk_frames: int = 4
    size: str = "custom"
    backbone: str = "dexac_dit"
    cosmos: CosmosConfig = field(default_factory=CosmosConfig)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {self.backbone!r}")
        if self.context_frames < 1 or self.chunk_frames < 1:
            raise ValueError(
                f"context_frames and chunk_frames must be >= 1, got {self.context_frames}, {self.chunk_frames}"
            )

    @property
    def temporal_compression(self) -> int:
        return 1 if self.tokenizer.kind == "kl_tiny" else 4

    @property
    def action_frames(self) -> int:
        """Video frames (= action rows after row 0) covered by one predicted chunk."""
        return self.chunk_frames * self.temporal_compression

    @property
    def action_rows(self) -> int:
        """Rows of an action chunk: the start pose plus one target pose per predicted frame."""
        return 1 + self.action_frames

    @classmethod
    def from_size(cls, size: str = "tiny", variant: str = "dexac", **overrides) -> WorldModelConfig:
        """A preset, with ``variant`` as the action conditioning and ``overrides`` applied.

        An override is a top-level field (``context_frames=1``), a whole component config, or a
        dict of component fields (``sampler={"num_steps": 4}``).
        """
        if size not in _PRESETS:
            raise ValueError(f"size must be one of {SIZES}, got {size!r}")
        preset = _PRESETS[size]()
        base = dataclasses.replace(
            preset, conditioning=dataclasses.replace(preset.conditioning, variant=variant)
        )
        return base.replace(**overrides)

    def replace(self, **overrides) -> WorldModelConfig:
        """A new config with overrides (same forms as :meth:`from_size`)."""
        changes = {}
        for name, value in overrides.items():
            if name in _COMPONENTS and isinstance(value, dict):
                value = dataclasses.replace(getattr(self, name), **value)
            changes[name] = value
        return dataclasses.replace(self, **changes)


_COMPONENTS = {
    "tokenizer": TokenizerConfig,
    "dit": DiTConfig,
    "conditioning": ConditioningConfig,
    "semantic": SemanticConfig,
    "flow": FlowConfig,
    "sampler": SamplerConfig,
    "reward": RewardHeadConfig,
    "cosmos": CosmosConfig,
}


def _tiny() -> WorldModelConfig:
    return WorldModelConfig(
        tokenizer=TokenizerConfig(
            resolution=64, latent_channels=8, block_out_channels=(32, 64, 64, 64)
        ),
        dit=DIT_SIZES["tiny"],
        conditioning=ConditioningConfig(token_dim=64, global_heads=4),
        semantic=SemanticConfig(image_size=64, ssl_vit_dim=128, ssl_vit_depth=4),
        sampler=SamplerConfig(num_steps=10),
        context_frames=2,
        chunk_frames=4,
        size="tiny",
    )


def _small() -> WorldModelConfig:
    return WorldModelConfig(
        tokenizer=TokenizerConfig(
            resolution=128,
            latent_channels=8,
            block_out_channels=(64, 128, 128, 128),
            norm_groups=32,
        ),
        dit=DIT_SIZES["small"],
        conditioning=ConditioningConfig(token_dim=128, global_heads=4),
        semantic=SemanticConfig(image_size=128, ssl_vit_dim=192, ssl_vit_depth=6, ssl_vit_patch=16),
        sampler=SamplerConfig(num_steps=35),
        size="small",
    )


def _base() -> WorldModelConfig:
    return WorldModelConfig(
        tokenizer=TokenizerConfig(
            resolution=256,
            latent_channels=16,
            block_out_channels=(64, 128, 256, 256),
            layers_per_block=2,
            norm_groups=32,
        ),
        dit=DIT_SIZES["base"],
        conditioning=ConditioningConfig(token_dim=256, global_heads=8),
        semantic=SemanticConfig(image_size=224, ssl_vit_dim=384, ssl_vit_depth=8, ssl_vit_patch=16),
        sampler=SamplerConfig(num_steps=35),
        size="base",
    )


def _paper_2b() -> WorldModelConfig:
    # Weight directories are the user's: set tokenizer.pretrained_dir (AutoencoderKLWan) and
    # semantic.image_encoder_dir (DINOv3) through overrides.
    return WorldModelConfig(
        tokenizer=TokenizerConfig(kind="wan", resolution=256, latent_channels=16),
        dit=DIT_SIZES["paper-2b"],
        conditioning=ConditioningConfig(token_dim=1024, global_heads=16),
        semantic=SemanticConfig(image_encoder="dinov3", image_size=224),
        sampler=SamplerConfig(num_steps=35),
        context_frames=1,
        chunk_frames=4,
        size="paper-2b",
    )


_PRESETS = {"tiny": _tiny, "small": _small, "base": _base, "paper-2b": _paper_2b}
