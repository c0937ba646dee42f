"""``dexac imagine``: roll out an imagined episode and write it as a video.

    dexac imagine --steps 48 --out rollout.mp4 [--actions replay|scripted] [--episode NAME]

The context window comes from the episode store; the actions are the episode's own
demonstration (``replay``, holding its last pose past its end) or a scripted motion around
the starting pose (``scripted``: wrists circle, fingers curl and open). When the episode came
from the simulator (store attribute ``source == "sim"``, with the ``task``, ``env_seed`` and
``color_split`` attributes that ``dexac sim generate`` writes), the simulator is reset the same way, driven through the context frames
and then with the same per-frame poses, and the video shows imagination | simulator side by
side, with the per-frame PSNR printed. Frames are upscaled (nearest) by ``--scale``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from dexac_env.actions import ACTION_DIM, LEFT_FINGERS, LEFT_WRIST, RIGHT_FINGERS, RIGHT_WRIST
from dexac_env.video import write_video
from world_model.metrics import psnr


def register(subparsers) -> None:
    parser = subparsers.add_parser("imagine", help="roll out the world model and write a video")
    parser.add_argument("--steps", type=int, default=48, help="env steps to imagine")
    parser.add_argument("--out", default="rollout.mp4", help="video file (.mp4 or .gif)")
    parser.add_argument("--checkpoint", default=None, help="world-model .safetensors (default: shipped)")
    parser.add_argument("--store", default=None, help="episode store (default: shipped)")
    parser.add_argument("--episode", default=None, help="episode name (default: drawn by --seed)")
    parser.add_argument("--start", type=int, default=0, help="first context frame")
    parser.add_argument("--actions", choices=("replay", "scripted"), default="replay")
    parser.add_argument("--frames-per-step", type=int, default=1)
    parser.add_argument("--sampling-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling")
    parser.add_argument("--no-sim", action="store_true", help="skip the simulator ground truth")
    parser.set_defaults(func=run_imagine)


def scripted_pose(start_pose: np.ndarray, frame: int) -> np.ndarray:
    """A smooth scripted pose ``frame`` frames after ``start_pose``: wrists circle 4 cm,
    fingertips curl toward their wrist by up to 30 % and open again (period 24 frames)."""
    pose = start_pose.copy()
    phase = 2 * np.pi * frame / 24
    offset = 0.04 * np.array([np.sin(phase), 0.0, np.cos(phase) - 1.0])
    pose[LEFT_WRIST.start : LEFT_WRIST.start + 3] += offset
    pose[RIGHT_WRIST.start : RIGHT_WRIST.start + 3] += offset * [-1, 1, 1]
    curl = 1.0 - 0.3 * (1 - np.cos(phase)) / 2
    pose[LEFT_FINGERS] *= curl
    pose[RIGHT_FINGERS] *= curl
    return pose


def imagine_rollout(env: Any, steps: int, actions: str, start_pose: np.ndarray, demo: np.ndarray):
    """Step the world env; returns (frames (F, H, W, 3) uint8, per-frame poses (F, 57)).

    Frame 0 is the last context frame; every step adds ``frames_per_step`` decoded frames.
    """
    core = env.unwrapped.core
    k = core.frames_per_step
    frames, poses = [core.frames()[0].copy()], [core.pose[0].copy()]
    first = int(core.frame_index[0])
    for step in range(steps):
        frame = (step + 1) * k
        if actions == "replay":
            target = demo[min(first + frame, len(demo) - 1)]
        else:
            target = scripted_pose(start_pose, frame)
        current = core.pose[0].copy()
        _, latents = core.step(np.asarray(target, dtype=np.float64)[None])
        frames.extend(core.model.decode(latents)[0].cpu().numpy())  # every frame of the step
        poses.extend(current + j / k * (target - current) for j in range(1, k + 1))
    return np.stack(frames), np.stack(poses)


def simulator_frames(episode: Any, context_end: int, poses: np.ndarray,
                     resolution: int) -> np.ndarray | None:
    """The simulator's frames for the same episode and poses, or None (with the reason printed).

    Isolated so that it is the only place that knows the simulator: reset ``DexACSimEnv`` with
    the episode's ``env_seed`` and ``color_split`` (as ``dexac sim generate`` records them),
    replay the stored commands (``command``, else ``action``) up to the last context frame,
    then the imagined per-frame poses.
    """
    attrs = episode.attrs
    seed = next((attrs[k] for k in ("env_seed", "sim_seed", "seed") if k in attrs), None)
    if seed is None:
        print("imagine: this sim episode records no env_seed: no simulator ground truth")
        return None
    try:
        from dexac_env.sim.env import DexACSimEnv
    except ImportError as exc:
        print(f"imagine: simulator unavailable ({exc}): no ground truth")
        return None
    commands = episode.read("command" if "command" in episode else "action")
    sim = DexACSimEnv(task=str(attrs.get("task")), resolution=resolution,
                      fps=int(attrs.get("fps", 10)),
                      color_split=str(attrs.get("color_split", "train")))
    try:
        obs, _ = sim.reset(seed=int(seed))
        for t in range(1, context_end + 1):
            obs, *_ = sim.step(commands[t].astype(np.float32))
        out = [obs["image"]]
        for pose in poses[1:]:
            obs, *_ = sim.step(pose.astype(np.float32))
            out.append(obs["image"])
    finally:
        sim.close()
    return np.stack(out)


def run_imagine(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import dexac_env  # noqa: F401  (registration)
    from dexac_env.replay.store import EpisodeStore

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    env = gym.make("DexACWorld-v0", checkpoint=args.checkpoint, store=args.store,
                   sampling_steps=args.sampling_steps, frames_per_step=args.frames_per_step,
                   obs_mode="latent", max_episode_steps=None)
    options = {"start": args.start} | ({"episode": args.episode} if args.episode else {})
    _, info = env.reset(seed=args.seed, options=options)
    core = env.unwrapped.core
    store: EpisodeStore = core.store
    episode = store.episode(info["episode_name"])
    demo = core.demo_actions(info["episode_name"])
    assert demo.shape[1] == ACTION_DIM
    frames, poses = imagine_rollout(env, args.steps, args.actions, core.pose[0].copy(), demo)
    print(f"imagine: episode {info['episode_name']!r} ({episode.attrs.get('task')}), "
          f"{args.steps} steps x {core.frames_per_step} frames, actions={args.actions}")
    video = frames
    if episode.attrs.get("source") == "sim" and not args.no_sim:
        truth = simulator_frames(episode, info["frame_index"], poses, core.resolution)
        if truth is not None:
            stored = episode.read("rgb", info["frame_index"], info["frame_index"] + 1)[0]
            match = psnr(truth[0], stored, max_db=np.inf)  # identical frames: inf dB
            print(f"imagine: simulator vs stored context frame PSNR {match:.2f} dB "
                  f"(high = the simulator reproduces the episode)")
            per_frame = psnr(frames, truth, max_db=np.inf)  # (T,)
            for i, value in enumerate(per_frame):
                print(f"frame {i:3d}  PSNR {value:6.2f} dB")
            finite = [p for p in per_frame[1:] if np.isfinite(p)]
            print(f"imagine: mean PSNR over imagined frames {np.mean(finite):.2f} dB")
            video = np.concatenate([frames, truth], axis=2)  # imagination | simulator
    write_video(args.out, video, int(episode.attrs.get("fps", 10)), scale=args.scale)
    print(f"imagine: wrote {args.out} ({len(video)} frames)")
    return 0
