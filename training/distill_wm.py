"""Distil a world model's sampler to fewer steps (progressive distillation, one halving).

    python training/distill_wm.py --config configs/wm/distill_1step.yaml
    python training/export.py runs/distill_1step --compact --output wm_1step.safetensors

The student is the teacher's network with ``sampler.num_steps = student_steps``, initialised
with the teacher's weights and trained on the teacher's own training windows to take in one
Euler step what the teacher takes in two (world_model/distill.py says why this method). Same
trainer as every other model: resumable with ``--resume``, DeepSpeed with a config, JSONL
metrics. At the end rank 0 exports ``<out_dir>/model.safetensors``; score it against the
teacher with ``dexac evaluate --checkpoint TEACHER --num-steps 2`` next to
``--checkpoint STUDENT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # script form (deepspeed needs it): see training/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from training.components import engine_overrides, entry_parser, run_main
from training.config import ConfigError, DistillRunConfig, load_config
from training.train_wm import fit_and_export, open_windows, world_model_run_config
from training.trainer import Trainer


def build_student(teacher, student_steps: int):
    """A new WorldModel with the config (but ``student_steps`` sampler steps) and weights of
    ``teacher`` (or of the model it should start from); its perception parts stay frozen as in
    world-model training."""
    from world_model import WorldModel  # noqa: PLC0415

    config = teacher.config.replace(sampler={"num_steps": student_steps})
    student = WorldModel(config, teacher.action_mean, teacher.action_std)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"teacher tensors the student does not have: {unexpected[:5]}")
    # a compact (inference-only) teacher lacks the ssl-vit training heads: unused here
    for part in (student.tokenizer, student.semantic_encoder):
        if part is not None:
            part.requires_grad_(False)
    return student


def main(argv: list[str] | None = None) -> int:
    from world_model import WorldModel  # noqa: PLC0415
    from world_model.distill import StepDistillation  # noqa: PLC0415

    args = entry_parser(__doc__.splitlines()[0], "configs/wm/distill_1step.yaml").parse_args(argv)
    config = load_config(DistillRunConfig, args.config, engine_overrides(args))
    for name, path in (("teacher", config.teacher), ("student_init", config.student_init)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{name} {path} does not exist")
    torch.manual_seed(config.trainer.seed)
    teacher = WorldModel.from_pretrained(config.teacher)
    start = WorldModel.from_pretrained(config.student_init) if config.student_init else teacher
    student = build_student(start, config.student_steps)
    trainer = Trainer(
        student,
        open_windows(config.data, student.config),
        config.trainer,
        world_model_run_config(config, student.config, teacher.action_mean, teacher.action_std),
        loss_fn=StepDistillation(teacher, config.student_steps),
    )
    fit_and_export(trainer, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
