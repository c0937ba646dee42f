"""Simulator throughput: frames per second (expert control + physics + render) at 64 and
128 px, one and two worker processes. Writes benchmarks/results/sim.json. Never asserts."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from pathlib import Path


def _run(job: tuple[str, int, int, int]) -> tuple[int, float, float]:
    """Returns (frames, seconds stepping, seconds resetting) for ``episodes`` expert episodes."""
    import numpy as np

    from dexac_env.sim.env import DexACSimEnv
    from dexac_env.sim.experts import ScriptedExpert

    task, resolution, episodes, seed = job
    env = DexACSimEnv(task=task, resolution=resolution)
    env.reset(seed=seed)  # warm up the GL context
    frames, stepping, resetting = 0, 0.0, 0.0
    for episode in range(episodes):
        start = time.perf_counter()
        env.reset(seed=seed + episode)
        expert = ScriptedExpert(env, np.random.default_rng(seed + episode))
        resetting += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(31):
            env.step(expert.act())
        stepping += time.perf_counter() - start
        frames += 31
    env.close()
    return frames, stepping, resetting


def measure(resolution: int, workers: int, episodes: int) -> dict:
    tasks = ["touch", "push", "lift", "sweep", "bimanual"]
    jobs = [(tasks[w % len(tasks)], resolution, episodes, 100 * w) for w in range(workers)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_run, [(t, r, 1, s) for t, r, _, s in jobs])  # start-up outside the timing
        start = time.perf_counter()
        results = pool.map(_run, jobs)
        wall = time.perf_counter() - start
    frames = sum(r[0] for r in results)
    return {
        "resolution": resolution,
        "workers": workers,
        "frames": frames,
        "wall_s": round(wall, 3),
        "frames_per_s": round(frames / wall, 1),
        "step_only_frames_per_s_per_worker": round(sum(r[0] / r[1] for r in results) / workers, 1),
        "reset_s_per_episode": round(sum(r[2] for r in results) / (episodes * workers), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=6, help="episodes per worker")
    parser.add_argument("--out", default="benchmarks/results/sim.json")
    args = parser.parse_args()
    rows = [measure(r, w, args.episodes) for r in (64, 128) for w in (1, 2)]
    result = {
        "benchmark": "sim",
        "what": "DexACSim-v0 expert episodes (31 steps each, fps=10, physics_dt=0.004)",
        "machine": {"cpus": multiprocessing.cpu_count(), "platform": platform.platform()},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
