"""Random 16-frame window reads from the episode store vs the same windows from memory.

Writes benchmarks/results/store.json. Also compares chunk lengths along time (the store's
FRAMES_PER_CHUNK choice). Run: python benchmarks/bench_store.py [--episodes 40 --length 48]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from dexac_env.replay import store as store_module

ATTRS = dict(
    task="bench",
    description="benchmark",
    fps=10,
    source="bench",
    split="train",
    intrinsics=np.eye(3).tolist(),
)


def smooth_frames(rng, length, resolution):
    """Frames that compress like video (smooth images drifting over time), not white noise."""
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
    phase = rng.uniform(0, 6.28, size=3)
    t = np.arange(length)[:, None, None, None] * 0.05
    base = np.stack([np.sin(6 * xx + p) * np.cos(4 * yy - p) for p in phase], axis=-1)[None]
    frames = (
        127 + 100 * np.sin(base * 3 + t) + rng.normal(0, 2, (length, resolution, resolution, 3))
    )
    return np.clip(frames, 0, 255).astype(np.uint8)


def build_store(path, episodes, length, resolution, frames_per_chunk, rng):
    store_module.FRAMES_PER_CHUNK = frames_per_chunk
    store = store_module.EpisodeStore.create(path)
    memory = {}
    for i in range(episodes):
        arrays = dict(
            rgb=smooth_frames(rng, length, resolution),
            action=rng.normal(size=(length, 57)).astype(np.float32),
            keypoints_2d=rng.uniform(0, resolution, (length, 12, 2)).astype(np.float32),
            keypoints_visible=np.ones((length, 12), bool),
        )
        store.write_episode(f"ep{i:04d}", **arrays, attrs=ATTRS)
        memory[f"ep{i:04d}"] = arrays
    return store_module.EpisodeStore.open(path), memory  # read-only, as training reads it


def time_windows(read, windows):
    start = time.perf_counter()
    for name, begin in windows:
        read(name, begin)
    return (time.perf_counter() - start) / len(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/store.json")
    args = parser.parse_args()

    keys = ("rgb", "action")
    results = {
        "machine": platform.processor() or platform.machine(),
        "config": vars(args),
        "chunks": {},
    }
    for frames_per_chunk in (1, 4, 8, 16, 32):
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            store, memory = build_store(
                Path(tmp) / "s.zarr",
                args.episodes,
                args.length,
                args.resolution,
                frames_per_chunk,
                rng,
            )
            names = store.episode_names()
            windows = [
                (names[rng.integers(len(names))], int(rng.integers(0, args.length - 16)))
                for _ in range(args.windows)
            ]
            store_s = time_windows(lambda n, b, s=store: s.window(n, b, 16, keys), windows)
            memory_s = time_windows(
                lambda n, b, m=memory: {k: m[n][k][b : b + 16].copy() for k in keys}, windows
            )
            size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
            raw = sum(a["rgb"].nbytes + a["action"].nbytes for a in memory.values())
        results["chunks"][frames_per_chunk] = {
            "store_ms_per_window": store_s * 1e3,
            "memory_ms_per_window": memory_s * 1e3,
            "ratio_store_over_memory": store_s / memory_s,
            "bytes_on_disk": size,
            "compression_ratio": raw / size,
        }
        print(
            f"chunk {frames_per_chunk:>2} frames: store {store_s * 1e3:7.2f} ms/window, memory "
            f"{memory_s * 1e3:6.3f} ms, ratio {store_s / memory_s:7.1f}x, compression {raw / size:4.2f}x"
        )
    best = min(results["chunks"], key=lambda c: results["chunks"][c]["store_ms_per_window"])
    results["fastest_chunk_frames"] = best
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"fastest: {best}-frame chunks; wrote {args.out}")


if __name__ == "__main__":
    main()
