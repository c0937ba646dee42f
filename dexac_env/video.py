"""The one video writer of the env package (``dexac sim video``, ``dexac imagine``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames: np.ndarray, fps: float, scale: int = 1) -> Path:
    """Write (T, H, W, 3) uint8 ``frames`` to ``path`` at ``fps`` frames per second, each
    upscaled ``scale`` times (nearest neighbour). ``.gif`` files are written as looping GIFs,
    every other suffix (``.mp4``, ...) through imageio-ffmpeg. Returns the path."""
    import imageio.v2 as imageio

    if scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames).repeat(scale, axis=1).repeat(scale, axis=2)
    if path.suffix.lower() == ".gif":
        imageio.mimwrite(path, list(frames), duration=1000.0 / fps, loop=0)
    else:
        imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=1)
    return path
