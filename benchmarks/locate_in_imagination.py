"""Can the named object be found in the world model's imagined frames, step after step?

``locate_in_reconstruction.py`` measures the tokenizer alone (one frame, encoded and decoded).
MPC that reads imagination also needs the dynamics to keep the object where it is and in its
colour while a hand moves towards it. Here, for held-out seeds of the touch task (held-out
colours), the simulator's scripted expert reaches for the named object; the world model
imagines the same episode open loop from its first frame with the expert's poses; and the
shipped locator looks for the text's colour on

- ``real``: the simulator's frame at step t;
- ``imagined``: the imagined frame at step t (same poses, nothing real after the first frame);
- ``imagined_drawn_colour``: the same frames, the locator asked for the colour the world model
  draws the object in instead of the text's (``agents.contact.drawn_colour``: read on its
  drawing of the first frame, at the place the locator finds on the real first frame), as
  ``dexac agent eval --imagined-colour drawn`` looks for it.

A reference row, ``named_fingertip``: the distance from the fingertip the text names (the
commanded pose) to the object. A locator that answered with the hand's place would score it,
so an imagined error falling with it as the hand arrives is not the object being found.

``--start-step S`` starts imagination at the expert's step S, with the real frames before it as
the context (as MPC starts from the last real frames): with S ~ 10 the hand is already near the
object and the imagined steps are those where it moves over it, where E22's audit found the
planner's ranking lost.

``--hold-pose`` asks whether the objects stay put when nothing moves: the episode becomes its
first frame, pose and object place repeated, so the imagined frames are the model's rollout
with the hand frozen, and any imagined error beyond step 0 is the rollout's own drift.

Error: distance (cm) from the located centre to the simulator's object centre at step t. The
JSON holds the median per step and per seed; the PNG, the median error against the step
(real and imagined) above the first seed's real (top) and imagined (bottom) frames.

    python benchmarks/locate_in_imagination.py --out benchmarks/results/locate_in_imagination.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch


def expert_episode(env, seed: int, steps: int) -> dict:
    """The scripted expert for ``steps`` steps: frames (steps + 1, H, W, 3), the commanded pose
    of each frame (steps + 1, 57), the object's true centre at each frame (steps + 1, 3), text."""
    from agents.contact import true_place
    from agents.evaluate import info_image
    from agents.policies import ExpertPolicy

    policy = ExpertPolicy()
    obs, info = env.reset(seed=seed)
    policy.reset(env, obs, info, seed)
    frames, poses = [info_image(obs)], [env.commanded_pose.copy()]
    truth = [true_place(env.unwrapped)[0].numpy()]
    text = str(info["task_description"])
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step_pose(policy.act(env, obs, info))
        frames.append(info_image(obs))
        poses.append(env.commanded_pose.copy())
        truth.append(true_place(env.unwrapped)[0].numpy())
        if terminated or truncated:
            break
    return {"frames": np.stack(frames), "poses": np.stack(poses), "truth": np.stack(truth),
            "text": text, "seed": seed}


def imagine(world, episodes: list[dict], steps: int) -> np.ndarray:
    """(N, steps + 1, H, W, 3): each episode imagined open loop from its first frame."""
    from agents.branching import state_from_frames, world_vector_env

    venv = world_vector_env(world, len(episodes))
    core = venv.core
    count = core.context_pixel_frames
    contexts = []  # the real frames up to the first, oldest first, padded with the oldest
    for e in episodes:
        seen = e.get("context", e["frames"][:1])
        contexts.append(np.concatenate([np.repeat(seen[:1], max(count - len(seen), 0), 0),
                                        seen])[-count:])
    core.set_state(state_from_frames(
        core, contexts,
        np.stack([e["poses"][0] for e in episodes]), [e["text"] for e in episodes],
        seeds=[e["seed"] for e in episodes]))
    frames = [core.frames().copy()]
    for t in range(1, steps + 1):
        core.step(np.stack([e["poses"][t] for e in episodes]))
        frames.append(core.frames().copy())
    venv.close()
    return np.stack(frames, 1)


def locate_errors(locator, frames: np.ndarray, poses: np.ndarray, truth: np.ndarray,
                  text: str, rgb: np.ndarray | None = None) -> np.ndarray:
    """(T,) cm from the located centre of the text's colour (or of ``rgb`` (3,) in [0, 1]) to
    ``truth`` on each frame."""
    from world_model.keypoint_prior import from_camera
    from world_model.object_locator import colour_of

    colour = torch.tensor(np.array([colour_of(text) if rgb is None else rgb] * len(frames)),
                          dtype=torch.float32)
    with torch.no_grad():
        centre, _, _ = locator(torch.from_numpy(np.ascontiguousarray(frames)), colour)
    place = from_camera(centre[:, None], torch.from_numpy(poses).float())[:, 0]
    return 100 * torch.linalg.vector_norm(place - torch.from_numpy(truth).float(), dim=-1).numpy()


def fingertip_distances(poses: np.ndarray, truth: np.ndarray, text: str) -> np.ndarray:
    """(T,) cm from the fingertip the text names (of each commanded pose) to ``truth``; NaN
    when the text names none."""
    from world_model.keypoint_prior import keypoints_3d
    from world_model.object_locator import fingertip_of
    from world_model.task_reward import FINGERTIPS

    named = fingertip_of(text)
    if named is None:
        return np.full(len(poses), np.nan)
    tip = FINGERTIPS[named]
    place = keypoints_3d(torch.from_numpy(poses).float())[:, tip]
    return 100 * torch.linalg.vector_norm(place - torch.from_numpy(truth).float(), dim=-1).numpy()


def figure(path: Path, steps: np.ndarray, medians: dict[str, np.ndarray], real: np.ndarray,
           imagined: np.ndarray, label: str, held: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.linspace(0, len(real) - 1, 6).round().astype(int)
    fig = plt.figure(figsize=(9, 6.2))
    grid = fig.add_gridspec(3, 6, height_ratios=[2.2, 1, 1])
    ax = fig.add_subplot(grid[0, :])
    for name, values in medians.items():
        style = {"ls": ":", "color": "grey"} if name == "named_fingertip" else {"marker": "o"}
        ax.plot(steps, values, ms=3, label=name.replace("_", " "), **style)
    ax.axhline(2.0, color="grey", lw=0.8, ls="--", label="2 cm")
    ax.set_xlabel("env step (the hand held at its first pose)" if held
                  else "env step (the expert reaching for the named object)")
    ax.set_ylabel("locator error, median over seeds (cm)")
    ax.set_title(label, fontsize=9)
    ax.legend(fontsize=8)
    for row, frames in ((1, real), (2, imagined)):
        for col, t in enumerate(shown):
            a = fig.add_subplot(grid[row, col])
            a.imshow(frames[t])
            a.set_xticks([])
            a.set_yticks([])
            if col == 0:
                a.set_ylabel("real" if row == 1 else "imagined", fontsize=8)
            if row == 1:
                a.set_title(f"step {t}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from agents.contact import drawn_colour
    from agents.envs import AgentEnvConfig, make_env
    from dexac_env.defaults import ASSETS_DIR
    from world_model.keypoint_prior import from_camera
    from world_model.object_locator import load_locator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seed-start", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20, help="env steps imagined per episode")
    parser.add_argument("--checkpoint", default=None, help="world model (default: shipped)")
    parser.add_argument("--sampling-steps", type=int, default=2,
                        help="sampler steps per imagined frame (the agents' default: 2)")
    parser.add_argument("--cfg-scale", type=float, default=None,
                        help="classifier-free guidance on actions (default: the model's)")
    parser.add_argument("--locator", default=str(ASSETS_DIR / "object_locator_touch.safetensors"))
    parser.add_argument("--color-split", choices=("test", "train"), default="test",
                        help="object colours: held out of training data, or the training ones")
    parser.add_argument("--context-noise", type=float, default=None,
                        help="noise level the context latents are given at (default: the "
                             "model's sampler.context_noise; as dexac evaluate's flag)")
    parser.add_argument("--start-sigma", type=float, default=None,
                        help="noise level each frame's sampling starts at from the last "
                             "context frame (default: the model's sampler.start_sigma, 1 = "
                             "from pure noise; as dexac evaluate's flag)")
    parser.add_argument("--start-step", type=int, default=0,
                        help="start imagination at the expert's step S, the real frames before "
                             "it as context (S ~ 10: the hand already near the object)")
    parser.add_argument("--hold-pose", action="store_true",
                        help="freeze the hand at the first pose: the objects' own drift")
    parser.add_argument("--out", default="benchmarks/results/locate_in_imagination.json")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.sampling_steps < 1 or args.start_step < 0:
        parser.error("--seeds, --steps and --sampling-steps must be >= 1, --start-step >= 0")

    locator = load_locator(args.locator)
    start = args.start_step
    sim = make_env(AgentEnvConfig(kind="sim", task="touch", color_split=args.color_split,
                                  max_episode_steps=start + args.steps))
    try:
        episodes = [expert_episode(sim, seed, start + args.steps)
                    for seed in range(args.seed_start, args.seed_start + args.seeds)]
    finally:
        sim.close()
    if min(len(e["frames"]) for e in episodes) <= start + 1:
        parser.error(f"an expert episode ended before step {start + 1}: lower --start-step")
    if start:  # the real frames up to the start are the context; imagination runs after it
        episodes = [e | {"context": e["frames"][:start + 1]}
                    | {k: e[k][start:] for k in ("frames", "poses", "truth")} for e in episodes]
    steps = min(len(e["frames"]) for e in episodes) - 1
    if args.hold_pose:  # nothing moves: the first frame, pose and place, repeated
        episodes = [e | {k: np.repeat(e[k][:1], steps + 1, 0) for k in ("frames", "poses", "truth")}
                    for e in episodes]
    model = args.checkpoint
    if args.context_noise is not None or args.start_sigma is not None:  # a model object
        from dexac_env.defaults import load_world_model
        from evaluation.cli import with_sampler

        model = with_sampler(load_world_model(args.checkpoint), args)
    world = AgentEnvConfig(kind="world", task="touch", checkpoint=model,
                           sampling_steps=args.sampling_steps, cfg_scale=args.cfg_scale,
                           max_episode_steps=steps)
    imagined = imagine(world, [{**e, "poses": e["poses"][: steps + 1]} for e in episodes], steps)
    errors = {"real": [], "imagined": [], "imagined_drawn_colour": [], "named_fingertip": []}
    for e, dream in zip(episodes, imagined, strict=True):
        cut = slice(0, steps + 1)
        errors["real"].append(locate_errors(locator, e["frames"][cut], e["poses"][cut],
                                            e["truth"][cut], e["text"]))
        errors["imagined"].append(locate_errors(locator, dream, e["poses"][cut],
                                                e["truth"][cut], e["text"]))
        with torch.no_grad():  # where the locator finds the object on the real first frame
            centre, _ = locator.locate_text(torch.from_numpy(e["frames"][:1]), [e["text"]])
        place = from_camera(centre[:, None], torch.from_numpy(e["poses"][:1]).float())[0, 0]
        rgb = drawn_colour(dream[0], place, e["poses"][0], locator.config.camera)
        errors["imagined_drawn_colour"].append(locate_errors(
            locator, dream, e["poses"][cut], e["truth"][cut], e["text"], rgb))
        errors["named_fingertip"].append(
            fingertip_distances(e["poses"][cut], e["truth"][cut], e["text"])
        )
    errors = {name: np.stack(rows) for name, rows in errors.items()}  # (seeds, steps + 1)
    medians = {name: np.nanmedian(rows, 0) for name, rows in errors.items()}
    summary = {
        name: {"median_cm_per_step": medians[name].round(3).tolist(),
               "median_cm_all_steps": float(np.nanmedian(rows)),
               "within_2cm_share_per_step": (rows <= 2.0).mean(0).round(3).tolist(),
               "per_seed_cm": rows.round(3).tolist()}
        for name, rows in errors.items()}
    result = {"command": "python " + shlex.join(sys.argv), "checkpoint": args.checkpoint,
              "sampling_steps": args.sampling_steps, "cfg_scale": args.cfg_scale,
              "hold_pose": args.hold_pose, "start_step": start,
              "context_noise": args.context_noise,
              "start_sigma": args.start_sigma,
              "locator": args.locator, "color_split": args.color_split, "seeds": args.seeds,
              "seed_start": args.seed_start,
              "steps": steps, "errors": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    figure(out.with_suffix(".png"), np.arange(steps + 1), medians, episodes[0]["frames"],
           imagined[0], f"{args.checkpoint or 'shipped default'}: {args.seeds} held-out seeds, "
           f"{args.color_split} colours" + (", the hand frozen" if args.hold_pose else "")
           + (f", from the expert's step {start}" if start else ""),
           held=args.hold_pose)
    for name, s in summary.items():
        per = s["median_cm_per_step"]
        print(f"{name}: median {s['median_cm_all_steps']:.2f} cm over all steps; step 0 "
              f"{per[0]:.2f}, step {steps // 2} {per[steps // 2]:.2f}, step {steps} {per[-1]:.2f}")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
