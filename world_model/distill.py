"""Few-step sampling by progressive distillation of the Euler sampler.

Progressive distillation (Salimans & Ho, 2022) halves a sampler's step count: a student,
initialised as the teacher, learns to cover in one Euler step what the teacher covers in two.
We picked it over reflow (which must first sample a whole synthetic data set with the teacher),
consistency distillation (an extra target network and a metric) and shortcut models (a step-
size input, so a new architecture) because it needs nothing but the teacher and the training
windows the world model already trains on, changes no network, and each halving is checked with
``dexac evaluate --num-steps`` like any other sampler setting (docs/experiments.md E5).

The schedule is the sampler's (``FlowSampler``: sigmas uniform before the time shift, ending at
0). For a student of ``n`` steps, its step ``i`` goes from ``s[2i]`` to ``s[2i + 2]`` of the
teacher's ``2n``-step grid ``s``; the teacher takes the two Euler steps through ``s[2i + 1]``
from the training window's latents noised to ``s[2i]``, and the student's velocity is regressed
on the one straight step that lands where the teacher landed.
"""

from __future__ import annotations

import torch

from world_model.flow import FlowMatching, shift_sigma


def euler_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """(steps + 1,) the sampler's noise levels from 1 to 0 (FlowSampler's schedule)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


class StepDistillation:
    """``(student, batch) -> (loss, logs)`` for the trainer (``Trainer(loss_fn=...)``).

    teacher: the frozen WorldModel whose ``2 * student_steps``-step Euler sampler is matched.
    student_steps: the student's sampler steps.
    """

    def __init__(self, teacher, student_steps: int) -> None:
        if student_steps < 1:
            raise ValueError(f"student_steps must be >= 1, got {student_steps}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.student_steps = student_steps
        self.grid = euler_grid(2 * student_steps, teacher.config.sampler.shift)  # (2n + 1,)

    def __call__(self, student, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        if self.teacher.device != student.device:  # the trainer moved only the student
            self.teacher.to(student.device)
        target = batch["target_latents"].to(student.device, torch.float32)  # (B, F, C, h, w)
        b = target.shape[0]
        # 1. where each window's student step starts, and the teacher's two steps from there
        index = torch.randint(self.student_steps, (b,), device=student.device)  # (B,)
        grid = self.grid.to(student.device)
        start, middle, end = grid[2 * index], grid[2 * index + 1], grid[2 * index + 2]  # (B,)
        noisy = FlowMatching.add_noise(target, torch.randn_like(target), start)
        context = batch["context_latents"].to(student.device, torch.float32)
        # the same context noise for teacher and student (none for the shipped default)
        context, context_sigma = student.sampler_context(context, lambda: torch.randn_like(context))
        with torch.no_grad():
            teacher_velocity = self.teacher.conditional_velocity(batch, context, context_sigma)
            halfway = noisy + _per_sample(middle - start) * teacher_velocity(noisy, start)
            landed = halfway + _per_sample(end - middle) * teacher_velocity(halfway, middle)
        # 2. the one straight student step that lands there
        wanted = (noisy - landed) / _per_sample(start - end)  # (B, F, C, h, w)
        velocity = student.conditional_velocity(batch, context, context_sigma)(noisy, start)
        loss = (velocity - wanted).pow(2).flatten(1).mean(1).mean()
        return loss, {
            "loss": float(loss.detach()),
            "distill_loss": float(loss.detach()),
            "sigma_mean": float(start.mean()),
        }


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1, 1, 1, 1)
