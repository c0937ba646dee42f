"""Building blocks of the DiT: 3D RoPE, attention with QK RMSNorm, timestep embedding, AdaLN."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def zero_init(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (output layers whose first output must be 0)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class RoPE3D(nn.Module):
    """Rotary position embedding over (t, h, w) for tokens laid out frame-major.

    The head dimension is split as in Cosmos: ``dim_h = dim_w = 2 * (head_dim // 6)``, the rest
    goes to time. Tables are cached per grid size and device (they never change in a rollout).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.dim_hw = 2 * (head_dim // 6)
        self.dim_t = head_dim - 2 * self.dim_hw
        if self.dim_t % 2:
            raise ValueError(f"head_dim {head_dim} leaves an odd time share {self.dim_t} for RoPE")
        self.theta = theta
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _angles(self, length: int, dim: int, device: torch.device) -> torch.Tensor:
        freqs = 1.0 / self.theta ** (
            torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim
        )
        return torch.outer(torch.arange(length, device=device, dtype=torch.float64), freqs)

    def tables(
        self, grid: tuple[int, int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (L, head_dim // 2) for a (T, h, w) token grid."""
        key = (grid, str(device))
        if key not in self._cache:
            t, h, w = grid
            angle_t = self._angles(t, self.dim_t, device)[:, None, None].expand(t, h, w, -1)
            angle_h = self._angles(h, self.dim_hw, device)[None, :, None].expand(t, h, w, -1)
            angle_w = self._angles(w, self.dim_hw, device)[None, None, :].expand(t, h, w, -1)
            angles = torch.cat([angle_t, angle_h, angle_w], dim=-1).reshape(t * h * w, -1)
            self._cache[key] = (angles.cos().float(), angles.sin().float())
        return self._cache[key]

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate pairs (x[2i], x[2i+1]) of (B, heads, L, head_dim) by the tabled angles."""
        pairs = x.float().unflatten(-1, (-1, 2))  # (B, H, L, hd/2, 2)
        real, imag = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
        return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    """Multi-head attention with RMS-normalised queries and keys.

    Self-attention when ``context_dim`` is None (rotary positions applied), otherwise
    cross-attention from the latent tokens (queries) to a context sequence (keys/values). The
    output projection is zero-initialised; ``inner_dim`` may be narrower than the width.
    """

    def __init__(
        self, dim: int, heads: int, context_dim: int | None = None, inner_dim: int | None = None
    ):
        super().__init__()
        inner_dim = inner_dim or dim
        if inner_dim % heads:
            raise ValueError(f"attention width {inner_dim} must divide by heads {heads}")
        self.heads = heads
        self.head_dim = inner_dim // heads
        self.is_cross = context_dim is not None
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * inner_dim, bias=False)
        self.norm_q = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.norm_k = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.to_out = zero_init(nn.Linear(inner_dim, dim))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, H, L, hd)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D_ctx) -> normalised keys and values (B, H, S, hd); cacheable per rollout."""
        keys, values = self.to_kv(context).chunk(2, dim=-1)
        return self.norm_k(self._split(keys)), self._split(values)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); ``kv`` from :meth:`keys_values` (cross) or None (self)."""
        queries = self.norm_q(self._split(self.to_q(x)))  # (B, H, L, hd)
        keys, values = kv if kv is not None else self.keys_values(x)  # (B, H, S, hd)
        if rope is not None:
            queries, keys = RoPE3D.rotate(queries, *rope), RoPE3D.rotate(keys, *rope)
        if keys.shape[0] != queries.shape[0]:  # context shared by the whole batch
            keys = keys.expand(queries.shape[0], -1, -1, -1)
            values = values.expand(queries.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(queries, keys, values)  # (B, H, L, hd)
        return self.to_out(out.transpose(1, 2).flatten(2))  # (B, L, D)


class TimestepEmbedder(nn.Module):
    """Noise level sigma in [0, 1] -> (.., D) via a sinusoidal code of 1000 sigma and an MLP."""

    def __init__(self, dim: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device) / half)
        args = 1000.0 * sigma.float()[..., None] * freqs  # (..., half)
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))  # (..., D)


class Modulation(NamedTuple):
    """AdaLN parameters of one sub-layer, each (B, T, 1, D): ``x * (1 + scale) + shift`` before
    it, ``x + (1 + gate) * sublayer(...)`` after it."""

    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor


class AdaLNModulation(nn.Module):
    """Conditioning embedding -> one named :class:`Modulation` per sub-layer of a block.

    Full AdaLN is one Linear(D, 3 S D) for S sub-layers; AdaLN-LoRA (Cosmos) replaces it by a
    rank-``lora_dim`` product plus a term shared by all blocks (``shared``, computed once in the
    DiT). The last layer is zero-initialised, so every block starts as the identity. The output
    is laid out sub-layer by sub-layer in the order of ``sublayers``, each as (shift, scale,
    gate): checkpoints depend on that order.
    """

    def __init__(self, dim: int, sublayers: tuple[str, ...], lora_dim: int | None) -> None:
        super().__init__()
        self.sublayers = sublayers
        out = 3 * len(sublayers) * dim
        if lora_dim:
            self.proj = nn.Sequential(nn.SiLU(), nn.Linear(dim, lora_dim, bias=False))
            self.up = zero_init(nn.Linear(lora_dim, out, bias=False))
        else:
            self.proj = nn.SiLU()
            self.up = zero_init(nn.Linear(dim, out))

    def forward(self, cond: torch.Tensor, shared: torch.Tensor | None) -> dict[str, Modulation]:
        """cond (B, T, D), shared (B, T, 3 D) or None -> {sub-layer name: Modulation}."""
        mod = self.up(self.proj(cond))  # (B, T, 3 S D)
        if shared is not None:
            mod = mod + shared.repeat(1, 1, len(self.sublayers))
        per_sublayer = mod.unsqueeze(2).chunk(len(self.sublayers), dim=-1)  # S x (B, T, 1, 3 D)
        return {
            name: Modulation(*triple.chunk(3, dim=-1))  # 3 x (B, T, 1, D)
            for name, triple in zip(self.sublayers, per_sublayer, strict=True)
        }


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, T, N, D); shift, scale (B, T, 1, D)."""
    return x * (1 + scale) + shift
