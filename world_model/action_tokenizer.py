"""Structured action representation (DexAC part 1): per-dimension normalisation + one token
per action dimension.

The 57-D action layout is restated here rather than imported, because ``world_model`` imports
nothing from the other packages (DESIGN.md): head 0:9, wrists 9:27, fingertips 27:57.

An action chunk is ``(B, 1 + A, 57)`` in raw units (metres, 6D rotation entries): row 0 is the
pose of the last context frame, rows 1..A the target poses of the A predicted frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

ACTION_DIM = 57
FAMILY_NAMES = ("head", "wrist", "finger")
# Family id of every action dimension (index into FAMILY_NAMES), shape (57,).
FAMILY_INDEX = np.array([0] * 9 + [1] * 18 + [2] * 30, dtype=np.int64)
STD_FLOOR = 1e-6  # metres; a dimension that never moves must not divide by zero


def check_action_stats(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate dataset action statistics: two finite float arrays of shape (57,), std > 0."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    for name, value in (("action_mean", mean), ("action_std", std)):
        if value.shape != (ACTION_DIM,):
            raise ValueError(f"{name} must have shape ({ACTION_DIM},), got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must be finite")
    if np.any(std < 0):
        raise ValueError("action_std must be >= 0")
    return mean, np.maximum(std, STD_FLOOR)


class ActionNormalizer(nn.Module):
    """``z = gain * (a - mean) / std`` per dimension, with the data set's statistics.

    The statistics are buffers, so they travel with the weights in a checkpoint.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, gain: float = 1.0) -> None:
        super().__init__()
        mean, std = check_action_stats(mean, std)
        self.gain = float(gain)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., 57) raw action units -> (..., 57) normalised."""
        return self.gain * (actions - self.mean) / self.std

    def inverse(self, normalised: torch.Tensor) -> torch.Tensor:
        """(..., 57) normalised -> (..., 57) raw action units."""
        return normalised / self.gain * self.std + self.mean


class ActionTokenizer(nn.Module):
    """One token per action dimension from that dimension's whole series in the chunk.

    The series of each dimension (its normalised values over the ``1 + A`` rows, and their
    change from row 0, so that small motions are not hidden behind the pose offset) goes
    through a small temporal encoder: one MLP shared by all 57 dimensions (``"shared"``) or
    one per family (``"family"``). A learned dimension embedding and a family embedding are
    added, so the network knows which joint each token describes.

    Args:
        num_rows: 1 + A, the chunk length in action rows.
        token_dim: width C of the action tokens.
        temporal_encoder: "shared" or "family".
    """

    def __init__(self, num_rows: int, token_dim: int, temporal_encoder: str = "shared") -> None:
        super().__init__()
        if temporal_encoder not in ("shared", "family"):
            raise ValueError(
                f"temporal_encoder must be 'shared' or 'family', got {temporal_encoder!r}"
            )
        self.num_rows = num_rows
        self.temporal_encoder = temporal_encoder
        groups = 1 if temporal_encoder == "shared" else len(FAMILY_NAMES)
        in_features = 2 * num_rows
        self.encoders = nn.ModuleList(
            nn.Sequential(
                nn.Linear(in_features, token_dim),
                nn.SiLU(),
                nn.Linear(token_dim, token_dim),
            )
            for _ in range(groups)
        )
        self.dim_embed = nn.Parameter(torch.randn(ACTION_DIM, token_dim) * 0.02)
        self.family_embed = nn.Parameter(torch.randn(len(FAMILY_NAMES), token_dim) * 0.02)
        self.register_buffer("family_index", torch.as_tensor(FAMILY_INDEX), persistent=False)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, normalised_chunk: torch.Tensor) -> torch.Tensor:
        """(B, 1 + A, 57) normalised actions -> (B, 57, C) action tokens."""
        if normalised_chunk.ndim != 3 or normalised_chunk.shape[1:] != (self.num_rows, ACTION_DIM):
            raise ValueError(
                f"action chunk must have shape (B, {self.num_rows}, {ACTION_DIM}), "
                f"got {tuple(normalised_chunk.shape)}"
            )
        # 1. per-dimension series: absolute values and change from the start pose
        series = normalised_chunk.transpose(1, 2)  # (B, 57, 1 + A)
        delta = series - series[:, :, :1]  # (B, 57, 1 + A)
        features = torch.cat([series, delta], dim=-1)  # (B, 57, 2 (1 + A))
        # 2. temporal encoder, shared or one per family
        if len(self.encoders) == 1:
            tokens = self.encoders[0](features)  # (B, 57, C)
        else:
            tokens = features.new_zeros(*features.shape[:2], self.dim_embed.shape[1])
            for family, encoder in enumerate(self.encoders):
                dims = self.family_index == family
                tokens[:, dims] = encoder(features[:, dims])  # (B, N_family, C)
        # 3. which joint, which family
        tokens = tokens + self.dim_embed + self.family_embed[self.family_index]  # (B, 57, C)
        return self.norm(tokens)  # (B, 57, C)
