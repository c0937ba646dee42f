"""Step distillation (world_model/distill.py, training/distill_wm.py): the schedule is the
sampler's, the target is the teacher's two-step landing point, gradients reach only the
student, and a distilled student's one step does what the teacher's two do."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.wm_helpers import fake_semantic, gap_actions, latents, tiny_model, wake
from training.distill_wm import build_student
from world_model.distill import StepDistillation, euler_grid
from world_model.sampler import FlowSampler, SamplerConfig


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (2, 1.0), (4, 3.0)])
def test_grid_is_the_samplers_schedule(steps, shift):
    seen = []

    def velocity(x, sigma):
        seen.append(float(sigma[0]))
        return torch.zeros_like(x)

    FlowSampler(SamplerConfig(num_steps=steps, shift=shift)).sample(velocity, torch.zeros(1, 2))
    assert seen == pytest.approx(euler_grid(steps, shift)[:-1].tolist(), abs=1e-6)
    assert float(euler_grid(steps, shift)[-1]) == 0.0


class LinearField:
    """Stand-in model whose velocity is ``rate * x`` (both Euler paths have closed forms)."""

    def __init__(self, rate):
        self.rate, self.device = rate, torch.device("cpu")
        self.config = SimpleNamespace(sampler=SamplerConfig(num_steps=2))

    def eval(self):
        return self

    def requires_grad_(self, _):
        return self

    def sampler_context(self, context, draw_noise):
        return context, None  # clean context, as the shipped default samples

    def conditional_velocity(self, batch, context, context_sigma):
        return lambda x, sigma: self.rate * x


def test_target_is_the_one_step_that_lands_where_two_teacher_steps_land():
    # one student step from sigma 1 to 0; the teacher steps 1 -> 0.5 -> 0 with v = x:
    # x_end = x (1 - 0.5)^2, so the wanted velocity is (x - x_end) / 1 = 0.75 x
    batch = {
        "target_latents": torch.randn(3, 1, 2, 2, 2),
        "context_latents": torch.randn(3, 2, 2, 2, 2),
    }
    objective = StepDistillation(LinearField(1.0), student_steps=1)
    assert float(objective(LinearField(0.75), batch)[0]) == pytest.approx(0.0, abs=1e-10)
    assert float(objective(LinearField(1.0), batch)[0]) > 1e-3  # the teacher itself is not it


def _batch(model, batch=2):
    cfg = model.config
    features = fake_semantic(model, batch)
    return {
        "context_latents": latents(model, batch, cfg.context_frames),
        "target_latents": latents(model, batch, cfg.chunk_frames, seed=1),
        "actions": gap_actions(batch, cfg.action_rows),
        "semantic_image": features.image,
        "semantic_text": features.text,
    }


def test_gradients_reach_the_student_only_and_distilling_matches_two_teacher_steps():
    teacher = tiny_model(chunk_frames=1)
    wake(teacher)
    student = build_student(teacher, 1)
    assert student.config.sampler.num_steps == 1
    batch = _batch(teacher)
    objective = StepDistillation(teacher, student_steps=1)
    student.train()
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(60):  # fit one batch: the student's 1 step must reach the teacher's 2
        torch.manual_seed(0)  # same noise every step: a fixed regression problem
        loss, logs = objective(student, batch)
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert float(loss.detach()) < 0.2 * first, (first, float(loss.detach()))
    assert logs["distill_loss"] == pytest.approx(logs["loss"])


def test_distill_entry_names_a_missing_teacher_or_student_init():
    from pathlib import Path

    from training.config import ConfigError
    from training.distill_wm import main

    config = str(Path(__file__).resolve().parents[1] / "configs/wm/distill_1step.yaml")
    with pytest.raises(ConfigError, match="student_init nowhere.safetensors does not exist"):
        main(["--config", config, "--set", "student_init=nowhere.safetensors"])
    with pytest.raises(ConfigError, match="teacher nowhere.safetensors"):
        main(["--config", config, "--set", "teacher=nowhere.safetensors"])
