"""Rectified flow (flow matching) objective; no network inside, no sampler.

Convention (the one diffusers' flow-matching schedulers use): a noise level sigma in [0, 1]
mixes clean latents x0 and Gaussian noise e as ``x_sigma = (1 - sigma) x0 + sigma e``
(sigma = 1 is pure noise); the network predicts the velocity ``v = e - x0``, so one Euler step
``x <- x + (sigma_next - sigma) v`` moves toward the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from world_model.json_config import JSONConfig

TIMESTEP_SAMPLING = ("logit_normal", "shifted", "uniform")


@dataclass(frozen=True)
class FlowConfig(JSONConfig):
    """Training noise levels.

    Attributes:
        timestep_sampling: "logit_normal" (sigma = sigmoid(N(logit_mean, logit_std)), as SD3 and
            Cosmos), "shifted" (uniform u, then the resolution shift), or "uniform".
        logit_mean, logit_std: parameters of the logit-normal.
        shift: sigma -> shift sigma / (1 + (shift - 1) sigma), applied after sampling (1 = off);
            larger values spend more training on high noise.
        context_noise_max: context-noise augmentation (GameNGen, DIAMOND): in training each
            window's context latents are noised to a level drawn uniformly from
            [0, context_noise_max], and the model is told that level, so that at rollout time
            it can be given its own (imperfect) frames at a small level
            (``SamplerConfig.context_noise``) instead of trusting them as clean. 0 = off.
        hard_cell_weight, hard_cell_fraction: adds ``hard_cell_weight`` times the mean velocity
            error of each target's worst ``hard_cell_fraction`` of latent cells (a cell: one
            frame's one spatial position, its channels averaged). A 2-3 cm object is one or two
            of the 64 cells of an 8 x 8 latent, so the plain mean lets the network spend little
            on it and draw it as a fading mean (docs/experiments.md E20); this is the
            tokenizer's worst-pixel term (``VideoTokenizer.loss``) on the flow's error.
            0 = off.
    """

    timestep_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    context_noise_max: float = 0.0
    hard_cell_weight: float = 0.0
    hard_cell_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(
                f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {self.timestep_sampling!r}"
            )
        if self.shift <= 0 or self.logit_std <= 0:
            raise ValueError(f"shift and logit_std must be > 0, got {self.shift}, {self.logit_std}")
        if not 0 <= self.context_noise_max < 1:
            raise ValueError(f"context_noise_max must be in [0, 1), got {self.context_noise_max}")
        if self.hard_cell_weight < 0 or not 0 < self.hard_cell_fraction <= 1:
            raise ValueError(f"hard_cell_weight must be >= 0 and hard_cell_fraction in (0, 1], "
                             f"got {self.hard_cell_weight}, {self.hard_cell_fraction}")


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The SD3 / Cosmos time shift; identity for shift = 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


class FlowMatching:
    """Samples noise levels, builds noisy latents, scores velocities."""

    def __init__(self, config: FlowConfig) -> None:
        self.config = config

    def sample_sigma(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ):
        """(B,) noise levels in (0, 1)."""
        cfg = self.config
        if cfg.timestep_sampling == "logit_normal":
            normal = torch.randn(batch, device=device, generator=generator)
            sigma = torch.sigmoid(cfg.logit_mean + cfg.logit_std * normal)
        else:
            sigma = torch.rand(batch, device=device, generator=generator)
        return shift_sigma(sigma, cfg.shift)

    @staticmethod
    def add_noise(clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """clean, noise (B, ...); sigma (B,) -> x_sigma (B, ...)."""
        s = sigma.reshape(-1, *([1] * (clean.ndim - 1)))
        return (1 - s) * clean + s * noise

    def loss(
        self,
        velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        clean: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean squared velocity error on ``clean`` (B, ...) targets, plus the hard-cell term
        when ``hard_cell_weight`` > 0 (``clean`` then (B, T, C, h, w): cells are (T, h, w)).

        ``velocity_fn(noisy (B, ...), sigma (B,)) -> (B, ...)`` wraps the network and whatever
        conditioning it needs. Returns (loss, logs).
        """
        sigma = self.sample_sigma(clean.shape[0], clean.device, generator)  # (B,)
        noise = torch.randn(
            clean.shape, device=clean.device, generator=generator, dtype=clean.dtype
        )
        noisy = self.add_noise(clean, noise, sigma)  # (B, ...)
        target = noise - clean  # (B, ...)
        squared = (velocity_fn(noisy, sigma) - target).pow(2)  # (B, ...)
        loss = squared.flatten(1).mean(1).mean()
        logs = {"flow_loss": float(loss.detach()), "sigma_mean": float(sigma.mean())}
        if self.config.hard_cell_weight > 0:
            if squared.ndim != 5:
                raise ValueError(f"the hard-cell term needs (B, T, C, h, w) targets, got "
                                 f"{tuple(squared.shape)}")
            cells = squared.mean(2).flatten(1)  # (B, T h w)
            k = max(1, round(self.config.hard_cell_fraction * cells.shape[1]))
            hard = cells.topk(k, dim=1).values.mean()
            loss = loss + self.config.hard_cell_weight * hard
            logs["hard_cell_loss"] = float(hard.detach())
        return loss, logs
