"""Flow-matching sampler: Euler steps from noise to latents. Holds no network and knows no
conditioning: it is given a velocity function (classifier-free guidance, when on, is inside
that function: ``WorldModel.predict`` builds it).

The step schedule comes from diffusers' ``FlowMatchEulerDiscreteScheduler`` (same sigma
convention as flow.py: ``x_sigma = (1 - sigma) x0 + sigma e``, velocity ``e - x0``), so its time
shift and step spacing are the well-tested ones; the scheduler's timesteps are 1000 sigma. The
Euler update itself, ``x + (sigma_next - sigma) v``, is the scheduler's ``step`` without its
per-call state: that ``step`` looks its first index up with ``nonzero().item()`` (a host sync)
and counts steps in Python, which stops a sampler call from being captured as one CUDA graph
(world_model/cuda_graphs.py). The schedule is computed once per (steps, device) and reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from world_model.json_config import JSONConfig


@dataclass(frozen=True)
class SamplerConfig(JSONConfig):
    """Sampling settings.

    Attributes:
        num_steps: Euler steps per chunk (the paper's base model: 35; distilled: 4).
        shift: time shift of the step schedule (1 = uniform in sigma).
        cfg_scale: default guidance on actions of ``WorldModel.predict``; 1 = off (one network
            call per step), s > 1 uses ``v_uncond + s (v_cond - v_uncond)`` (needs a model
            trained with action dropout). The sampler itself does not read it.
        context_noise: noise level at which ``WorldModel.predict`` gives the context latents
            to the network (fresh noise each call); 0 = clean. Only meaningful for a model
            trained with ``FlowConfig.context_noise_max`` above it.
        start_sigma: noise level ``WorldModel.predict`` starts each chunk at. 1 = pure noise
            (the default); below 1 the chunk starts from the last context frame noised to
            that level and the steps span [start_sigma, 0] (SDEdit's start, Meng et al. 2022):
            what does not change between frames is carried over instead of redrawn.
    """

    num_steps: int = 35
    shift: float = 1.0
    cfg_scale: float = 1.0
    context_noise: float = 0.0
    start_sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if not 0 <= self.context_noise < 1:
            raise ValueError(f"context_noise must be in [0, 1), got {self.context_noise}")
        if not 0 < self.start_sigma <= 1:
            raise ValueError(f"start_sigma must be in (0, 1], got {self.start_sigma}")


# velocity_fn(noisy (B, ...), sigma (B,)) -> velocity (B, ...)
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FlowSampler:
    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self.scheduler = FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=config.shift
        )
        self._schedules: dict[tuple[int, str, float], tuple[torch.Tensor, torch.Tensor]] = {}

    def schedule(
        self, steps: int, device: torch.device, start: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps (steps,), sigmas (steps + 1,), the last 0) on ``device`` from noise level
        ``start``, cached."""
        key = (int(steps), str(device), float(start))
        if key not in self._schedules:
            # sigmas s, (n-1)s/n, ..., s/n (then 0), shifted by the scheduler: diffusers' default
            # linspace ends at sigma_min, which wastes the last network call on a no-op step
            sigmas = np.linspace(start, start / steps, steps).tolist()
            self.scheduler.set_timesteps(sigmas=sigmas, device=device)
            self._schedules[key] = (self.scheduler.timesteps, self.scheduler.sigmas)
        return self._schedules[key]

    @torch.no_grad()
    def sample(
        self,
        velocity_fn: VelocityFn,
        noise: torch.Tensor,
        num_steps: int | None = None,
        start_sigma: float = 1.0,
    ) -> torch.Tensor:
        """Integrate from ``noise`` (B, ...) at sigma = ``start_sigma`` (a noised sample
        there when below 1) to sigma = 0. Deterministic. ``x`` stays float32 whatever
        precision the velocity comes in (bf16 under autocast)."""
        steps = num_steps or self.config.num_steps
        timesteps, sigmas = self.schedule(steps, noise.device, start_sigma)
        x = noise.float()
        for i in range(steps):
            sigma = (timesteps[i] / 1000.0).expand(x.shape[0]).to(x.dtype)  # (B,)
            x = x + (sigmas[i + 1] - sigmas[i]) * velocity_fn(x, sigma).float()
        return x
