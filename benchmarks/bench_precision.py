"""fp32 vs bf16, eager vs compiled: the imagined env step side by side, interleaved in rounds.

    python -m benchmarks.bench_precision [--envs 16] [--rounds 8] [--obs-modes rgb latent] \
        [--precisions fp32 bf16] [--out benchmarks/results/env_precision_cpu.json]

``bench_env`` times each configuration in its own block of steps, one after another; on a
shared CPU whose speed drifts within minutes (E24 saw the fp32 matmul rate move between 160 and
290 GFLOP/s in one run) two blocks a few minutes apart are not side by side. Here every
configuration steps once per round, in a shuffled order, next to one measurement of the fp32
and bf16 matmul rates, so each round compares them in the same minute; the JSON gives medians
over rounds of the step times, of each configuration's ratio to the eager fp32 loop *within a
round*, and of its GFLOP/s over that round's matmul rate.

Configurations: precision ``fp32`` / ``bf16`` (``WorldModel.set_inference``: autocast, on a
CPU with AMX bf16 matmuls run 3-7x fp32's) x network eager / compiled (``torch.compile``; the
first step's seconds are recorded as the compile time) / compiled with TorchInductor's
freezing (``compile="frozen"``: weights and their casts folded into the compiled code; about
1.5 min of compile per batch size here), each as one ``DexACWorldVectorEnv``
of N envs (``batched``) and as N single ``DexACWorldEnv`` stepped in a loop (``loop``). Each
precision x compile pair has its own copy of the model (both settings act on the model in
place). FLOPs are counted on one eager fp32 batched step (``torch.utils.flop_counter``).
Uses the shipped checkpoint when present (else ``bench_env``'s random tiny model). Writes
JSON after every obs mode; asserts nothing; never part of the tests. bf16 is timed by default
only on a CPU with bf16 matmul units (AMX or AVX512-BF16): on an AVX2-only AMD EPYC a 16-env
bf16 step ran 6.5x slower than fp32 and one emulated bf16 matmul-rate measurement took minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import dexac_env  # noqa: F401
from benchmarks.bench_env import _model_and_store, _row_rate
from benchmarks.bench_wm_step import machine_description
from dexac_env.vector_env import DexACWorldVectorEnv
from dexac_env.world_env import DexACWorldEnv
from world_model.facade import cpu_has_bf16_matmul

PRECISIONS = ("fp32", "bf16")
MODE_NAMES = {True: "compiled", "frozen": "frozen"}


class Config:
    """One way of stepping N imagined envs; ``step()`` advances all N once."""

    def __init__(self, name: str, model, store: str, n: int, obs_mode: str, precision: str,
                 batched: bool, sampling_steps: int | None, compiled: bool | str = False):
        self.name, self.precision, self.compiled = name, precision, compiled
        kwargs = {"checkpoint": model, "store": store, "obs_mode": obs_mode, "reward": "learned",
                  "sampling_steps": sampling_steps, "precision": precision}
        if batched:
            self.envs = [DexACWorldVectorEnv(n, max_episode_steps=None, **kwargs)]
            self.envs[0].reset(seed=0)
            self.actions = [self.envs[0].core.pose.astype(np.float32)]
        else:
            self.envs = [DexACWorldEnv(**kwargs) for _ in range(n)]
            for i, env in enumerate(self.envs):
                env.reset(seed=i)
            self.actions = [env.core.pose[0].astype(np.float32) for env in self.envs]
        self.model = model
        start = time.perf_counter()
        self.step()  # warm-up; the compile, when compiled
        self.first_step_s = time.perf_counter() - start
        self.step()
        self.times: list[float] = []

    def step(self) -> float:
        # the envs share one model whose precision each env set when it was built: set it
        # again, in case another configuration's env (same model) was built since
        self.model.set_inference(self.precision)
        start = time.perf_counter()
        for env, action in zip(self.envs, self.actions, strict=True):
            env.step(action)
        return time.perf_counter() - start


def step_flops(config: Config) -> int:
    with FlopCounterMode(display=False) as counter:
        config.step()
    return int(counter.get_total_flops())


def _rates(precisions) -> dict[str, float]:
    cpu = torch.device("cpu")
    return {p: _row_rate(cpu, p) for p in precisions}


def run_obs_mode(models: dict, store: str, n: int, obs_mode: str, rounds: int,
                 sampling_steps: int | None, seed: int, precisions=PRECISIONS) -> dict:
    configs = []
    for (precision, compiled), model in models.items():
        suffix = f"{precision}{'' if not compiled else ' ' + MODE_NAMES[compiled]}"
        for batched in (True, False):
            name = f"{'batched' if batched else 'loop'} {suffix}"
            print(f"  building {name} ...", flush=True)
            configs.append(Config(name, model, store, n, obs_mode, precision, batched,
                                  sampling_steps, compiled))
    flops = step_flops(next(c for c in configs if c.name == "batched fp32"))
    rng = random.Random(seed)
    matmul = []
    for r in range(rounds):
        matmul.append(_rates(precisions))
        for config in rng.sample(configs, len(configs)):
            config.times.append(config.step())
        print(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{c.name} {c.times[-1]:.2f}s" for c in configs), flush=True)
    reference = next(c for c in configs if c.name == "loop fp32")
    rows = []
    for c in configs:
        times = np.asarray(c.times)
        per_round_gflops = flops / times / 1e9 if c.name.startswith("batched") else None
        row = {
            "config": c.name,
            "precision": c.precision,
            "compiled": c.compiled,
            "batched": c.name.startswith("batched"),
            "first_step_s": round(c.first_step_s, 2),
            "step_s_median": round(float(np.median(times)), 4),
            "step_s_quartiles": [round(float(q), 4) for q in np.percentile(times, [25, 75])],
            "env_steps_per_s": round(n / float(np.median(times)), 1),
            # within each round, then the median: the drift of the machine cancels
            "vs_loop_fp32": round(float(np.median(reference.times / times)), 2),
        }
        if per_round_gflops is not None:
            row["gflops_median"] = round(float(np.median(per_round_gflops)), 1)
            for dtype in precisions:
                rate = np.asarray([m[dtype] for m in matmul])
                row[f"fraction_of_{dtype}_matmul"] = round(
                    float(np.median(per_round_gflops / rate)), 3)
        rows.append(row)
    for row in rows:  # each batched config against the loop of its own precision and compile
        if row["batched"]:
            loop = next(c for c in configs if c.name == row["config"].replace("batched", "loop"))
            mine = next(c for c in configs if c.name == row["config"])
            row["vs_own_loop"] = round(float(np.median(np.asarray(loop.times) / mine.times)), 2)
    return {
        "obs_mode": obs_mode,
        "flops_per_batched_step": flops,
        "matmul_gflops_per_round": [{k: round(v, 1) for k, v in m.items()} for m in matmul],
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=16, help="envs per configuration")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--obs-modes", nargs="+", choices=("rgb", "latent"),
                        default=["rgb", "latent"])
    parser.add_argument("--sampling-steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--no-compile", action="store_true", help="eager configurations only")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None,
                        help="default: fp32 and bf16 on a CPU with bf16 matmul units (AMX or "
                             "AVX512-BF16), fp32 alone elsewhere (emulated bf16 matmuls take "
                             "minutes to even measure the rate there)")
    parser.add_argument("--checkpoint", default=None,
                        help="world-model file to time (default: the shipped default)")
    parser.add_argument("--seed", type=int, default=0, help="the rounds' shuffles")
    parser.add_argument("--out", default="benchmarks/results/env_precision_cpu.json")
    args = parser.parse_args(argv)
    if args.envs < 1 or args.rounds < 1:
        parser.error("--envs and --rounds must be >= 1")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")
    precisions = tuple(args.precisions or (PRECISIONS if cpu_has_bf16_matmul() else ("fp32",)))
    if "fp32" not in precisions:
        parser.error("--precisions must include fp32: the eager fp32 loop is the yardstick")
    if args.precisions is None and "bf16" not in precisions:
        print(f"no bf16 matmul units on this CPU ({machine_description()}): fp32 only; "
              "--precisions fp32 bf16 times bf16 anyway", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base, store, kind = _model_and_store(tmp, args.checkpoint)
        base = base.eval().requires_grad_(False)  # inference; the FLOP counter needs it
        models = {}
        for compiled in (False,) if args.no_compile else (False, True, "frozen"):
            for precision in precisions:
                model = copy.deepcopy(base)
                if compiled:
                    model.compile_network(freeze=compiled == "frozen")
                models[(precision, compiled)] = model
        result = {
            "benchmark": "bench_precision",
            "model": kind,
            "num_envs": args.envs,
            "rounds": args.rounds,
            "sampling_steps": args.sampling_steps or base.config.sampler.num_steps,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "machine": machine_description(),
            "precisions": list(precisions),
            "command": "python -m benchmarks.bench_precision " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "note": "medians over rounds; every configuration steps once per round, in a "
                    "shuffled order, next to that round's matmul rates. vs_loop_fp32: the "
                    "eager fp32 loop's step time over this configuration's, per round; "
                    "vs_own_loop: the same against the loop of its own precision and "
                    "compile; fraction_of_*_matmul: GFLOP/s over that round's rate",
            "obs_modes": [],
        }
        for obs_mode in args.obs_modes:
            print(f"{obs_mode}:", flush=True)
            result["obs_modes"].append(run_obs_mode(models, store, args.envs, obs_mode,
                                                    args.rounds, args.sampling_steps, args.seed,
                                                    precisions))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for block in result["obs_modes"]:
        for row in block["rows"]:
            print(block["obs_mode"], json.dumps(row))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
