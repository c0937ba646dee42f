"""Every policy judged in the simulator, and the world model's optimism about it.

For each held-out seed, a policy runs one episode in ``DexACSim-v0`` (held-out object colours)
for ``max_episode_steps`` steps; success means the task's success test held at some step, the
real return is the summed simulator reward. The poses the policy sent are then replayed
open-loop in imagination from the same first frame (all seeds in one batched world core): the
summed learned reward is the *imagined* return of the same behaviour, and imagined minus real
is the model's optimism. The first seed's episode is written as a video: imagination |
simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from agents.branching import state_from_frames, world_vector_env
from agents.envs import AgentEnvConfig, make_env
from agents.policies import Policy
from agents.wrappers import AgentWrapper


@dataclass
class Episode:
    """One simulator episode: seed, real return, success, first frame (H, W, 3), the poses
    sent (T, 57), the start pose (57,), the task text and every frame (T + 1, H, W, 3)."""

    seed: int
    real_return: float
    success: bool
    first_frame: np.ndarray
    poses: np.ndarray
    start_pose: np.ndarray
    text: str
    frames: np.ndarray


def run_episode(env: AgentWrapper, policy: Policy, seed: int) -> Episode:
    obs, info = env.reset(seed=seed)
    policy.reset(env, obs, info, seed)
    start = env.commanded_pose
    frames, poses, total, success = [info_image(obs)], [], 0.0, False
    done = False
    while not done:
        action = policy.act(env, obs, info)
        if policy.absolute_pose:
            obs, reward, terminated, truncated, info = env.step_pose(action)
        else:
            obs, reward, terminated, truncated, info = env.step(action)
        poses.append(env.commanded_pose)
        frames.append(info_image(obs))
        total += float(reward)
        success = success or bool(info.get("success", False))
        done = terminated or truncated
    return Episode(seed, total, success, frames[0], np.stack(poses), start,
                   str(info.get("task_description", "")), np.stack(frames))


def info_image(obs: dict) -> np.ndarray:
    """(H, W, 3) from the agents' channel-first observation."""
    return np.moveaxis(obs["image"], 0, -1)


def imagined_returns(world: AgentEnvConfig, episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """Replay each episode's poses open-loop in imagination from its first frame, scored with
    ``world.reward`` (the learned head by default).

    Returns (imagined return per episode (N,), imagined frames of episode 0 (T + 1, H, W, 3)).
    """
    venv = world_vector_env(world, len(episodes), reward=world.reward)
    core = venv.core
    count = core.context_pixel_frames
    state = state_from_frames(
        core, [np.stack([e.first_frame] * count) for e in episodes],
        np.stack([e.start_pose for e in episodes]), [e.text for e in episodes],
        seeds=[e.seed for e in episodes])
    core.set_state(state)
    steps = min(len(e.poses) for e in episodes)
    totals, frames = np.zeros(len(episodes)), [core.frames()[0].copy()]
    for t in range(steps):
        reward, _ = core.step(np.stack([e.poses[t] for e in episodes]))
        totals += reward
        frames.append(core.frames()[0].copy())
    venv.close()
    return totals, np.stack(frames)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % half-width (normal approximation)."""
    values = np.asarray(values, dtype=np.float64)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(half)


def evaluate_policy(policy: Policy, sim: AgentEnvConfig, seeds: list[int],
                    world: AgentEnvConfig | None, video: str | None = None) -> dict:
    """Run ``policy`` on every seed in the simulator; summary dict (see the module docstring)."""
    env = make_env(sim)
    try:
        episodes = [run_episode(env, policy, seed)
                    for seed in tqdm(seeds, desc=policy.name, leave=False)]
    finally:
        env.close()
    real = np.array([e.real_return for e in episodes])
    successes = int(sum(e.success for e in episodes))
    summary = {
        "policy": policy.name, "episodes": len(episodes), "successes": successes,
        "success_rate": successes / len(episodes),
        "success_ci95": wilson_interval(successes, len(episodes)),
        "real_return": mean_ci(real),
        "per_seed": [{"seed": e.seed, "text": e.text, "real_return": e.real_return,
                      "success": e.success} for e in episodes],
    }
    imagined_frames = None
    if world is not None:
        imagined, imagined_frames = imagined_returns(world, episodes)
        summary["imagined_return"] = mean_ci(imagined)
        summary["optimism"] = mean_ci(imagined - real)
        for row, value in zip(summary["per_seed"], imagined, strict=True):
            row["imagined_return"] = float(value)
    if video:
        write_side_by_side(video, episodes[0].frames, imagined_frames)
        summary["video"] = video
    return summary


def write_side_by_side(path: str, real: np.ndarray, imagined: np.ndarray | None) -> None:
    from dexac_env.video import write_video  # noqa: PLC0415  (the project's one video writer)

    frames = real
    if imagined is not None:
        n = min(len(real), len(imagined))
        frames = np.concatenate([imagined[:n], real[:n]], axis=2)  # imagination | simulator
    write_video(path, frames, fps=10, scale=4)


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| policy | success (95% CI) | real return | imagined return | optimism (imag - real) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lo, hi = r["success_ci95"]
        real = "{:.2f} ± {:.2f}".format(*r["real_return"])
        imag = "{:.2f} ± {:.2f}".format(*r["imagined_return"]) if "imagined_return" in r else "-"
        opt = "{:+.2f} ± {:.2f}".format(*r["optimism"]) if "optimism" in r else "-"
        lines.append(f"| {r['policy']} | {r['successes']}/{r['episodes']} = {r['success_rate']:.2f} "
                     f"({lo:.2f}-{hi:.2f}) | {real} | {imag} | {opt} |")
    return "\n".join(lines)
