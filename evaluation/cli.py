"""``dexac evaluate``: world-model checkpoints scored the way the paper scores them.

    dexac evaluate --checkpoint dexac_env/assets/dexac_default.safetensors \
        --checkpoint runs/wm_tiny_mlp_global/model.safetensors --store data/sim.zarr \
        --split test --frames 16 --out benchmarks/results/eval_16.json

writes ``eval_16.json`` (every figure, with the command), ``eval_16.md`` (the paper's Table 3/4
layout + the action-sensitivity table), ``eval_16_curves.png`` (PSNR and per-family PCK@10 per
predicted frame) and ``eval_16_strip.png`` (imagined vs true frames with detected keypoints).
``--analysis`` adds the AdaLN action-embedding heatmap and the action-token PCA/t-SNE figures.

This module is the glue that reads stores (dexac_env); the scoring itself (evaluation.report)
sees plain arrays. The ``dexac`` command finds it through the ``dexac.commands`` entry point.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np

DEFAULT_DETECTOR = str(Path(__file__).parent / "assets" / "detector_tiny.safetensors")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score world-model checkpoints (PCK per family, "
        "PSNR/SSIM, *_sim distribution metrics, action sensitivity)",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="a world-model .safetensors file (repeat to compare)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=None,
        help="row name per checkpoint (default: the model's conditioning variant)",
    )
    p.add_argument(
        "--precision",
        action="append",
        default=None,
        choices=("fp32", "bf16"),
        help="inference precision per checkpoint, one for all or one per --checkpoint "
        "(default fp32); bf16 autocasts the sampler and decoder (WorldModel.set_inference). "
        "The same file twice with fp32 and bf16 scores bf16 against fp32 in one table",
    )
    p.add_argument("--store", default="data/sim.zarr", help="episode store with keypoints")
    p.add_argument("--split", default="test")
    p.add_argument("--frames", type=int, default=16, help="predicted frames per episode")
    p.add_argument("--limit", type=int, default=None, help="score the first N episodes")
    p.add_argument("--num-steps", type=int, default=None, help="sampler steps (default: model's)")
    p.add_argument(
        "--frames-per-call",
        type=int,
        default=None,
        help="predicted frames kept per sampler call (default: a whole chunk; "
        "1 = the env's default 1-frame step)",
    )
    p.add_argument(
        "--env-step",
        action="store_true",
        help="drive the model as DexACWorld-v0's default step does: one frame per sampler "
        "call, each call seeing only its own target pose (held for the rest of the chunk)",
    )
    p.add_argument(
        "--cfg-scale",
        type=float,
        default=None,
        help="classifier-free guidance on actions (default: the model's; > 1 needs a model "
        "trained with action dropout)",
    )
    p.add_argument(
        "--context-noise",
        type=float,
        default=None,
        help="noise level the context latents are given at (default: the model's "
        "sampler.context_noise; for models trained with context-noise augmentation)",
    )
    p.add_argument(
        "--start-sigma",
        type=float,
        default=None,
        help="noise level each chunk's sampling starts at from the last context frame "
        "(default: the model's sampler.start_sigma, 1 = from pure noise)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        help="keypoint detector file (python -m training.train_detector)",
    )
    p.add_argument(
        "--out",
        default="benchmarks/results/evaluate.json",
        help="JSON path; .md and .png files are written next to it",
    )
    p.add_argument(
        "--analysis",
        action="store_true",
        help="also draw the AdaLN action-embedding heatmap and action-token PCA/t-SNE",
    )
    p.add_argument(
        "--merge",
        default=None,
        metavar="PREVIOUS.json",
        help="rows of an earlier dexac evaluate run on the same store, split, frames, limit, "
        "seed, sampler steps and detector come first in the tables and figures (not re-run)",
    )
    p.set_defaults(func=run_evaluate)


def episode_points(episode) -> tuple[np.ndarray, np.ndarray]:
    """A stored episode's labelled points, keypoints then landmarks (when it has them):
    uv (T, K, 2) pixels and visible (T, K) bool -- the point order every detector uses."""
    uv, visible = [episode.read("keypoints_2d")], [episode.read("keypoints_visible")]
    if "landmarks_2d" in episode.keys():
        uv.append(episode.read("landmarks_2d"))
        visible.append(episode.read("landmarks_visible"))
    return np.concatenate(uv, 1), np.concatenate(visible, 1)


def load_episodes(store, split: str, min_frames: int, num_points: int):
    """EpisodeArrays of a split with at least ``min_frames`` frames: keypoints, then landmarks,
    fitted to the detector's ``num_points`` (points a store lacks, e.g. the head landmarks of an
    EgoDex import, are marked not visible: their family is reported as n/a, never as 0)."""
    from evaluation.rollouts import EpisodeArrays  # noqa: PLC0415

    episodes = []
    for episode in store.episodes(split):
        if episode.length < min_frames:
            continue
        uv, visible = _fit_points(*episode_points(episode), num_points)
        episodes.append(
            EpisodeArrays(
                episode.name,
                episode.read("rgb"),
                episode.read("action").astype(np.float64),
                uv,
                visible,
                episode.task_text,
            )
        )
    return episodes


def _fit_points(uv: np.ndarray, visible: np.ndarray, num_points: int):
    """Truncate, or pad with never-visible points, to ``num_points`` points."""
    missing = num_points - uv.shape[1]
    if missing <= 0:
        return uv[:, :num_points], visible[:, :num_points]
    return (
        np.concatenate([uv, np.zeros((len(uv), missing, 2), uv.dtype)], 1),
        np.concatenate([visible, np.zeros((len(visible), missing), bool)], 1),
    )


def action_variants(episodes, context: int, frames: int):
    """``variants_of(episode, index)``: true, frozen and another episode's re-anchored motion."""
    from dexac_env.actions import reanchor_motion  # noqa: PLC0415
    from evaluation.rollouts import action_rows  # noqa: PLC0415

    def variants_of(episode, index: int) -> dict[str, np.ndarray]:
        true = action_rows(episode.actions, context, frames)
        donor = episodes[(index + 1) % len(episodes)]
        motion = action_rows(donor.actions, context, frames)
        return {
            "true": true,
            "frozen": np.repeat(true[:1], len(true), axis=0),
            "other": reanchor_motion(motion, true[0]).astype(np.float64),
        }

    return variants_of


def _check_args(args: argparse.Namespace) -> None:
    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.label is not None and len(args.label) != len(args.checkpoint):
        raise ValueError(
            f"give one --label per --checkpoint ({len(args.checkpoint)}), got {len(args.label)}"
        )
    precision = getattr(args, "precision", None)
    if precision is not None and len(precision) not in (1, len(args.checkpoint)):
        raise ValueError(
            f"give one --precision for all checkpoints or one per --checkpoint "
            f"({len(args.checkpoint)}), got {len(precision)}"
        )
    for path in [*args.checkpoint, args.detector]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")


def _shown(value) -> str:
    """A path inside the working directory is recorded relative to it (portable commands)."""
    text = str(value)
    if Path(text).is_absolute() and Path(text).resolve().is_relative_to(Path.cwd().resolve()):
        return str(Path(text).resolve().relative_to(Path.cwd().resolve()))
    return text


def command_line(args: argparse.Namespace) -> str:
    """The ``dexac evaluate`` command that reproduces this run (recorded with its figures)."""
    parts = ["dexac", "evaluate"]
    for i, path in enumerate(args.checkpoint):
        parts += ["--checkpoint", path] + (["--label", args.label[i]] if args.label else [])
    for precision in getattr(args, "precision", None) or []:
        parts += ["--precision", precision]
    for flag in (
        "store",
        "split",
        "frames",
        "limit",
        "num_steps",
        "frames_per_call",
        "cfg_scale",
        "context_noise",
        "start_sigma",
        "seed",
        "detector",
        "out",
        "merge",
    ):
        value = getattr(args, flag, None)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", _shown(value)]
    flags = [f for f in ("env_step", "analysis") if getattr(args, f, False)]
    return shlex.join(parts + [f"--{f.replace('_', '-')}" for f in flags])


def run_evaluate(args: argparse.Namespace) -> int:
    from dexac_env.replay.store import EpisodeStore  # noqa: PLC0415
    from evaluation.detector import KeypointDetector  # noqa: PLC0415
    from evaluation.report import evaluate_checkpoint  # noqa: PLC0415
    from world_model import WorldModel  # noqa: PLC0415

    _check_args(args)
    # how the rows are scored: what a --merge report must share (checked before minutes of
    # rollouts, and again by _merge on the finished report)
    scored = {"store": args.store, "split": args.split, "frames": args.frames,
              "detector": args.detector, "settings": _settings(args)}
    if args.merge:
        _check_merge(scored, args)
    store = EpisodeStore.open(args.store)
    detector = KeypointDetector.load(args.detector)
    results, models = [], []
    for i, path in enumerate(args.checkpoint):
        model = with_sampler(WorldModel.from_pretrained(path).eval(), args)
        model.set_inference(precision_of(args, i))
        context = model.config.context_frames
        episodes = load_episodes(
            store, args.split, context + args.frames, detector.config.num_points
        )[: args.limit]
        if not episodes:
            raise ValueError(
                f"no episode of split {args.split!r} in {args.store} has "
                f"{context + args.frames} frames; generate longer ones "
                f"(dexac sim generate --frames N)"
            )
        label = args.label[i] if args.label else model.config.conditioning.variant
        result = evaluate_checkpoint(
            model,
            episodes,
            action_variants(episodes, context, args.frames),
            detector,
            args.frames,
            args.seed,
            rollout_options(args),
            label=label,
        )
        results.append(
            {"label": label, "checkpoint": path, "precision": model.precision, **result}
        )
        models.append((label, model, episodes))
    report = {
        "command": command_line(args),
        **scored,
        "detector_ceiling": detector.info.get("ceiling"),
        "results": results,
    }
    if args.merge:
        report, models = _merge(report, models, args)
    write_outputs(report, models, detector, args)
    return 0


def precision_of(args: argparse.Namespace, index: int) -> str:
    """The ``--precision`` of the ``index``-th checkpoint: its own, the one given for all, or
    fp32 when none is given."""
    precision = getattr(args, "precision", None)
    if not precision:
        return "fp32"
    return precision[index] if len(precision) > 1 else precision[0]


def rollout_options(args: argparse.Namespace):
    """``--num-steps``, ``--frames-per-call`` and ``--env-step`` as RolloutOptions."""
    from evaluation.rollouts import RolloutOptions  # noqa: PLC0415

    cfg_scale = getattr(args, "cfg_scale", None)
    if args.env_step:
        return RolloutOptions(args.num_steps, 1, hold_future=True, cfg_scale=cfg_scale)
    return RolloutOptions(args.num_steps, args.frames_per_call, cfg_scale=cfg_scale)


def with_sampler(model, args: argparse.Namespace):
    """``--context-noise`` and ``--start-sigma`` set on the model's sampler config (the model
    is returned)."""
    for name in ("context_noise", "start_sigma"):
        value = getattr(args, name, None)
        if value is not None:
            model.config = model.config.replace(sampler={name: value})
    return model


def _settings(args: argparse.Namespace) -> dict:
    keys = (
        "limit",
        "seed",
        "num_steps",
        "frames_per_call",
        "env_step",
        "cfg_scale",
        "context_noise",
        "start_sigma",
    )
    return {k: getattr(args, k, None) for k in keys}


def _unset_dropped(value):
    """Settings compare equal whether an unset option is recorded (None/False) or absent."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v not in (None, False)}
    return value


def _comparable(key: str, value):
    """A setting as merging compares it: file paths by where they point (a run given
    ``evaluation/assets/x`` and one given its absolute path scored the same way)."""
    if key in ("store", "detector") and isinstance(value, str):
        return str(Path(value).resolve())
    return _unset_dropped(value)


def _check_merge(report: dict, args: argparse.Namespace) -> dict:
    """The ``--merge`` report, after checking it was scored as ``report`` (its settings; rows
    not needed) will be: called before the evaluation, so a mismatch costs no minutes."""
    previous = json.loads(Path(args.merge).read_text())
    for key in ("store", "split", "frames", "detector", "settings"):
        if _comparable(key, previous.get(key)) != _comparable(key, report[key]):
            raise ValueError(
                f"--merge {args.merge}: {key} is {previous.get(key)!r} there and {report[key]!r} "
                "here; merge only runs scored the same way"
            )
    return previous


def _merge(report: dict, models: list, args: argparse.Namespace):
    """Put a previous report's rows (and its models, reloaded for the figures) first."""
    from world_model import WorldModel  # noqa: PLC0415

    previous = _check_merge(report, args)
    episodes = models[0][2]
    earlier = [
        (r["label"], WorldModel.from_pretrained(r["checkpoint"]).eval(), episodes)
        for r in previous["results"]
    ]
    merged = {
        **report,
        "results": previous["results"] + report["results"],
        "merged_commands": [previous["command"], *previous.get("merged_commands", [])],
    }
    return merged, earlier + models


def write_outputs(report: dict, models, detector, args: argparse.Namespace) -> None:
    from evaluation.figures import plot_curves  # noqa: PLC0415
    from evaluation.tables import markdown_report  # noqa: PLC0415

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    out.write_text(json.dumps(report, indent=1))
    markdown = markdown_report(report)
    Path(f"{stem}.md").write_text(markdown)
    plot_curves(report["results"], f"{stem}_curves.png")
    write_strip(models, detector, args, f"{stem}_strip.png")
    if args.analysis:
        from evaluation.analysis import write_analysis  # noqa: PLC0415

        write_analysis([(label, model) for label, model, _ in models], models[0][2], str(stem))
    print(markdown)
    print(f"wrote {out}, {stem}.md, {stem}_curves.png, {stem}_strip.png")


def write_strip(models, detector, args: argparse.Namespace, path: str) -> None:
    """Rows: the true frames, then each checkpoint's imagined frames (true actions) and the
    first checkpoint's frozen-action frames, for the first episode; detections drawn."""
    from evaluation.figures import plot_strip  # noqa: PLC0415
    from evaluation.rollouts import imagine  # noqa: PLC0415

    label, model, episodes = models[0]
    episode, context = episodes[0], model.config.context_frames
    variants = action_variants(episodes, context, args.frames)(episode, 0)
    truth = episode.rgb[context : context + args.frames]
    rows = [("true", truth, detector.detect(truth))]
    for i, (name, m, _) in enumerate(models):
        wanted = {k: variants[k] for k in (("true", "frozen") if i == 0 else ("true",))}
        frames = imagine(m, episode, wanted, args.frames, args.seed, rollout_options(args))
        rows += [(f"{name} ({k})", f, detector.detect(f)) for k, f in frames.items()]
    plot_strip(rows, detector.config.point_families, path)
