"""``dexac sim generate`` and ``dexac sim video``. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

TASKS = ("touch", "push", "lift", "sweep", "bimanual")  # = tasks.TASK_NAMES (checked in tests)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sim`` command group to the top-level ``dexac`` parser."""
    sim = subparsers.add_parser("sim", help="the MuJoCo two-hand simulator (DexACSim-v0)")
    commands = sim.add_subparsers(dest="sim_command", required=True)

    gen = commands.add_parser("generate", help="generate a synthetic episode store")
    gen.add_argument("--task", default="all", help=f"'all' or a comma-separated subset of {TASKS}")
    gen.add_argument("--episodes", type=int, default=300, help="total episodes (tasks round-robin)")
    gen.add_argument("--out", required=True, help="episode store path, e.g. data/sim.zarr")
    gen.add_argument("--resolution", type=int, default=64, help="square frame size (px)")
    gen.add_argument("--fps", type=int, default=10, help="frames per second")
    gen.add_argument("--frames", type=int, default=32, help="frames per episode")
    gen.add_argument("--workers", type=int, default=2, help="rendering processes")
    gen.add_argument("--seed", type=int, default=0, help="data set seed")
    gen.add_argument(
        "--play-fraction", type=float, default=0.15, help="share of random-play episodes"
    )
    gen.add_argument(
        "--one-hand-play", type=float, default=0.0,
        help="share of the play episodes in which one hand (left or right at random) holds its "
        "resting pose while the other plays",
    )
    gen.add_argument(
        "--hover-fraction", type=float, default=0.0,
        help="share of the touch tasks' expert episodes in which the named hand hovers around "
        "the named object, as a planner's samples do (HoverPolicy)",
    )
    gen.add_argument("--val-fraction", type=float, default=0.1, help="share of val episodes")
    gen.add_argument(
        "--test-fraction", type=float, default=0.1,
        help="share of test episodes (held-out colours); e.g. 0.9 for a long-horizon test store",
    )
    gen.add_argument(
        "--train-colors", default="train", choices=("train", "hues"),
        help="train/val object colours: the six fixed training colours, or 'hues' (each object "
        "a random shade of its colour name, held-out hues excluded); test episodes always use "
        "the held-out colours",
    )
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(func=run_generate)

    video = commands.add_parser("video", help="render an episode of a task to a video")
    video.add_argument("--task", default="push", choices=TASKS)
    video.add_argument("--out", required=True, help="output file (.mp4 or .gif; .png = a still)")
    video.add_argument("--seed", type=int, default=0)
    video.add_argument("--frames", type=int, default=32)
    video.add_argument("--resolution", type=int, default=256)
    video.add_argument("--fps", type=int, default=10)
    video.add_argument("--policy", default="expert", choices=("expert", "play"))
    video.add_argument("--keypoints", action="store_true", help="draw the projected keypoints")
    video.set_defaults(func=run_video)


def _tasks(value: str) -> tuple[str, ...]:
    tasks = TASKS if value == "all" else tuple(t.strip() for t in value.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(  # dexac's main turns it into one line and exit code 2
            f"unknown task(s) {unknown or value!r}; choose 'all' or from {TASKS}"
        )
    return tasks


def run_generate(args: argparse.Namespace) -> int:
    from dexac_env.sim.generate import GenerateConfig, generate

    # every GenerateConfig field but ``tasks`` (from --task) has the flag of the same name
    given = {f.name: getattr(args, f.name) for f in fields(GenerateConfig) if f.name != "tasks"}
    config = GenerateConfig(tasks=_tasks(args.task), **given)
    summary = generate(config, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def run_video(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dexac_env.sim.video import rollout_frames
    from dexac_env.video import write_video

    frames, info = rollout_frames(
        args.task,
        seed=args.seed,
        frames=args.frames,
        resolution=args.resolution,
        fps=args.fps,
        policy=args.policy,
        keypoints=args.keypoints,
    )
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        import imageio.v2 as imageio

        out.parent.mkdir(parents=True, exist_ok=True)
        imageio.imwrite(out, frames[len(frames) * 2 // 3])
    else:
        write_video(out, frames, args.fps)
    print(
        f"{out}: {len(frames)} frames, task {args.task!r}: {info['task_description']}"
        f" success={info['success']}"
    )
    return 0
