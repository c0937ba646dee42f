"""Flow-matching sampler: Euler steps from noise to latents. Holds no network and knows no
conditioning: it is given a velocity function (classifier-free guidance, when on, is inside
that function: ``WorldModel.predict`` builds it).

It drives diffusers' ``FlowMatchEulerDiscreteScheduler`` (same sigma convention as flow.py:
``x_sigma = (1 - sigma) x0 + sigma e``, velocity ``e - x0``), so its time shift and step
spacing are the well-tested ones; the scheduler's timesteps are 1000 sigma.
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
    """

    num_steps: int = 35
    shift: float = 1.0
    cfg_scale: float = 1.0
    context_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if not 0 <= self.context_noise < 1:
            raise ValueError(f"context_noise must be in [0, 1), got {self.context_noise}")


# velocity_fn(noisy (B, ...), sigma (B,)) -> velocity (B, ...)
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FlowSampler:
    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self.scheduler = FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=config.shift
        )

    @torch.no_grad()
    def sample(
        self, velocity_fn: VelocityFn, noise: torch.Tensor, num_steps: int | None = None
    ) -> torch.Tensor:
        """Integrate from ``noise`` (B, ...) at sigma = 1 to sigma = 0. Deterministic."""
        steps = num_steps or self.config.num_steps
        # sigmas 1, (n-1)/n, ..., 1/n (then 0), shifted by the scheduler: diffusers' default
        # linspace ends at sigma_min, which wastes the last network call on a no-op step
        sigmas = np.linspace(1.0, 1.0 / steps, steps).tolist()
        self.scheduler.set_timesteps(sigmas=sigmas, device=noise.device)
        x = noise
        for timestep in self.scheduler.timesteps:
            sigma = (timestep / 1000.0).expand(x.shape[0]).to(x.dtype)  # (B,)
            x = self.scheduler.step(velocity_fn(x, sigma), timestep, x, return_dict=False)[0]
        return x
