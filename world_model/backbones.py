"""The backbone registry: which network the WorldModel facade drives (``config.backbone``).

| backbone | network |
| --- | --- |
| ``dexac_dit`` | our own DiT (world_model/dit.py): the shipped checkpoints, the default |
| ``cosmos`` | diffusers' Cosmos-Predict2.5 transformer with DexAC (cosmos_backbone.py) |

Every backbone honours the DiT's contract (``prepare``, ``forward``, ``semantic_keys_values``),
so the facade, the flow objective and the sampler do not know which one runs. A new backbone
is a builder here and one entry in :data:`BACKBONES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from world_model.cosmos_backbone import CosmosDexAC
from world_model.dit import DiT

if TYPE_CHECKING:
    from world_model.config import WorldModelConfig

SemanticDims = tuple[int, int] | None


def _dit(config: WorldModelConfig, action_token_dim, semantic_dims, load_weights) -> nn.Module:
    del load_weights  # nothing external: every weight is in the world-model checkpoint
    conditioning = config.conditioning
    return DiT(
        config.dit,
        latent_channels=config.tokenizer.latent_channels,
        action_token_dim=action_token_dim,
        semantic_dims=semantic_dims,
        keypoint_prior=(
            (conditioning.keypoint_sub, conditioning.keypoint_sigma)
            if conditioning.keypoint_prior
            else None
        ),
    )


def _cosmos(config: WorldModelConfig, action_token_dim, semantic_dims, load_weights) -> nn.Module:
    if config.conditioning.keypoint_prior:
        raise ValueError(
            "conditioning.keypoint_prior is implemented for the dexac_dit backbone only"
        )
    return CosmosDexAC(
        config.dit,
        config.cosmos,
        latent_channels=config.tokenizer.latent_channels,
        action_token_dim=action_token_dim,
        semantic_dims=semantic_dims,
        load_weights=load_weights,
    )


BACKBONES: dict[str, Callable[..., nn.Module]] = {"dexac_dit": _dit, "cosmos": _cosmos}


def build_backbone(
    config: WorldModelConfig,
    action_token_dim: int | None,
    semantic_dims: SemanticDims,
    load_weights: bool = True,
) -> nn.Module:
    """The network of ``config.backbone``. ``load_weights=False``: do not read external weight
    directories (a world-model checkpoint is about to supply every weight)."""
    return BACKBONES[config.backbone](config, action_token_dim, semantic_dims, load_weights)
