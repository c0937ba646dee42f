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

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from world_model.action_tokenizer import ACTION_DIM, ActionNormalizer, ActionTokenizer
from world_model.json_config import JSONConfig
from world_model.keypoint_prior import project_action_keypoints


@dataclass(frozen=True)
class ConditioningConfig(JSONConfig):
    """How actions enter the world model.

    Attributes:
        variant: a key of VARIANTS.
        gain: constant multiplying normalised actions (DexAC's per-dimension z-score gain).
        token_dim: width C of the action tokens.
        temporal_encoder: "shared" (one MLP for all dimensions) or "family" (one per family).
        global_heads: heads of the global query attention.
        baseline_normalisation: what the baselines see: "none" = raw units times ``gain``, as
            the Cosmos base and IRASim feed actions; "per_dim" = the same z-score as DexAC
            (isolates the normalisation from the tokenisation in an ablation).
        action_dropout: probability of replacing a training sample's actions by the learned
            "no action" input (enables classifier-free guidance on actions; 0 = off).
        keypoint_prior: also give the DiT where the action puts the 12 tracked points in each
            frame, as heatmaps (world_model/keypoint_prior.py; beyond the paper, issue #10).
            Works with every variant; "no action" drops the heatmaps too.
        camera: normalised intrinsics (fx / W, fy / H, cx / W, cy / H) of the camera the
            training frames came from; required with ``keypoint_prior``.
        keypoint_sub: heatmap cells per latent cell side.
        keypoint_sigma: the heatmaps' Gaussian width, as a fraction of the image width.
    """

    variant: str = "dexac"
    gain: float = 1.0
    token_dim: int = 64
    temporal_encoder: str = "shared"
    global_heads: int = 4
    baseline_normalisation: str = "none"
    action_dropout: float = 0.0
    keypoint_prior: bool = False
    camera: tuple[float, float, float, float] | None = None
    keypoint_sub: int = 4
    keypoint_sigma: float = 1.0 / 32

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"conditioning variant must be one of {tuple(VARIANTS)}, got {self.variant!r}"
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
        if self.keypoint_prior and (self.camera is None or len(self.camera) != 4):
            raise ValueError(
                "keypoint_prior needs camera = (fx / W, fy / H, cx / W, cy / H), the normalised "
                f"intrinsics of the training frames, got {self.camera!r}"
            )
        if self.keypoint_sub < 1 or self.keypoint_sigma <= 0:
            raise ValueError(
                f"keypoint_sub must be >= 1 and keypoint_sigma > 0, got {self.keypoint_sub}, "
                f"{self.keypoint_sigma}"
            )

    @property
    def uses_local(self) -> bool:
        """Whether the DiT gets per-block action cross-attention."""
        return VARIANTS[self.variant].uses_local


@dataclass
class ActionConditioning:
    """What the DiT receives from the actions; fields a variant does not use are None."""

    tokens: torch.Tensor | None = None  # (B, 57, C)
    global_emb: torch.Tensor | None = None  # (B, D)
    frame_emb: torch.Tensor | None = None  # (B, F, D)
    # keypoint prior: image positions of the 12 tracked points in the last context frame and
    # each predicted frame, and their weights (0 = not visible or "no action")
    keypoints: torch.Tensor | None = None  # (B, 1 + F, 12, 2) image fractions
    keypoint_weight: torch.Tensor | None = None  # (B, 1 + F, 12)


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
    """Base of every variant: raw action chunk -> :class:`ActionConditioning`.

    A variant subclasses it, creates its layers in :meth:`build` and maps actions in
    :meth:`condition`; :data:`VARIANTS` names it. Layers are attributes of the conditioner itself
    (``conditioner.mlp``, ``conditioner.tokenizer``, ...): checkpoints depend on those names.

    Args:
        config: the conditioning config.
        num_rows: 1 + A, action rows per chunk.
        hidden_dim: the DiT width D.
        chunk_frames: F, latent frames predicted per chunk.
        action_mean, action_std: (57,) data-set statistics in raw units.
    """

    uses_local: ClassVar[bool] = False  # whether the DiT gets per-block action cross-attention

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
        if (num_rows - 1) % chunk_frames:
            raise ValueError(
                f"action rows - 1 ({num_rows - 1}) must be a multiple of chunk_frames ({chunk_frames})"
            )
        self.build(hidden_dim)

    def build(self, hidden_dim: int) -> None:
        """Create the variant's layers (D = ``hidden_dim``)."""
        raise NotImplementedError

    def condition(self, actions: torch.Tensor, keep: torch.Tensor | None) -> ActionConditioning:
        """actions (B, 1 + A, 57) raw; keep (B, 1, 1): 1 = use the actions, 0 = "no action"."""
        raise NotImplementedError

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
        conditioning = self.condition(actions, keep)
        if self.config.keypoint_prior:
            # the pose each frame shows: row 0 for the last context frame, the last row of
            # each predicted frame's group of action rows for that frame
            per_frame = (self.num_rows - 1) // self.chunk_frames
            rows = actions[:, ::per_frame]  # (B, 1 + F, 57)
            uv, visible = project_action_keypoints(rows, self.config.camera)
            weight = visible.to(actions.dtype)  # (B, 1 + F, 12)
            conditioning.keypoints = uv
            conditioning.keypoint_weight = weight if keep is None else weight * keep
        return conditioning


class DexACConditioner(ActionConditioner):
    """DexAC: structured per-dimension tokens for the local cross-attention, and their global
    query-attention summary for AdaLN. "No action" is a learned set of null tokens."""

    uses_local = True
    uses_global: ClassVar[bool] = True

    def build(self, hidden_dim: int) -> None:
        config = self.config
        self.tokenizer = ActionTokenizer(self.num_rows, config.token_dim, config.temporal_encoder)
        self.null_tokens = nn.Parameter(torch.zeros(ACTION_DIM, config.token_dim))
        if self.uses_global:
            self.global_query = GlobalActionQuery(config.token_dim, hidden_dim, config.global_heads)

    def condition(self, actions: torch.Tensor, keep: torch.Tensor | None) -> ActionConditioning:
        # 1. structured tokens; dropped samples get the learned null tokens
        tokens = self.tokenizer(self.normalizer(actions))  # (B, 57, C)
        if keep is not None:
            tokens = keep * tokens + (1 - keep) * self.null_tokens  # (B, 57, C)
        # 2. global summary for AdaLN
        global_emb = self.global_query(tokens) if self.uses_global else None  # (B, D)
        return ActionConditioning(tokens=tokens if self.uses_local else None, global_emb=global_emb)


class DexACNoLocalConditioner(DexACConditioner):
    """Ablation "without local attention": DexAC's tokens reach the DiT only through the global
    summary."""

    uses_local = False


class DexACNoGlobalConditioner(DexACConditioner):
    """Ablation "without global attention": tokens for the local cross-attention only."""

    uses_global = False


class BaselineConditioner(ActionConditioner):
    """Base of the baselines: they see raw units times ``gain`` (as the Cosmos base and IRASim
    feed actions) or DexAC's z-score (``baseline_normalisation="per_dim"``); "no action" = 0."""

    def baseline_input(self, actions: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """(B, 1 + A, 57) raw -> what the baseline's MLP reads, same shape."""
        if self.config.baseline_normalisation == "per_dim":
            values = self.normalizer(actions)
        else:
            values = self.config.gain * actions
        return values if keep is None else keep * values


def _mlp(in_features: int, hidden_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden_dim), nn.SiLU(), _zero_linear(hidden_dim, hidden_dim)
    )


class MLPGlobalConditioner(BaselineConditioner):
    """The Cosmos base ("MLP action embed"): MLP(flatten(chunk)) added to the timestep
    embedding."""

    def build(self, hidden_dim: int) -> None:
        self.mlp = _mlp(self.num_rows * ACTION_DIM, hidden_dim)

    def condition(self, actions: torch.Tensor, keep: torch.Tensor | None) -> ActionConditioning:
        values = self.baseline_input(actions, keep)  # (B, 1 + A, 57)
        return ActionConditioning(global_emb=self.mlp(values.flatten(1)))  # (B, D)


class FrameAdaLNConditioner(BaselineConditioner):
    """IRASim-style: each latent frame's AdaLN sees its own rows plus the pose it starts from."""

    def build(self, hidden_dim: int) -> None:
        rows_per_frame = (self.num_rows - 1) // self.chunk_frames + 1
        self.frame_mlp = _mlp(rows_per_frame * ACTION_DIM, hidden_dim)

    def condition(self, actions: torch.Tensor, keep: torch.Tensor | None) -> ActionConditioning:
        values = self.baseline_input(actions, keep)  # (B, 1 + A, 57)
        # rows [k * r, (k + 1) * r] for latent frame k (r = rows per latent frame)
        step = (self.num_rows - 1) // self.chunk_frames
        windows = values.unfold(1, step + 1, step)  # (B, F, 57, r + 1)
        frame_emb = self.frame_mlp(windows.transpose(2, 3).flatten(2))  # (B, F, D)
        return ActionConditioning(frame_emb=frame_emb)


# The variant registry: config.variant -> conditioner class. A new variant is a class here and
# one entry below; nothing else dispatches on the name.
VARIANTS: dict[str, type[ActionConditioner]] = {
    "dexac": DexACConditioner,
    "dexac_no_local": DexACNoLocalConditioner,
    "dexac_no_global": DexACNoGlobalConditioner,
    "mlp_global": MLPGlobalConditioner,
    "frame_adaln": FrameAdaLNConditioner,
}


def build_conditioner(config: ConditioningConfig, *args, **kwargs) -> ActionConditioner:
    """The conditioner of ``config.variant``; the other arguments are :class:`ActionConditioner`'s
    (num_rows, hidden_dim, chunk_frames, action_mean, action_std)."""
    return VARIANTS[config.variant](config, *args, **kwargs)
