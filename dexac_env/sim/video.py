"""Render an expert (or play) episode of a task to a video file or a still."""

from __future__ import annotations

import numpy as np

from dexac_env.actions import KEYPOINT_NAMES


def rollout_frames(
    task: str,
    seed: int = 0,
    frames: int = 32,
    resolution: int = 256,
    fps: int = 10,
    policy: str = "expert",
    keypoints: bool = False,
) -> tuple[np.ndarray, dict]:
    """(T, H, W, 3) uint8 frames of one episode and the final info; ``keypoints`` draws the 12
    projected keypoints (wrists as squares, fingertips as dots) for checking them by eye."""
    from dexac_env.sim.env import DexACSimEnv
    from dexac_env.sim.experts import PlayPolicy, ScriptedExpert

    if policy not in ("expert", "play"):
        raise ValueError(f"policy must be 'expert' or 'play', got {policy!r}")
    env = DexACSimEnv(task=task, resolution=resolution, fps=fps, render_mode="rgb_array")
    try:
        obs, info = env.reset(seed=seed)
        controller = (ScriptedExpert if policy == "expert" else PlayPolicy)(
            env, np.random.default_rng(seed)
        )
        images = [_draw(obs["image"], info, keypoints)]
        for _ in range(frames - 1):
            obs, _, _, _, info = env.step(controller.act())
            images.append(_draw(obs["image"], info, keypoints))
    finally:
        env.close()
    return np.stack(images), info


def _draw(image: np.ndarray, info: dict, keypoints: bool) -> np.ndarray:
    if not keypoints:
        return image
    image = image.copy()
    size = image.shape[0]
    for name, (u, v), visible in zip(
        KEYPOINT_NAMES, info["keypoints_2d"], info["keypoints_visible"], strict=True
    ):
        if not visible:
            continue
        r = max(1, size // 128) + (1 if name.endswith("wrist") else 0)
        color = (255, 255, 0) if name.startswith("left") else (0, 255, 255)
        image[max(0, int(v) - r) : int(v) + r + 1, max(0, int(u) - r) : int(u) + r + 1] = color
    return image
