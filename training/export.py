"""Export a world-model training run to the self-contained inference checkpoint.

    python training/export.py runs/wm_tiny                       # -> runs/wm_tiny/model.safetensors
    python training/export.py runs/wm_tiny --tag step_00000200 --output wm.safetensors
    python training/export.py runs/wm_tiny --compact --sampler-steps 2 --output wm.safetensors

Reads ``<run>/run_config.json`` (world-model config and action statistics, written by the
trainer) and the fp32 weights of a training checkpoint -- plain PyTorch or DeepSpeed of any ZeRO
stage, consolidated without starting any ranks -- and writes ``WorldModel.save_pretrained``'s one
safetensors file. A checkpoint whose weights do not fit the run's config raises one ValueError.
Next to it, ``<output>.train.json`` records the run config and summary (how it was made).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # script form (deepspeed needs it): see training/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from training.components import run_main
from training.engine import load_fp32_state_dict, read_latest


def export_world_model(
    run_dir: str | Path,
    output: str | Path | None = None,
    tag: str | None = None,
    compact: bool = False,
    sampler_steps: int | None = None,
    storage: str = "float16",
) -> Path:
    """Write the run's checkpoint ``tag`` (default: the newest) as a WorldModel file.

    ``compact``: inference-only, with ``storage`` "float16" or "int8" (weight matrices as int8
    with per-channel scales: the form shipped in dexac_env/assets, about half the float16 size).
    ``sampler_steps``: the sampler steps the file's users get by default (the weights are
    unchanged; pick it with ``dexac evaluate --num-steps``, as docs/experiments.md E5 did)."""
    from world_model import WorldModel, WorldModelConfig  # noqa: PLC0415
    from world_model.checkpoint import check_state  # noqa: PLC0415

    run_dir = Path(run_dir)
    saved = run_dir / "run_config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir} is not a world-model run (no run_config.json)")
    run_config = json.loads(saved.read_text())
    if "world_model" not in run_config:
        raise ValueError(f"{saved} is not the config of a world-model run")
    model_config = WorldModelConfig.from_dict(run_config["world_model"])
    if sampler_steps is not None:
        model_config = model_config.replace(sampler={"num_steps": sampler_steps})
    checkpoint_dir = run_dir / "checkpoints"
    tag = tag or read_latest(checkpoint_dir)
    if tag is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir}")
    # 1. the model the run trained, built from its saved config
    stats = run_config["action_stats"]
    model = WorldModel(
        model_config,
        np.asarray(stats["mean"]),
        np.asarray(stats["std"]),
    )
    # 2. its consolidated fp32 weights, checked against the config
    state = load_fp32_state_dict(checkpoint_dir, tag)
    check_state(
        model.state_dict(), {k: tuple(v.shape) for k, v in state.items()}, str(checkpoint_dir / tag)
    )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    # 3. the inference file, and how it was made
    output = Path(output) if output is not None else run_dir / "model.safetensors"
    if compact:
        path = Path(model.save_pretrained(str(output), inference_only=True, dtype=storage))
    else:
        path = Path(model.save_pretrained(str(output)))
    summary_path = run_dir / "summary.json"
    record = {
        "checkpoint": str(checkpoint_dir / tag),
        "sampler_steps": model_config.sampler.num_steps,
        "storage": storage if compact else "float32",
        "run_config": run_config["run"],
        "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
    }
    path.with_name(path.name + ".train.json").write_text(json.dumps(record, indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="trainer.out_dir of a train_wm.py run")
    parser.add_argument("--tag", default=None, help="checkpoint tag (default: the newest)")
    parser.add_argument("--output", default=None, help="file (.safetensors) or directory")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="inference-only, float16 weights: about 2.5x smaller (for shipping)",
    )
    parser.add_argument(
        "--storage",
        choices=("float16", "int8"),
        default="float16",
        help="with --compact: int8 stores weight matrices as int8 with per-channel scales "
        "(about half the float16 size; the shipped default)",
    )
    parser.add_argument(
        "--sampler-steps",
        type=int,
        default=None,
        help="default sampler steps of the exported model (default: the run's config)",
    )
    args = parser.parse_args(argv)
    path = export_world_model(
        args.run_dir,
        args.output,
        args.tag,
        compact=args.compact,
        sampler_steps=args.sampler_steps,
        storage=args.storage,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
