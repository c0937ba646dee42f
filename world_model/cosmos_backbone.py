"""DexAC on diffusers' Cosmos-Predict2.5 transformer (``CosmosTransformer3DModel``).

The backbone keeps every module of the diffusers model (patch embedding, 3D RoPE, timestep
embedding, blocks, output layer) and their weights, loadable with ``from_pretrained`` from a
local Cosmos-Predict2.5 directory. DexAC adds, as the paper describes:

- local refinement: in every block, between Cosmos's cross-attention and its MLP, latent tokens
  attend to the 57 action tokens (own AdaLN-LoRA modulation, zero-initialised output);
- global modulation: the conditioner's learnable-query summary (or, for ``mlp_global``, the
  flattened-chunk MLP, Cosmos's own action path) is added to the timestep embedding that drives
  every AdaLN; the conditioner's last layer is zero, so it adds 0 at step 0.

So a freshly wrapped pretrained model is the pretrained function. The semantic branch (DINO +
text tokens) enters through Cosmos's own cross-attention (``attn2``); without it that
cross-attention is skipped, which equals giving the bare model one all-zero context token
(its projections have no bias). Cosmos's Reason1 text projection (``crossattn_proj``) is
not loaded: our semantic tokens are projected by the backbone itself.

The forward is written here, calling the diffusers modules, rather than ``transformer.forward``:
the action cross-attention has to sit inside each block, the action embedding inside the
timestep embedding, and the padding-mask channel is supplied directly (all zeros, as
Cosmos-Predict2.5's pipeline passes it), so ``concat_padding_mask=True`` checkpoints run without
torchvision, which diffusers' own forward needs to resize that mask.

Contract (the same as :class:`world_model.dit.DiT`): ``prepare`` -> :class:`DiTContext`;
``forward(latents (B, T, C, h, w), sigma (B,), context, context_frames)`` -> velocity
(B, T, C, h, w); ``semantic_keys_values(image, text)`` -> per-block keys/values.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import CosmosTransformer3DModel
from diffusers.models.transformers.transformer_cosmos import CosmosAdaLayerNormZero
from safetensors.torch import load_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from world_model.checkpoint import check_state
from world_model.conditioning import ActionConditioning
from world_model.dit import DiTConfig, DiTContext, check_latents, frame_noise_levels
from world_model.dit_layers import Attention
from world_model.json_config import JSONConfig

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class CosmosConfig(JSONConfig):
    """What the Cosmos backbone needs beyond the width/depth of :class:`DiTConfig` (heads,
    head width, depth, MLP ratio, AdaLN-LoRA rank, patch, cross-attention width and DexAC's
    action-attention width all come from ``WorldModelConfig.dit``).

    Attributes:
        pretrained_dir: local diffusers directory of a ``CosmosTransformer3DModel`` (e.g. the
            Cosmos-Predict2.5-2B repository); None = random weights from the config.
        subfolder: the transformer's folder inside ``pretrained_dir`` ("transformer" for a
            pipeline directory, None when ``pretrained_dir`` is the transformer itself).
        concat_padding_mask: input has Cosmos's padding-mask channel (True in
            Cosmos-Predict2.5's weights; False for random-weight builds, one channel less).
        rope_scale: NTK scaling of RoPE over (t, h, w); Cosmos-Predict2.5 uses (1, 3, 3).
        max_size: largest latent (T, H, W) the positional tables cover.
        extra_pos_embed_type: "learnable" or None (Cosmos-Predict2.5: None).
        gradient_checkpointing: recompute each block in the backward pass (paper scale).
    """

    pretrained_dir: str | None = None
    subfolder: str | None = None
    concat_padding_mask: bool = False
    rope_scale: tuple[float, float, float] = (1.0, 3.0, 3.0)
    max_size: tuple[int, int, int] = (128, 240, 240)
    extra_pos_embed_type: str | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.extra_pos_embed_type not in (None, "learnable"):
            raise ValueError(
                f"extra_pos_embed_type must be None or 'learnable', got {self.extra_pos_embed_type!r}"
            )


def transformer_kwargs(dit: DiTConfig, cosmos: CosmosConfig, latent_channels: int) -> dict:
    """The ``CosmosTransformer3DModel`` arguments of our configs (in_channels has the
    conditioning-frame mask channel, as in Cosmos-Predict2.5's ``in_channels = 16 + 1``)."""
    if not dit.adaln_lora_dim:
        raise ValueError("the cosmos backbone needs dit.adaln_lora_dim (Cosmos uses AdaLN-LoRA)")
    return {
        "in_channels": latent_channels + 1,
        "out_channels": latent_channels,
        "num_attention_heads": dit.heads,
        "attention_head_dim": dit.hidden_dim // dit.heads,
        "num_layers": dit.depth,
        "mlp_ratio": dit.mlp_ratio,
        "text_embed_dim": dit.context_dim or dit.hidden_dim,
        "adaln_lora_dim": dit.adaln_lora_dim,
        "max_size": tuple(cosmos.max_size),
        "patch_size": (1, dit.patch_size, dit.patch_size),
        "rope_scale": tuple(cosmos.rope_scale),
        "concat_padding_mask": cosmos.concat_padding_mask,
        "extra_pos_embed_type": cosmos.extra_pos_embed_type,
    }


def load_transformer(kwargs: dict, cosmos: CosmosConfig, load_weights: bool):
    """A ``CosmosTransformer3DModel`` built from ``kwargs``, with the weights of
    ``cosmos.pretrained_dir`` (a diffusers ``save_pretrained`` folder, one file or shards) when
    ``load_weights``; the directory's config must match ``kwargs``.

    The weights are read here rather than by ``CosmosTransformer3DModel.from_pretrained``,
    which in diffusers 0.42 refuses to load this class without ``accelerate`` installed (its
    fp32-kept modules force ``low_cpu_mem_usage``); loading is strict either way.
    """
    model = CosmosTransformer3DModel(**kwargs)
    if not (load_weights and cosmos.pretrained_dir):
        return model
    folder = os.path.join(cosmos.pretrained_dir, cosmos.subfolder or "")
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise ValueError(
            f"no *.safetensors in {folder!r}; cosmos.pretrained_dir (+ subfolder) must be a local "
            "diffusers CosmosTransformer3DModel directory, or None for random weights"
        )
    _check_directory_config(CosmosTransformer3DModel.load_config(folder), kwargs, folder)
    state = {}
    for file in files:
        state.update(load_file(file))
    # Reason1's text-embedding projection (100352 -> 1024) is not used: our semantic tokens
    # are projected by the backbone, so a loaded model has the random-weight build's tensors.
    state = {k: v for k, v in state.items() if not k.startswith("crossattn_proj.")}
    check_state(model.state_dict(), {k: tuple(v.shape) for k, v in state.items()}, folder)
    model.load_state_dict(state)  # copies into the fp32 parameters whatever the file's dtype
    return model


def _check_directory_config(found: dict, kwargs: dict, folder: str) -> None:
    if found.get("img_context_dim_in"):
        raise ValueError(f"{folder}: image-context Cosmos variants are not supported")
    plain = {k: tuple(v) if isinstance(v, list) else v for k, v in found.items()}
    wrong = [
        f"{k}: config {v!r}, directory {plain.get(k)!r}"
        for k, v in kwargs.items()
        if plain.get(k) != v
    ]
    if wrong:
        raise ValueError(f"{folder} does not match the config: {'; '.join(wrong)}")


def _split_heads(attn, x: torch.Tensor) -> torch.Tensor:
    return x.unflatten(2, (attn.heads, -1)).transpose(1, 2)  # (B, H, L, hd)


def cross_attention_kv(attn, context: torch.Tensor) -> KV:
    """Keys/values of a diffusers Cosmos cross-attention for a context (B, S, Dc), as its
    processor computes them: (B, H, S, hd) each; constant over a rollout, so cached."""
    keys = attn.norm_k(_split_heads(attn, attn.to_k(context)))
    return keys, _split_heads(attn, attn.to_v(context))


def cross_attend(attn, hidden: torch.Tensor, kv: KV) -> torch.Tensor:
    """A diffusers Cosmos cross-attention (``CosmosAttnProcessor2_0`` without RoPE) on cached
    keys/values: hidden (B, L, D) -> (B, L, D)."""
    queries = attn.norm_q(_split_heads(attn, attn.to_q(hidden)))  # (B, H, L, hd)
    out = F.scaled_dot_product_attention(queries, *kv)  # (B, H, L, hd)
    return attn.to_out[0](out.transpose(1, 2).flatten(2).type_as(queries))  # (B, L, D)


class ActionRefinement(nn.Module):
    """DexAC local refinement added to one Cosmos block: AdaLN(-LoRA) modulation in Cosmos's
    form and a cross-attention to the action tokens whose output projection starts at zero."""

    def __init__(self, dit: DiTConfig, token_dim: int) -> None:
        super().__init__()
        self.norm = CosmosAdaLayerNormZero(dit.hidden_dim, dit.adaln_lora_dim)
        self.action_attn = Attention(
            dit.hidden_dim, dit.heads, context_dim=token_dim, inner_dim=dit.action_attn_dim
        )

    def forward(self, x, embedded_timestep, temb, action_kv: KV) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        hidden, gate = self.norm(x, embedded_timestep, temb)
        return x + gate * self.action_attn(hidden, kv=action_kv)


def cosmos_block(block, refinement, x, emb, temb, rope, semantic_kv, action_kv) -> torch.Tensor:
    """One Cosmos block with DexAC inside: x (B, L, D); emb (B, L, D), temb (B, L, 3 D)."""
    # 1. self-attention (Cosmos)
    hidden, gate = block.norm1(x, emb, temb)
    x = x + gate * block.attn1(hidden, image_rotary_emb=rope)
    # 2. semantic cross-attention through Cosmos's own; none given = a zero context = skip
    if semantic_kv is not None:
        hidden, gate = block.norm2(x, emb, temb)
        x = x + gate * cross_attend(block.attn2, hidden, semantic_kv)
    # 3. DexAC local refinement
    if refinement is not None:
        x = refinement(x, emb, temb, action_kv)
    # 4. MLP (Cosmos)
    hidden, gate = block.norm3(x, emb, temb)
    return x + gate * block.ff(hidden)  # (B, L, D)


class CosmosDexAC(nn.Module):
    """The Cosmos-Predict2.5 transformer with DexAC, behind the DiT's contract.

    Args:
        dit: width, depth, heads, patch, AdaLN-LoRA rank, cross-attention widths.
        cosmos: weight directory and Cosmos-only settings.
        latent_channels: C of the tokenizer's latents.
        action_token_dim: width of action tokens for the local cross-attention, None if the
            conditioning variant has none.
        semantic_dims: (image feature dim, text feature dim) of the semantic branch, or None.
        load_weights: read ``cosmos.pretrained_dir`` (False when a world-model checkpoint
            supplies every weight).
    """

    def __init__(
        self,
        dit: DiTConfig,
        cosmos: CosmosConfig,
        latent_channels: int,
        action_token_dim: int | None = None,
        semantic_dims: tuple[int, int] | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        self.config, self.cosmos, self.latent_channels = dit, cosmos, latent_channels
        kwargs = transformer_kwargs(dit, cosmos, latent_channels)
        self.transformer = load_transformer(kwargs, cosmos, load_weights)
        self.has_action_tokens = action_token_dim is not None
        self.action_layers = (
            nn.ModuleList(ActionRefinement(dit, action_token_dim) for _ in range(dit.depth))
            if self.has_action_tokens
            else None
        )
        self.has_semantic = semantic_dims is not None
        if self.has_semantic:
            context_dim = kwargs["text_embed_dim"]
            self.semantic_image_proj = nn.Linear(semantic_dims[0], context_dim)
            self.semantic_text_proj = nn.Linear(semantic_dims[1], context_dim)
            self.semantic_type = nn.Parameter(torch.randn(2, context_dim) * 0.02)
            self.semantic_norm = nn.LayerNorm(context_dim)

    def semantic_tokens(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """image (B, S_img, D_img), text (B, S_txt, D_txt) -> the one context sequence Cosmos's
        cross-attention reads, (B, S, text_embed_dim)."""
        if not self.has_semantic:
            raise ValueError("semantic features given but this backbone has no semantic branch")
        image = self.semantic_image_proj(image) + self.semantic_type[0]  # (B, S_img, Dc)
        text = self.semantic_text_proj(text) + self.semantic_type[1]  # (B, S_txt, Dc)
        return self.semantic_norm(torch.cat([image, text], dim=1))  # (B, S, Dc)

    def semantic_keys_values(self, image: torch.Tensor, text: torch.Tensor) -> list[KV]:
        """Per-block keys/values of Cosmos's cross-attention (constant in a rollout)."""
        tokens = self.semantic_tokens(image, text)
        return [cross_attention_kv(b.attn2, tokens) for b in self.transformer.transformer_blocks]

    def prepare(
        self, actions: ActionConditioning, semantic_kv: list[KV] | None, context_frames: int
    ) -> DiTContext:
        """Everything that is constant over the sampler steps of one chunk (computed once)."""
        # 1. action embeddings added to the timestep embedding: (B, 1, D) and/or (B, T, D)
        cond_extra = None
        if actions.global_emb is not None:
            cond_extra = actions.global_emb[:, None]  # (B, 1, D)
        if actions.frame_emb is not None:  # context frames get no action embedding
            frame = F.pad(actions.frame_emb, (0, 0, context_frames, 0))  # (B, T, D)
            cond_extra = frame if cond_extra is None else cond_extra + frame
        # 2. per-block keys/values of the action tokens (local refinement)
        action_kv = None
        if self.has_action_tokens:
            if actions.tokens is None:
                raise ValueError(
                    "this backbone has action cross-attention but got no action tokens"
                )
            action_kv = [
                layer.action_attn.keys_values(actions.tokens) for layer in self.action_layers
            ]
        return DiTContext(cond_extra=cond_extra, action_kv=action_kv, semantic_kv=semantic_kv)

    def _inputs(self, latents: torch.Tensor, context_frames: int):
        """(B, T, C, h, w) -> Cosmos's (B, C', T, h, w) input with the conditioning-frame mask
        (and zero padding-mask) channels, and the per-frame noise-level mask (T,)."""
        b, t, c, h, w = check_latents(latents, self.latent_channels, self.config.patch_size)
        is_context = torch.arange(t, device=latents.device) < context_frames  # (T,)
        channels = [latents.transpose(1, 2)]  # (B, C, T, h, w)
        channels.append(
            is_context.to(latents.dtype)[None, None, :, None, None].expand(b, 1, t, h, w)
        )
        if self.cosmos.concat_padding_mask:  # no padding: what the Cosmos pipeline passes
            channels.append(latents.new_zeros(b, 1, t, h, w))
        return torch.cat(channels, dim=1), is_context

    def _embed_time(self, tokens, sigma, is_context, context, grid):
        """Per-frame timestep embeddings with the action embedding added, per token:
        embedded_timestep (B, L, D) drives AdaLN, temb (B, L, 3 D) is AdaLN-LoRA's shared term."""
        b, (t, hp, wp) = sigma.shape[0], grid
        cond_extra = context.cond_extra
        frame_sigma = frame_noise_levels(sigma, is_context, context.context_sigma)  # (B, T)
        # (B T, 3D), (B T, D)
        temb, emb = self.transformer.time_embed(tokens, frame_sigma.flatten())
        emb = emb.unflatten(0, (b, t))  # (B, T, D)
        if cond_extra is not None:
            emb = emb + cond_extra  # (B, T, D)
        temb, emb = (e.reshape(b, t, 1, 1, -1).expand(-1, -1, hp, wp, -1) for e in (temb, emb))
        return temb.flatten(1, 3), emb.flatten(1, 3)  # (B, L, 3D), (B, L, D)

    def forward(
        self, latents: torch.Tensor, sigma: torch.Tensor, context: DiTContext, context_frames: int
    ) -> torch.Tensor:
        """latents (B, T, C, h, w), first ``context_frames`` clean; sigma (B,) noise level of the
        rest, in [0, 1] -> velocity (B, T, C, h, w)."""
        tr = self.transformer
        b, t, c, h, w = latents.shape
        p = self.config.patch_size
        grid = (t, h // p, w // p)
        # 1. mask channels, positional embeddings, patchify
        x, is_context = self._inputs(latents, context_frames)  # (B, C', T, h, w)
        rope = tr.rope(x)  # (L, head_dim) cos, sin
        tokens = tr.patch_embed(x).flatten(1, 3)  # (B, L, D)
        if tr.learnable_pos_embed is not None:
            tokens = tokens + tr.learnable_pos_embed(x)  # (B, L, D)
        # 2. timestep embedding (+ the action embedding) that drives every AdaLN
        temb, emb = self._embed_time(tokens, sigma, is_context, context, grid)
        # 3. blocks, each with DexAC's local refinement
        for i, block in enumerate(tr.transformer_blocks):
            args = (
                block,
                self.action_layers[i] if self.action_layers is not None else None,
                tokens,
                emb,
                temb,
                rope,
                context.semantic_kv[i] if context.semantic_kv is not None else None,
                context.action_kv[i] if context.action_kv is not None else None,
            )
            if self.cosmos.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(cosmos_block, *args, use_reentrant=False)
            else:
                tokens = cosmos_block(*args)  # (B, L, D)
        # 4. output AdaLN, projection, unpatchify: (B, L, p p C) -> (B, T, C, h, w)
        # Cosmos lays out each token's output as (p_h, p_w, p_t = 1, C)
        x = tr.proj_out(tr.norm_out(tokens, emb, temb))  # (B, L, p p C)
        x = x.unflatten(2, (p, p, c)).unflatten(1, grid)  # (B, T, h/p, w/p, p, p, C)
        return x.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, t, c, h, w)
