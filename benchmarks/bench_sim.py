"""Simulator throughput: frames per second (expert control + physics + render) at 64 and
128 px, one and two worker processes; and, in one process at 64 px, the env step against the
bound its own physics and render set (``step_vs_bound``). Writes benchmarks/results/sim.json.
Never asserts."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
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


def _step_vs_bound(resolution: int, episodes_per_task: int, seed: int) -> dict:
    """Seconds per ``env.step`` and, from the same states, per step of its physics substeps alone
    and its render alone, over expert episodes of every task in this process.

    After each step the step is replayed: the physics state before it is restored and the same
    number of ``mj_step`` calls run while the mocap targets move as the step moved them (only
    the ``mj_step`` calls are timed), then the state after it is restored and rendered (timed).
    The episode then goes on from that exact state, so the replay changes nothing, and the step
    and its bound are measured side by side under the same machine load."""
    import mujoco
    import numpy as np

    from dexac_env.sim.env import DexACSimEnv
    from dexac_env.sim.experts import ScriptedExpert
    from dexac_env.sim.physics import mocap_path
    from dexac_env.sim.tasks import TASK_NAMES

    totals = {"step": 0.0, "physics": 0.0, "render": 0.0}
    steps, substeps = 0, 0
    for task in TASK_NAMES:
        env = DexACSimEnv(task=task, resolution=resolution)
        env.reset(seed=seed)  # warm up the GL context
        for episode in range(episodes_per_task):
            env.reset(seed=seed + episode)
            expert = ScriptedExpert(env, np.random.default_rng(seed + episode))
            for _ in range(31):
                action = expert.act()
                physics = env.physics
                before = physics.get_state()
                start = time.perf_counter()
                env.step(action)
                totals["step"] += time.perf_counter() - start
                after = physics.get_state()
                # 1. physics alone: the same substeps from the same state
                physics.set_state(after)
                end = physics.data.mocap_pos.copy(), physics.data.mocap_quat.copy()
                physics.set_state(before)
                begin = physics.data.mocap_pos.copy(), physics.data.mocap_quat.copy()
                substeps = physics.substep_count(1.0 / env.fps)
                for pos, quat in zip(*mocap_path(begin, end, substeps), strict=True):
                    physics.data.mocap_pos[:], physics.data.mocap_quat[:] = pos, quat
                    start = time.perf_counter()
                    mujoco.mj_step(physics.model, physics.data)
                    totals["physics"] += time.perf_counter() - start
                # 2. render alone, of the state the step ended in (the episode goes on from it)
                physics.set_state(after)
                start = time.perf_counter()
                physics.render()
                totals["render"] += time.perf_counter() - start
                steps += 1
        env.close()
    step_s, physics_s, render_s = (totals[k] / steps for k in ("step", "physics", "render"))
    return {
        "resolution": resolution,
        "tasks": list(TASK_NAMES),
        "steps": steps,
        "physics_substeps_per_step": substeps,
        "step_ms": round(1e3 * step_s, 3),
        "physics_ms": round(1e3 * physics_s, 3),
        "render_ms": round(1e3 * render_s, 3),
        "overhead_ms": round(1e3 * (step_s - physics_s - render_s), 3),
        "steps_per_s": round(1.0 / step_s, 1),
        "bound_steps_per_s": round(1.0 / (physics_s + render_s), 1),
        "fraction_of_bound": round((physics_s + render_s) / step_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=6, help="episodes per worker")
    parser.add_argument(
        "--bound-episodes", type=int, default=2, help="episodes per task for step_vs_bound"
    )
    parser.add_argument("--out", default="benchmarks/results/sim.json")
    args = parser.parse_args()
    rows = [measure(r, w, args.episodes) for r in (64, 128) for w in (1, 2)]
    result = {
        "benchmark": "sim",
        "what": "DexACSim-v0 expert episodes (31 steps each, fps=10, physics_dt=0.004)",
        "machine": {
            "cpus": multiprocessing.cpu_count(),
            "platform": platform.platform(),
            # other jobs on the machine slow every number; only ratios within one run compare
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "rows": rows,
        "step_vs_bound": {
            "what": (
                "one process, env.step alone (no expert): step_ms against the bound set by the"
                " step's own physics substeps (mj_step calls) and render, replayed from the same"
                " states in the same run; bound_steps_per_s = 1 / (physics_ms + render_ms)"
            ),
            **_step_vs_bound(64, args.bound_episodes, seed=0),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
