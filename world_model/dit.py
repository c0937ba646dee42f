"""The latent video DiT (Cosmos-Predict2.5 style), the network only: it knows nothing of noise
schedules (flow.py) or sampling (sampler.py).

Input: latent frames ``(B, T, C, h, w)``, the first ``context_frames`` clean (the conditioning
frames, marked by a mask channel and given noise level 0), the rest noisy at level ``sigma``.
Output: a velocity for every frame, ``(B, T, C, h, w)``; the objective uses the noisy ones.

Each block: self-attention over all (t, h, w) tokens with 3D RoPE and QK RMSNorm ->
semantic cross-attention (if the semantic branch is on) -> action cross-attention (DexAC local
refinement, if the variant has it) -> MLP, each sub-layer AdaLN-modulated (shift, scale, gate)
from the timestep embedding plus the action embeddings. Modulation and output layers start at
zero, so a fresh network outputs 0 and every conditioning path starts as the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from world_model.conditioning import ActionConditioning
from world_model.dit_layers import (
    AdaLNModulation,
    Attention,
    Modulation,
    RoPE3D,
    TimestepEmbedder,
    modulate,
    zero_init,
)
from world_model.json_config import JSONConfig
from world_model.keypoint_prior import KEYPOINTS, keypoint_patches


@dataclass(frozen=True)
class DiTConfig(JSONConfig):
    """Width and depth of the DiT.

    Attributes:
        hidden_dim: token width D.
        depth: number of blocks.
        heads: attention heads.
        patch_size: spatial patch p (latents are patchified p x p, time is not).
        mlp_ratio: MLP width / D.
        adaln_lora_dim: rank of AdaLN-LoRA; None = full AdaLN.
        context_dim: width of the semantic token sequence the cross-attention reads.
        action_attn_dim: inner width of the action cross-attention (None = D); narrower keeps
            DexAC's extra parameters small at paper scale.
        rope_theta: RoPE base.
    """

    hidden_dim: int = 64
    depth: int = 2
    heads: int = 4
    patch_size: int = 2
    mlp_ratio: float = 4.0
    adaln_lora_dim: int | None = None
    context_dim: int | None = None
    action_attn_dim: int | None = None
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.hidden_dim % self.heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must divide by heads {self.heads}")


# The size registry. paper-2b is the Cosmos-Predict2.5 2B backbone.
DIT_SIZES: dict[str, DiTConfig] = {
    "tiny": DiTConfig(hidden_dim=128, depth=4, heads=4, adaln_lora_dim=32),
    "small": DiTConfig(hidden_dim=256, depth=8, heads=4, adaln_lora_dim=64),
    "base": DiTConfig(hidden_dim=768, depth=12, heads=12, adaln_lora_dim=128, context_dim=512),
    "paper-2b": DiTConfig(
        hidden_dim=2048,
        depth=28,
        heads=16,
        patch_size=2,
        adaln_lora_dim=256,
        context_dim=1024,
        action_attn_dim=1024,
    ),
}


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, T, C, h, w) -> (B, T, N, C p p): row-major p x p patches, each laid out (C, y, x)."""
    x = x.unflatten(3, (x.shape[3] // p, p)).unflatten(5, (x.shape[-1] // p, p))
    return x.permute(0, 1, 3, 5, 2, 4, 6).flatten(4).flatten(2, 3)  # (B, T, h/p w/p, C p p)


def unpatchify(x: torch.Tensor, p: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, T, N, C p p) -> (B, T, C, h, w) for ``grid`` (h, w): :func:`patchify` undone."""
    (h, w), (b, t) = grid, x.shape[:2]
    x = x.unflatten(2, (h // p, w // p)).unflatten(-1, (-1, p, p))  # (B, T, h/p, w/p, C, p, p)
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, t, -1, h, w)


def check_latents(latents: torch.Tensor, channels: int, patch: int) -> tuple[int, ...]:
    """A backbone's input check: (B, T, channels, h, w) with h, w divisible by ``patch``.
    Returns the shape; raises ValueError naming expected and actual otherwise."""
    b, t, c, h, w = latents.shape
    if c != channels or h % patch or w % patch:
        raise ValueError(
            f"latents must be (B, T, {channels}, h, w) with h, w divisible by {patch}, "
            f"got {tuple(latents.shape)}"
        )
    return b, t, c, h, w


@dataclass
class DiTContext:
    """Everything the DiT needs besides the noisy latents; fixed for all sampler steps.

    cond_extra: (B, F_total, D) or (B, 1, D) action part of the AdaLN input (or None).
    action_kv / semantic_kv: per-block cached keys/values of the cross-attentions (or None).
    context_sigma: (B,) noise level the context frames carry (context-noise augmentation,
        GameNGen/DIAMOND style), or None for clean context (level 0).
    """

    cond_extra: torch.Tensor | None
    action_kv: list[tuple[torch.Tensor, torch.Tensor]] | None
    semantic_kv: list[tuple[torch.Tensor, torch.Tensor]] | None
    context_sigma: torch.Tensor | None = None
    # keypoint prior (conditioning.keypoint_prior): per frame, zeros on the earlier context
    # frames; ``keypoint_tokens`` caches their embedding over the sampler steps
    keypoints: torch.Tensor | None = None  # (B, T, 12, 2) image fractions
    keypoint_weight: torch.Tensor | None = None  # (B, T, 12)
    keypoint_tokens: torch.Tensor | None = None  # (B, T, N, D)


def frame_noise_levels(
    sigma: torch.Tensor, is_context: torch.Tensor, context_sigma: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-frame noise levels (B, T): ``context_sigma`` (B,) (0 when None) on the context
    frames (``is_context`` (T,) bool), ``sigma`` (B,) on the predicted ones. Both backbones
    give these to their timestep embedding."""
    level = torch.zeros_like(sigma) if context_sigma is None else context_sigma.to(sigma)
    return torch.where(is_context[None], level[:, None], sigma[:, None])


class DiTBlock(nn.Module):
    def __init__(self, config: DiTConfig, action_token_dim: int | None, semantic: bool) -> None:
        super().__init__()
        dim, heads = config.hidden_dim, config.heads
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(dim, heads)
        self.semantic_attn = (
            Attention(dim, heads, context_dim=config.context_dim or dim) if semantic else None
        )
        self.action_attn = (
            Attention(dim, heads, context_dim=action_token_dim, inner_dim=config.action_attn_dim)
            if action_token_dim
            else None
        )
        hidden = int(dim * config.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        zero_init(self.mlp[2])
        # One (shift, scale, gate) per sub-layer, in execution order (the checkpoint layout).
        sublayers = ("self_attn",)
        sublayers += ("semantic_attn",) if self.semantic_attn is not None else ()
        sublayers += ("action_attn",) if self.action_attn is not None else ()
        self.modulation = AdaLNModulation(dim, (*sublayers, "mlp"), config.adaln_lora_dim)

    def _residual(self, x, sublayer, modulation: Modulation) -> torch.Tensor:
        """x (B, T, N, D); the sub-layer sees modulated, flattened tokens."""
        b, t, n, d = x.shape
        shift, scale, gate = modulation  # (B, T, 1, D) each
        h = modulate(self.norm(x), shift, scale).reshape(b, t * n, d)  # (B, L, D)
        # (1 + gate), not gate: the sub-layer's output projection starts at zero (identity at
        # init); a zero gate on top of it would leave both with zero gradient forever.
        return x + (1 + gate) * sublayer(h).reshape(b, t, n, d)  # (B, T, N, D)

    def forward(self, x, cond, shared, rope, semantic_kv=None, action_kv=None) -> torch.Tensor:
        """x (B, T, N, D) tokens per frame; cond (B, T, D) AdaLN input -> (B, T, N, D)."""
        mod = self.modulation(cond, shared)  # {sub-layer: Modulation of (B, T, 1, D)}
        # 1. self-attention over all (t, h, w) tokens
        x = self._residual(x, lambda h: self.self_attn(h, rope=rope), mod["self_attn"])
        # 2. semantic cross-attention; with no semantic context the branch adds nothing: skip it
        if self.semantic_attn is not None and semantic_kv is not None:
            semantic = mod["semantic_attn"]
            x = self._residual(x, lambda h: self.semantic_attn(h, kv=semantic_kv), semantic)
        # 3. action cross-attention (DexAC local refinement)
        if self.action_attn is not None:
            action = mod["action_attn"]
            x = self._residual(x, lambda h: self.action_attn(h, kv=action_kv), action)
        # 4. MLP
        return self._residual(x, self.mlp, mod["mlp"])  # (B, T, N, D)


class DiT(nn.Module):
    """The video diffusion transformer.

    Args:
        config: width and depth.
        latent_channels: C of the tokenizer's latents.
        action_token_dim: width of action tokens for the local cross-attention, None if the
            conditioning variant has none.
        semantic_dims: (image feature dim, text feature dim) of the semantic branch, or None.
        keypoint_prior: (heatmap cells per latent cell side, Gaussian width as a fraction of
            the image) of the projected-keypoint prior (world_model/keypoint_prior.py), or None.
    """

    def __init__(
        self,
        config: DiTConfig,
        latent_channels: int,
        action_token_dim: int | None = None,
        semantic_dims: tuple[int, int] | None = None,
        keypoint_prior: tuple[int, float] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.latent_channels = latent_channels
        dim, p = config.hidden_dim, config.patch_size
        # +1 input channel: the mask saying which frames are clean conditioning frames
        self.patch_embed = nn.Linear((latent_channels + 1) * p * p, dim)
        self.time_embed = TimestepEmbedder(dim)
        lora = config.adaln_lora_dim
        self.shared_modulation = (
            nn.Sequential(nn.SiLU(), zero_init(nn.Linear(dim, 3 * dim))) if lora else None
        )
        self.rope = RoPE3D(dim // config.heads, config.rope_theta)
        if semantic_dims is not None:
            context_dim = config.context_dim or dim
            self.semantic_image_proj = nn.Linear(semantic_dims[0], context_dim)
            self.semantic_text_proj = nn.Linear(semantic_dims[1], context_dim)
            self.semantic_type = nn.Parameter(torch.randn(2, context_dim) * 0.02)
            self.semantic_norm = nn.LayerNorm(context_dim)
        self.has_semantic = semantic_dims is not None
        self.has_action_tokens = action_token_dim is not None
        self.blocks = nn.ModuleList(
            DiTBlock(config, action_token_dim, self.has_semantic) for _ in range(config.depth)
        )
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(dim, 2 * dim)))
        self.final_proj = zero_init(nn.Linear(dim, latent_channels * p * p))
        self.keypoint_prior = keypoint_prior
        if keypoint_prior is not None:
            # zero-initialised: a model fine-tuned from one without the prior starts unchanged
            cells = (p * keypoint_prior[0]) ** 2
            self.keypoint_embed = zero_init(nn.Linear(KEYPOINTS * cells, dim))

    def semantic_keys_values(
        self, image: torch.Tensor, text: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Semantic features -> per-block cross-attention keys/values (constant in a rollout).

        image (B, S_img, D_img), text (B, S_txt, D_txt): projected, tagged with a type
        embedding, concatenated into one token sequence (B, S, Dc).
        """
        if not self.has_semantic:
            raise ValueError("semantic features given but this DiT has no semantic branch")
        image = self.semantic_image_proj(image) + self.semantic_type[0]  # (B, S_img, Dc)
        text = self.semantic_text_proj(text) + self.semantic_type[1]  # (B, S_txt, Dc)
        tokens = self.semantic_norm(torch.cat([image, text], dim=1))  # (B, S, Dc)
        return [block.semantic_attn.keys_values(tokens) for block in self.blocks]

    def prepare(
        self,
        actions: ActionConditioning,
        semantic_kv: list[tuple[torch.Tensor, torch.Tensor]] | None,
        context_frames: int,
    ) -> DiTContext:
        """Everything that is constant over the sampler steps of one chunk (computed once)."""
        # 1. action embeddings for AdaLN: global (B, 1, D) and/or per predicted frame (B, F, D)
        cond_extra = None
        if actions.global_emb is not None:
            cond_extra = actions.global_emb[:, None]  # (B, 1, D)
        if actions.frame_emb is not None:
            frame_emb = actions.frame_emb  # (B, F, D)
            pad = frame_emb.new_zeros(frame_emb.shape[0], context_frames, frame_emb.shape[2])
            frame = torch.cat([pad, frame_emb], dim=1)  # (B, T, D)
            cond_extra = frame if cond_extra is None else cond_extra + frame
        # 2. per-block keys/values of the action tokens (local refinement)
        action_kv = None
        if self.has_action_tokens:
            if actions.tokens is None:
                raise ValueError("this DiT has action cross-attention but got no action tokens")
            action_kv = [block.action_attn.keys_values(actions.tokens) for block in self.blocks]
        context = DiTContext(cond_extra=cond_extra, action_kv=action_kv, semantic_kv=semantic_kv)
        # 3. projected keypoints (last context frame + predicted frames), zeros before
        if self.keypoint_prior is not None:
            if actions.keypoints is None:
                raise ValueError("this DiT has a keypoint prior but the conditioning has none")
            earlier = context_frames - 1
            context.keypoints = F.pad(actions.keypoints, (0, 0, 0, 0, earlier, 0))  # (B, T, 12, 2)
            context.keypoint_weight = F.pad(actions.keypoint_weight, (0, 0, earlier, 0))
        return context

    def _keypoint_tokens(self, context: DiTContext, grid: tuple[int, int]) -> torch.Tensor:
        """The prior's embedding (B, T, N, D), computed on the first sampler step only."""
        if context.keypoint_tokens is None:
            sub, sigma = self.keypoint_prior
            patches = keypoint_patches(
                context.keypoints, context.keypoint_weight, grid, self.config.patch_size, sub, sigma
            )  # (B, T, N, K (p s)^2)
            context.keypoint_tokens = self.keypoint_embed(patches)
        return context.keypoint_tokens

    def forward(
        self, latents: torch.Tensor, sigma: torch.Tensor, context: DiTContext, context_frames: int
    ) -> torch.Tensor:
        """latents (B, T, C, h, w), first ``context_frames`` clean; sigma (B,) noise level of the
        rest, in [0, 1] -> velocity (B, T, C, h, w)."""
        b, t, _, h, w = check_latents(latents, self.latent_channels, self.config.patch_size)
        p = self.config.patch_size
        # 1. mask channel (1 = conditioning frame) and per-frame noise level (context: 0 or its
        # augmentation level)
        is_context = torch.arange(t, device=latents.device) < context_frames  # (T,)
        mask = is_context.to(latents.dtype)[None, :, None, None, None].expand(b, t, 1, h, w)
        frame_sigma = frame_noise_levels(sigma, is_context, context.context_sigma)  # (B, T)
        # 2. patchify: (B, T, C + 1, h, w) -> (B, T, N, (C + 1) p p) -> (B, T, N, D)
        x = self.patch_embed(patchify(torch.cat([latents, mask], dim=2), p))  # (B, T, N, D)
        if self.keypoint_prior is not None:
            x = x + self._keypoint_tokens(context, (h, w))  # (B, T, N, D)
        # 3. AdaLN input: timestep embedding per frame plus the action embeddings
        cond = self.time_embed(frame_sigma)  # (B, T, D)
        if context.cond_extra is not None:
            cond = cond + context.cond_extra  # (B, T, D)
        shared = self.shared_modulation(cond) if self.shared_modulation is not None else None
        rope = self.rope.tables((t, h // p, w // p), latents.device)  # (L, hd / 2) x 2
        # 4. blocks
        for i, block in enumerate(self.blocks):
            x = block(
                x,
                cond,
                shared,
                rope,
                semantic_kv=context.semantic_kv[i] if context.semantic_kv is not None else None,
                action_kv=context.action_kv[i] if context.action_kv is not None else None,
            )  # (B, T, N, D)
        # 5. final AdaLN and projection to patches
        shift, scale = self.final_modulation(cond).unsqueeze(2).chunk(2, dim=-1)  # (B, T, 1, D)
        x = self.final_proj(modulate(self.final_norm(x), shift, scale))  # (B, T, N, C p p)
        return unpatchify(x, p, (h, w))  # (B, T, C, h, w)
