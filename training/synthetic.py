"""A small random episode store for tests and benchmarks of the training machinery.

The frames are noise with a moving bright square, the actions a smooth random walk: enough for
mechanics (shapes, data order, resuming, throughput), not for learning anything useful. Real
training reads the simulator's store (``data/sim.zarr``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dexac_env.actions import ACTION_DIM, NUM_KEYPOINTS
from dexac_env.replay.store import EpisodeStore

TASKS = ("push the cube", "lift the ball")


def write_random_store(
    path: str | Path,
    episodes: int = 4,
    length: int = 12,
    resolution: int = 32,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
    latent_shape: tuple[int, int, int] | None = None,
    semantic_shape: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> EpisodeStore:
    """Write ``episodes`` random episodes (cycling through ``splits``) and return the store.

    ``latent_shape`` (C, h, w): also write a random cached ``latent`` (T, C, h, w) per episode;
    ``semantic_shape`` ((S_img, D_img), (S_txt, D_txt)): also write ``semantic_image`` (T, S, D)
    and ``semantic_text`` (1, S_txt, D_txt). Rewards and success flags are always written.
    """
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path)
    for e in range(episodes):
        rgb = rng.integers(0, 64, size=(length, resolution, resolution, 3), dtype=np.uint8)
        for t in range(length):  # a bright square that moves with time
            x = (3 * t + 5 * e) % (resolution - 8)
            rgb[t, 4:12, x : x + 8] = 220
        action = np.cumsum(rng.normal(0, 0.01, size=(length, ACTION_DIM)), axis=0).astype(
            np.float32
        )
        extra = {
            "reward": rng.random(length).astype(np.float32),
            "success": (np.arange(length) >= length - 2),
        }
        store.write_episode(
            f"ep{e:03d}",
            rgb=rgb,
            action=action,
            keypoints_2d=rng.random((length, NUM_KEYPOINTS, 2)).astype(np.float32) * resolution,
            keypoints_visible=np.ones((length, NUM_KEYPOINTS), dtype=bool),
            attrs={
                "task": f"task{e % len(TASKS)}",
                "description": TASKS[e % len(TASKS)],
                "fps": 10,
                "source": "synthetic",
                "split": splits[e % len(splits)],
                "intrinsics": np.eye(3).tolist(),
            },
            extra=extra,
        )
        if latent_shape is not None:
            latent = rng.normal(size=(length, *latent_shape)).astype(np.float32)
            store.write_array(f"ep{e:03d}", "latent", latent)
        if semantic_shape is not None:
            (s_img, d_img), (s_txt, d_txt) = semantic_shape
            store.write_array(
                f"ep{e:03d}",
                "semantic_image",
                rng.normal(size=(length, s_img, d_img)).astype(np.float16),
            )
            store.write_array(
                f"ep{e:03d}", "semantic_text", rng.normal(size=(1, s_txt, d_txt)).astype(np.float32)
            )
    store.compute_action_stats(None)
    return store
