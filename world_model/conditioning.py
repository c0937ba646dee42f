"""Action conditioning: DexAC and the baselines it is compared with, behind one interface.

Every variant maps a raw action chunk ``(B, 1 + A, 57)`` to an :class:`ActionConditioning`,
which the DiT consumes in up to three places:

- ``tokens`` (B, 57, C): keys/values of the per-block action cross-attention (DexAC local
  refinement);
- ``global_emb`` (B, D): added to the timestep embedding that drives AdaLN (DexAC global
  modulation, or the flattened-chunk MLP of the Cosmos base);
- ``frame_emb`` (B, F, D): one embedding per predicted latent frame, added to that frame's
  AdaLN input (IRASim-style).

Variants (paper ablation names in docs/ablations.md):

| variant | tokens | global_emb | frame_emb |
| --- | --- | --- | --- |
| ``dexac`` | structured tokens | query-attention summary | - |
| ``dexac_no_local`` | (not given to the DiT) | query-attention summary | - |
| ``dexac_no_global`` | structured tokens | - | - |
| ``mlp_global`` | - | MLP(flatten(chunk)) | - |
| ``frame_adaln`` | - | - | MLP(actions of each frame) |

Every path into the DiT ends in a zero-initialised layer, so an untrained model is the same
function with or without actions; classifier-free guidance uses a learned "no action" input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from world_model.action_tokenizer import ACTION_DIM, ActionNormalizer, ActionTokenizer

VARIANTS = ("dexac", "dexac_no_local", "dexac_no_global", "mlp_global", "frame_adaln")


@dataclass(frozen=True)
class ConditioningConfig:
    """How actions enter the world model.

    Attributes:
        variant: one of VARIANTS.
        gain: constant multiplying normalised actions (DexAC's per-dimension z-score gain).
        token_dim: width C of the action tokens.
        temporal_encoder: "shared" (one MLP for all dimensions) or "family" (one per family).
        global_heads: heads of the global query attention.
        baseline_normalisation: what the baselines see: "none" = raw units times ``gain``, as
            the Cosmos base and IRASim feed actions; "per_dim" = the same z-score as DexAC
            (isolates the normalisation from the tokenisation in an ablation).
        action_dropout: probability of replacing a training sample's actions by the learned
            "no action" input (enables classifier-free guidance on actions; 0 = off).
    """

    variant: str = "dexac"
    gain: float = 1.0
    token_dim: int = 64
    temporal_encoder: str = "shared"
    global_heads: int = 4
    baseline_normalisation: str = "none"
    action_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"conditioning variant must be one of {VARIANTS}, got {self.variant!r}"
            )
        if self.baseline_normalisation not in ("none", "per_dim"):
            raise ValueError(
                f"baseline_normalisation must be 'none' or 'per_dim', got {self.baseline_normalisation!r}"
            )
        if self.token_dim % self.global_heads:
            raise ValueError(
                f"token_dim {self.token_dim} must divide by global_heads {self.global_heads}"
            )
        if not 0.0 <= self.action_dropout < 1.0:
            raise ValueError(f"action_dropout must be in [0, 1), got {self.action_dropout}")

    @property
    def uses_local(self) -> bool:
        """Whether the DiT gets per-block action cross-attention."""
        return self.variant in ("dexac", "dexac_no_global")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ConditioningConfig:
        return cls(**values)


@dataclass
class ActionConditioning:
    """What the DiT receives from the actions; fields a variant does not use are None."""

    tokens: torch.Tensor | None = None  # (B, 57, C)
    global_emb: torch.Tensor | None = None  # (B, D)
    frame_emb: torch.Tensor | None = None  # (B, F, D)


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class GlobalActionQuery(nn.Module):
    """A learnable query attends over the action tokens; the summary is mapped to width D."""

    def __init__(self, token_dim: int, hidden_dim: int, heads: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, token_dim) * 0.02)
        self.attn = nn.MultiheadAttention(token_dim, heads, batch_first=True)
        self.out = nn.Sequential(
            nn.Linear(token_dim, hidden_dim), nn.SiLU(), _zero_linear(hidden_dim, hidden_dim)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 57, C) -> (B, D)."""
        query = self.query.expand(tokens.shape[0], -1, -1)  # (B, 1, C)
        summary, _ = self.attn(query, tokens, tokens, need_weights=False)  # (B, 1, C)
        return self.out(summary[:, 0])  # (B, D)


class ActionConditioner(nn.Module):
    """Raw action chunk -> :class:`ActionConditioning` for the configured variant.

    Args:
        config: the conditioning config.
        num_rows: 1 + A, action rows per chunk.
        hidden_dim: the DiT width D.
        chunk_frames: F, latent frames predicted per chunk.
        action_mean, action_std: (57,) data-set statistics in raw units.
    """

    def __init__(
        self,
        config: ConditioningConfig,
        num_rows: int,
        hidden_dim: int,
        chunk_frames: int,
        action_mean: np.ndarray,
        action_std: np.ndarray,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_rows = num_rows
        self.chunk_frames = chunk_frames
        self.normalizer = ActionNormalizer(action_mean, action_std, gain=config.gain)
        variant = config.variant
        if (num_rows - 1) % chunk_frames:
            raise ValueError(
                f"action rows - 1 ({num_rows - 1}) must be a multiple of chunk_frames ({chunk_frames})"
            )
        if variant.startswith("dexac"):
            self.tokenizer = ActionTokenizer(num_rows, config.token_dim, config.temporal_encoder)
            self.null_tokens = nn.Parameter(torch.zeros(ACTION_DIM, config.token_dim))
            if variant != "dexac_no_global":
                self.global_query = GlobalActionQuery(
                    config.token_dim, hidden_dim, config.global_heads
                )
        elif variant == "mlp_global":
            self.mlp = nn.Sequential(
                nn.Linear(num_rows * ACTION_DIM, hidden_dim),
                nn.SiLU(),
                _zero_linear(hidden_dim, hidden_dim),
            )
        else:  # frame_adaln: each latent frame sees its own rows plus the pose it starts from
            rows_per_frame = (num_rows - 1) // chunk_frames + 1
            self.frame_mlp = nn.Sequential(
                nn.Linear(rows_per_frame * ACTION_DIM, hidden_dim),
                nn.SiLU(),
                _zero_linear(hidden_dim, hidden_dim),
            )

    def _baseline_input(self, actions: torch.Tensor) -> torch.Tensor:
        if self.config.baseline_normalisation == "per_dim":
            return self.normalizer(actions)
        return self.config.gain * actions

    def forward(
        self, actions: torch.Tensor, drop: torch.Tensor | None = None
    ) -> ActionConditioning:
        """(B, 1 + A, 57) raw actions -> conditioning.

        ``drop`` (B,) bool marks samples whose actions are replaced by "no action" (training
        dropout and the unconditional half of classifier-free guidance).
        """
        if actions.ndim != 3 or actions.shape[1:] != (self.num_rows, ACTION_DIM):
            raise ValueError(
                f"action chunk must have shape (B, {self.num_rows}, {ACTION_DIM}), got {tuple(actions.shape)}"
            )
        keep = None if drop is None else (~drop).to(actions.dtype)[:, None, None]  # (B, 1, 1)
        variant = self.config.variant
        if variant.startswith("dexac"):
            # 1. structured tokens; dropped samples get the learned null tokens
            tokens = self.tokenizer(self.normalizer(actions))  # (B, 57, C)
            if keep is not None:
                tokens = keep * tokens + (1 - keep) * self.null_tokens  # (B, 57, C)
            # 2. global summary for AdaLN
            global_emb = (
                self.global_query(tokens) if hasattr(self, "global_query") else None
            )  # (B, D)
            return ActionConditioning(
                tokens=None if variant == "dexac_no_local" else tokens, global_emb=global_emb
            )
        values = self._baseline_input(actions)  # (B, 1 + A, 57)
        if keep is not None:
            values = keep * values
        if variant == "mlp_global":
            return ActionConditioning(global_emb=self.mlp(values.flatten(1)))  # (B, D)
        # frame_adaln: rows [k * r, (k + 1) * r] for latent frame k (r = rows per latent frame)
        step = (self.num_rows - 1) // self.chunk_frames
        windows = values.unfold(1, step + 1, step)  # (B, F, 57, r + 1)
        frame_emb = self.frame_mlp(windows.transpose(2, 3).flatten(2))  # (B, F, D)
        return ActionConditioning(frame_emb=frame_emb)
