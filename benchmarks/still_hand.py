"""Does the imagined hand that the actions hold still stay still while the other one moves?

E17/E18's MPC videos show the imagined non-task hand reaching forward beside the task hand
while the simulator's, given the same commands, stays at rest. ``dexac evaluate`` pools both
hands in its wrist and finger families, so a model that moves the wrong hand loses little
there. This script scores the two hands apart, on the test episodes of a store in which one
hand holds its resting pose:

- an episode's **still hand** is its ``still_hand`` attribute (one-hand play:
  ``dexac sim generate --one-hand-play``), else the hand whose true 3-D keypoints move less
  than ``--still-cm`` over the scored frames while the other moves more than ``--moving-cm``
  (the task experts of touch, push, sweep and lift idle the hand they do not use); other
  episodes are skipped;
- the model imagines the episode from its context frames driven as ``DexACWorld-v0``'s
  default 1-frame step drives it (``dexac evaluate --env-step``), with the episode's true
  poses, and with the poses frozen at the last context frame (the ``frozen`` row: what the
  model draws when nothing is commanded to move);
- the shipped keypoint detector finds the 12 hand keypoints on every imagined frame; PCK@5
  and PCK@10 (of the image side, as ``dexac evaluate``) are pooled over the wrist and five
  fingertips of each hand: ``still`` and ``moving``. A model that moves the still hand loses
  ``still`` PCK, one that ignores the moving hand's actions loses ``moving`` PCK.

Intervals: mean over episodes, 95% Student-t (``evaluation.scoring.mean_ci``).

    python benchmarks/still_hand.py --checkpoint dexac_env/assets/dexac_default.safetensors \\
        --store data/sim.zarr --out benchmarks/results/still_hand_default.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

HANDS = ("left", "right")
POINTS_PER_HAND = 6  # wrist and five fingertips: dexac_env.actions.KEYPOINT_NAMES' order
THRESHOLDS = {"pck@5": 0.05, "pck@10": 0.10}


def still_hand_of(attrs: dict, keypoints_3d: np.ndarray | None, still_m: float, moving_m: float):
    """"left"/"right" (the hand held still over the scored frames) or None. ``keypoints_3d``
    (F, 12, 3) metres, the scored frames' true keypoints in the episode frame."""
    if attrs.get("still_hand") in HANDS:
        return attrs["still_hand"]
    if keypoints_3d is None:
        return None
    shift = np.linalg.norm(keypoints_3d - keypoints_3d[:1], axis=-1)  # (F, 12)
    moved = [float(shift[:, i * POINTS_PER_HAND : (i + 1) * POINTS_PER_HAND].max()) for i in (0, 1)]
    for still, moving in ((0, 1), (1, 0)):
        if moved[still] < still_m and moved[moving] > moving_m:
            return HANDS[still]
    return None


def hand_pck(correct: dict[str, np.ndarray], still: str) -> dict[str, float]:
    """Per-hand PCK of one episode from per-threshold (F, K) correctness (NaN = not scored)."""
    out = {}
    for name, values in correct.items():
        for role, side in (("still", still), ("moving", HANDS[1 - HANDS.index(still)])):
            i = HANDS.index(side) * POINTS_PER_HAND
            part = values[:, i : i + POINTS_PER_HAND]
            out[f"{role}_{name}"] = float(np.nanmean(part)) if np.isfinite(part).any() else None
    return out


def score_frames(frames_hat: np.ndarray, episode, still: str, detector, context: int) -> dict:
    """One row: the per-hand PCK of frames (F, H, W, 3) against the episode's frames
    ``context .. context + F``."""
    from evaluation.scoring import point_correctness

    target = slice(context, context + len(frames_hat))
    correct = point_correctness(detector.detect(frames_hat), episode.points_uv[target],
                                episode.visible[target], float(episode.rgb.shape[-2]))
    correct = {k: correct[k][:, : 2 * POINTS_PER_HAND] for k in THRESHOLDS}
    return {"episode": episode.name, "still_hand": still, **hand_pck(correct, still)}


def score_model(model, episodes, detector, frames: int, seed: int) -> dict[str, list[dict]]:
    """Per episode and action variant (true, frozen), the per-hand PCK of the imagined frames."""
    from evaluation.rollouts import RolloutOptions, action_rows, imagine

    context = model.config.context_frames
    options = RolloutOptions(frames_per_call=1, hold_future=True)  # the env's 1-frame step
    rows: dict[str, list[dict]] = {"true": [], "frozen": []}
    for episode, still in episodes:
        true = action_rows(episode.actions, context, frames)
        variants = {"true": true, "frozen": np.repeat(true[:1], len(true), axis=0)}
        imagined = imagine(model, episode, variants, frames, seed, options)
        for name, frames_hat in imagined.items():
            rows[name].append(score_frames(frames_hat, episode, still, detector, context))
    return rows


def truth_rows(episodes, detector, context: int, frames: int) -> list[dict]:
    """The detector on the true frames: the ceiling of every row."""
    return [score_frames(episode.rgb[context : context + frames], episode, still, detector, context)
            for episode, still in episodes]


def summarise(rows: list[dict]) -> dict:
    from evaluation.scoring import mean_ci

    keys = [f"{role}_{t}" for role in ("still", "moving") for t in THRESHOLDS]
    return {k: mean_ci([r[k] for r in rows]) for k in keys}


def load_still_episodes(store, split: str, context: int, frames: int, num_points: int, args):
    from evaluation.cli import load_episodes

    episodes = load_episodes(store, split, context + frames, num_points)
    out = []
    for episode in episodes:
        stored = store.episode(episode.name)
        kp3 = stored.read("keypoints_3d") if "keypoints_3d" in stored.keys() else None
        if kp3 is not None:
            kp3 = kp3[context - 1 : context + frames]
        still = still_hand_of(stored.attrs, kp3, args.still_cm / 100, args.moving_cm / 100)
        if still is not None:
            out.append((episode, still))
    return out[: args.limit]


def markdown(report: dict) -> str:
    def cell(s):
        return "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['ci95'] or 0:.3f}"

    lines = [
        f"`{report['command']}`",
        "",
        f"{report['episodes']} episodes of {report['store']} ({report['split']}), "
        f"{report['frames']} imagined frames each, the env's 1-frame step.",
        "",
        "| model | poses | still hand PCK@10 | still PCK@5 | moving hand PCK@10 | moving PCK@5 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["results"]:
        for variant, s in row["summary"].items():
            lines.append(
                f"| {row['label']} | {variant} | {cell(s['still_pck@10'])} | {cell(s['still_pck@5'])} "
                f"| {cell(s['moving_pck@10'])} | {cell(s['moving_pck@5'])} |"
            )
    s = report["true_frames"]
    lines.append(
        f"| (true frames) | | {cell(s['still_pck@10'])} | {cell(s['still_pck@5'])} "
        f"| {cell(s['moving_pck@10'])} | {cell(s['moving_pck@5'])} |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from dexac_env.replay.store import EpisodeStore
    from evaluation.cli import DEFAULT_DETECTOR
    from evaluation.detector import KeypointDetector
    from world_model import WorldModel

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, help="repeat to compare")
    p.add_argument("--label", action="append", help="row name per checkpoint")
    p.add_argument("--store", default="data/sim.zarr")
    p.add_argument("--split", default="test")
    p.add_argument("--frames", type=int, default=16, help="imagined frames per episode")
    p.add_argument("--limit", type=int, default=None, help="score the first N still-hand episodes")
    p.add_argument("--still-cm", type=float, default=2.0, help="most a still hand's keypoints move")
    p.add_argument("--moving-cm", type=float, default=8.0, help="least the other hand moves")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detector", default=DEFAULT_DETECTOR)
    p.add_argument("--out", required=True, help="JSON path; the .md table is written next to it")
    args = p.parse_args(argv)
    if args.label and len(args.label) != len(args.checkpoint):
        p.error("give one --label per --checkpoint, or none")
    if args.frames < 1:
        p.error("--frames must be >= 1")

    store = EpisodeStore.open(args.store)
    detector = KeypointDetector.load(args.detector)
    results, episodes, context = [], None, None
    for i, path in enumerate(args.checkpoint):
        model = WorldModel.from_pretrained(path).eval()
        context = model.config.context_frames
        if episodes is None:
            episodes = load_still_episodes(
                store, args.split, context, args.frames, detector.config.num_points, args
            )
            if not episodes:
                raise SystemExit(
                    f"no {args.split} episode of {args.store} holds one hand still over "
                    f"{args.frames} frames (see --still-cm / --moving-cm)"
                )
            print(f"{len(episodes)} still-hand episodes", flush=True)
        rows = score_model(model, episodes, detector, args.frames, args.seed)
        label = args.label[i] if args.label else Path(path).stem
        results.append({
            "label": label,
            "checkpoint": path,
            "summary": {v: summarise(r) for v, r in rows.items()},
            "episodes": rows,
        })
        print(f"{label}: {json.dumps(results[-1]['summary'])}", flush=True)
    truth = truth_rows(episodes, detector, context, args.frames)
    report = {
        "command": shlex.join(["python", "benchmarks/still_hand.py", *(argv or sys.argv[1:])]),
        "store": args.store,
        "split": args.split,
        "frames": args.frames,
        "episodes": len(episodes),
        "hands_held": {h: sum(s == h for _, s in episodes) for h in HANDS},
        "results": results,
        "true_frames": summarise(truth),
        "true_frames_episodes": truth,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
