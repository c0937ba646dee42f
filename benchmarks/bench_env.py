"""Imagined env steps per second: batched core vs a loop of single envs, and the simulator.

    python -m benchmarks.bench_env [--steps 8] [--sampling-steps 10 2 1] [--out benchmarks/results/env.json]

For N in (1, 4, 16): one ``DexACWorldVectorEnv`` of N envs (one sampler call per step) against
N ``DexACWorldEnv`` stepped in a Python loop, with pixel observations (``rgb``: decode every
step) and without (``latent``). Env steps/s counts every env's step (N per batched step). The
simulator's own steps/s (``DexACSim-v0``, one env, 64 px) is measured in the same run. A
per-stage profile (predict / decode / reward / rest) of the batched rgb runs says where the
time goes; the FLOPs of one batched step (``torch.utils.flop_counter``: matmuls, convolutions,
attention) over its time give the achieved GFLOP/s, next to this machine's fp32 matmul rate
measured in the same run. Several ``--sampling-steps`` are measured side by side (a distilled
student of the same architecture costs what its teacher costs at the student's step count);
``--compile`` measures every row again with the network compiled (``torch.compile``), after
the eager rows, in the same run.
``--modes`` measures the inference modes of ``WorldModel.set_inference`` side by side:
``fp32`` and ``bf16`` (autocast; on a CPU with AMX its matmuls run 3-7x fp32's) and, on a GPU
(``--device cuda``), either with ``+graphs`` (each sampler call replayed as a CUDA graph),
each against the matmul rate of its own dtype, measured right before and after the row's
batched steps (a shared CPU drifts within minutes); ``--loop-max`` caps the
loop-of-single-envs comparison (256 single envs take long to build). The JSON is rewritten after every row, so a run stopped
by a time limit keeps what it measured. ``--text-features`` reads the task texts' sentence
embeddings from a file written here by ``--save-text-features`` (for a machine without the
text encoder's weights: the embeddings are computed once per text at reset, never in a step).
Uses the shipped checkpoint when present, else a randomly initialised tiny model (same
architecture and cost; the JSON says which). Never part of the tests.

    python -m benchmarks.bench_env --device cuda --sizes 1 16 256 --loop-max 16 \
        --modes fp32 bf16 fp32+graphs bf16+graphs --out benchmarks/results/gpu/env_gpu.json
    python -m benchmarks.bench_env --sizes 1 16 --modes fp32 bf16 --compile \
        --out benchmarks/results/env_cpu_bf16.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode

import dexac_env  # noqa: F401
from benchmarks.bench_wm_step import machine_description, matmul_gflops
from dexac_env.defaults import DEFAULT_CHECKPOINT, DEFAULT_STORE
from dexac_env.vector_env import DexACWorldVectorEnv
from dexac_env.world_env import DexACWorldEnv


class StageTimer:
    """Wraps model methods to accumulate wall time per stage. On a GPU it synchronises before
    and after each stage, so a stage's queued kernels count in that stage and not in whichever
    later call waits for them (this slows the profiled run a little)."""

    def __init__(self, model, names=("predict", "decode", "reward", "encode", "encode_semantic")):
        self.totals: dict[str, float] = defaultdict(float)
        self.model, self.originals = model, {}
        sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
        for name in names:
            original = getattr(model, name)
            self.originals[name] = original

            def timed(*args, _original=original, _name=name, **kwargs):
                sync()
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    sync()
                    self.totals[_name] += time.perf_counter() - start

            setattr(model, name, timed)

    def restore(self) -> None:
        for name in self.originals:
            delattr(self.model, name)  # back to the class method


def _model_and_store(tmp: str, checkpoint: str | None = None):
    """The model to time (``checkpoint``, else the shipped default, else a random tiny one),
    the store its env resets from, and the model's description for the JSON."""
    from dexac_env.replay.store import EpisodeStore
    from world_model.config import WorldModelConfig
    from world_model.facade import WorldModel

    if (DEFAULT_STORE / "zarr.json").is_file():
        store = str(DEFAULT_STORE)
    else:
        from tests.test_world_env import make_store

        store = str(make_store(Path(tmp) / "bench.zarr", episodes=4, length=16))
    if checkpoint is not None:  # a candidate timed before it could ship (e.g. E21's patch-1 DiT)
        return WorldModel.from_pretrained(checkpoint), store, checkpoint
    if DEFAULT_CHECKPOINT.is_file():
        return WorldModel.from_pretrained(str(DEFAULT_CHECKPOINT)), store, "shipped checkpoint"
    torch.manual_seed(0)
    stats = EpisodeStore.open(store).action_stats or EpisodeStore.open(store).compute_action_stats(None)
    model = WorldModel(WorldModelConfig.from_size("tiny"), stats.mean, stats.std).eval()
    return model, store, "random tiny (no shipped checkpoint)"


MODES = ("fp32", "bf16", "fp32+graphs", "bf16+graphs")


def mode_kwargs(mode: str, device: str) -> dict:
    """The env keywords of an inference mode (``fp32``, ``bf16``, ``...+graphs``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    precision, _, graphs = mode.partition("+")
    return {"device": device, "precision": precision, "cuda_graphs": graphs == "graphs"}


def bench_batched(model, store, n, obs_mode, steps, sampling_steps, profile=False, flops=None,
                  env_kwargs=None):
    """(env steps/s, time shares, achieved GFLOP/s, FLOPs of one step, seconds of the first
    step: a compiled model's compile time at this batch size); ``flops``: the FLOPs
    of one step when known (a compiled or graphed model's calls cannot be counted; they are
    the eager model's)."""
    env = DexACWorldVectorEnv(n, max_episode_steps=None, checkpoint=model, store=store,
                              obs_mode=obs_mode, sampling_steps=sampling_steps, reward="learned",
                              **(env_kwargs or {}))
    env.reset(seed=0)
    actions = env.core.pose.astype(np.float32)
    start = time.perf_counter()
    env.step(actions)  # warm-up (and compilation, when compiled)
    first_step = time.perf_counter() - start
    if flops is None:
        # the counter cannot see into a CUDA-graph replay: count one eager step
        graphed = bool(env_kwargs and env_kwargs.get("cuda_graphs"))
        if graphed:
            model.set_inference(env_kwargs["precision"], cuda_graphs=False)
        with FlopCounterMode(display=False) as counter:
            env.step(actions)
        flops = counter.get_total_flops()
        if graphed:
            model.set_inference(env_kwargs["precision"], cuda_graphs=True)
            env.step(actions)  # capture again before the timed steps
    flops_per_step = flops
    # On a GPU the profile's synchronisations would slow the timed steps: it gets its own pass.
    separate = model.device.type == "cuda"

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            env.step(actions)
        if separate:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timer = StageTimer(model) if profile and not separate else None
    elapsed = profiled = run()
    if profile and separate:
        timer = StageTimer(model)
        profiled = run()
    stages = None
    if timer is not None:
        timer.restore()
        stages = {k: round(v / profiled, 3) for k, v in timer.totals.items()}
        stages["rest"] = round(1 - sum(stages.values()), 3)
    gflops = flops_per_step * steps / elapsed / 1e9
    return n * steps / elapsed, stages, gflops, flops_per_step, first_step


def bench_loop(model, store, n, obs_mode, steps, sampling_steps, env_kwargs=None):
    envs = [DexACWorldEnv(checkpoint=model, store=store, obs_mode=obs_mode,
                          sampling_steps=sampling_steps, reward="learned", **(env_kwargs or {}))
            for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
        env.step(env.core.pose[0].astype(np.float32))
    actions = [env.core.pose[0].astype(np.float32) for env in envs]
    start = time.perf_counter()
    for _ in range(steps):
        for env, action in zip(envs, actions, strict=True):
            env.step(action)
    return n * steps / (time.perf_counter() - start)


def bench_sim(steps: int) -> float | None:
    try:
        from dexac_env.sim.env import DexACSimEnv
    except ImportError:
        return None
    env = DexACSimEnv(task="push", resolution=64)
    obs, _ = env.reset(seed=0)
    action = obs["proprio"]
    env.step(action)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(action)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def _compare(model, store, n, obs_mode, steps, sampling_steps, matmul, flops=None,
             mode="fp32", device="cpu", loop=True) -> dict:
    """One row: n envs batched vs a loop of n single envs (when ``loop``), and the batched
    step's GFLOP/s against the matmul rate of the mode's dtype."""
    kwargs = mode_kwargs(mode, device)
    dtype = mode.partition("+")[0]
    # the matmul rate right before and after the batched steps: a shared CPU's speed drifts
    # within minutes (E24 saw 160-260 GFLOP/s fp32 in one hour), so each row is read against
    # the rate of its own minute, not only the run's
    before = _row_rate(model.device, dtype)
    batched, stages, gflops, flops, first_step = bench_batched(
        model, store, n, obs_mode, steps, sampling_steps, obs_mode == "rgb", flops, kwargs
    )
    after = _row_rate(model.device, dtype)
    looped = bench_loop(model, store, n, obs_mode, steps, sampling_steps, kwargs) if loop else None
    rate = (before + after) / 2
    return {
        "compiled": False,
        "mode": mode,
        "flops_per_batched_step": flops,
        "sampling_steps": sampling_steps,
        "obs_mode": obs_mode,
        "num_envs": n,
        "batched_env_steps_per_s": round(batched, 1),
        "batched_first_step_s": round(first_step, 2),
        "loop_env_steps_per_s": None if looped is None else round(looped, 1),
        "speedup": None if looped is None else round(batched / looped, 2),
        "batched_gflops": round(gflops, 1),
        "fraction_of_matmul": round(gflops / rate, 3),
        "row_matmul_gflops": {"before": round(before, 1), "after": round(after, 1)},
        "fraction_of_run_matmul": round(gflops / max(matmul[dtype].values()), 3),
        "time_share_batched": stages,
    }


def _row_rate(device: torch.device, dtype: str) -> float:
    """This minute's square-matmul GFLOP/s in ``dtype`` (``fp32``/``bf16``): the best of the
    two largest sizes ``matmul_rates`` uses (a second or two on a CPU)."""
    sizes = (4096, 8192) if device.type == "cuda" else (1024, 2048)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    return max(matmul_gflops(device, sizes, dtype=torch_dtype).values())


def matmul_rates(device: torch.device, modes: list[str]) -> dict:
    """Square-matmul GFLOP/s per size, for fp32 and (when a mode uses it) bf16. On a GPU the
    sizes are large enough to reach its rate."""
    sizes = (2048, 4096, 8192) if device.type == "cuda" else (512, 1024, 2048)
    rates = {"fp32": matmul_gflops(device, sizes)}
    if any(m.startswith("bf16") for m in modes):
        rates["bf16"] = matmul_gflops(device, sizes, dtype=torch.bfloat16)
    return rates


def save_text_features(path: str) -> None:
    """Write the shipped model's sentence embedding of every task text of the default store."""
    from dexac_env.replay.store import EpisodeStore
    from world_model.facade import WorldModel

    model = WorldModel.from_pretrained(str(DEFAULT_CHECKPOINT))
    store = EpisodeStore.open(str(DEFAULT_STORE))
    texts = sorted({store.episode(name).task_text for name in store.episode_names()})
    features = model.semantic_encoder.text_features(texts)[:, 0]  # (n, D)
    # safetensors, keyed by the text: tensors only, nothing unpickled when read back
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({t: f.contiguous() for t, f in zip(texts, features, strict=True)}, path)
    print(f"wrote {len(texts)} text embeddings to {path}")


def load_text_features(model, path: str) -> None:
    """Give the model's text encoder precomputed embeddings (its per-string cache)."""
    model.semantic_encoder.add_text_features(load_file(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    parser.add_argument(
        "--sampling-steps", type=int, nargs="+", default=None, help="default: the model's"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="then the same rows again with the network compiled (WorldModel.compile_network)",
    )
    parser.add_argument("--checkpoint", default=None,
                        help="world-model file to time (default: the shipped default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument(
        "--modes", nargs="+", default=["fp32"], choices=MODES,
        help="inference modes, each measured on every row (graphs: CUDA only)",
    )
    parser.add_argument("--loop-max", type=int, default=None,
                        help="largest env count with the loop comparison (default: all)")
    parser.add_argument("--no-sim", action="store_true", help="skip the simulator's steps/s")
    parser.add_argument("--text-features", default=None,
                        help="file of --save-text-features: the task texts' embeddings")
    parser.add_argument("--save-text-features", default=None, metavar="PATH",
                        help="write the default store's task-text embeddings and exit")
    parser.add_argument("--out", default="benchmarks/results/env.json")
    args = parser.parse_args(argv)
    if args.save_text_features:
        save_text_features(args.save_text_features)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if any(m.endswith("+graphs") for m in args.modes) and device.type != "cuda":
        parser.error("the +graphs modes need --device cuda")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")
    matmul = matmul_rates(device, args.modes)
    loop_max = max(args.sizes) if args.loop_max is None else args.loop_max
    with tempfile.TemporaryDirectory() as tmp:
        model, store, model_kind = _model_and_store(tmp, args.checkpoint)
        model = model.to(device)
        if args.text_features:
            load_text_features(model, args.text_features)
        # inference only: parameters that require grad make the FLOP counter's module
        # tracker hook tensors that have no gradient function
        model.requires_grad_(False)
        all_steps = args.sampling_steps or [model.config.sampler.num_steps]
        frames_per_step = model.config.action_frames
        rows = []

        def write(sim=None) -> None:  # after every row: a stopped run keeps what it measured
            result = {
                "benchmark": "bench_env",
                "model": model_kind,
                "model_size": model.config.size,
                "dit_patch_size": model.config.dit.patch_size,
                "sampling_steps": all_steps,
                "device": _device_name(device),
                "matmul_gflops": matmul,
                "frames_per_env_step": frames_per_step,
                "timed_steps": args.steps,
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": machine_description(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "imagined": rows,
                "simulator_env_steps_per_s": None if sim is None else round(sim, 1),
                "note": "compare rows of one run, not across runs (a shared CPU varies ~3x). "
                        "env steps/s counts every env of the batch; one imagined step covers "
                        f"{frames_per_step} frames (frames_per_step default), one simulator "
                        "step 1 frame. fraction_of_matmul: of the matmul rate of the row's dtype "
                        "measured right before and after its batched steps "
                        "(row_matmul_gflops); fraction_of_run_matmul: of the run's rate "
                        "measured at its start. speedup_vs_fp32_loop: the batched row "
                        "against the eager fp32 loop of the same size (what a user "
                        "would otherwise run)",
            }
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

        eager_flops = {}  # (sampling steps, obs mode, envs) -> FLOPs of one batched step
        fp32_loop = {}  # the same key -> env steps/s of the eager fp32 loop of single envs
        for compiled in (False, True) if args.compile else (False,):
            if compiled:  # in place: every row after this one runs the compiled network
                model.compile_network()
            for sampling_steps in all_steps:
                for obs_mode in ("rgb", "latent"):
                    for n in args.sizes:
                        for mode in args.modes:
                            key = (sampling_steps, obs_mode, n)
                            row = _compare(model, store, n, obs_mode, args.steps, sampling_steps,
                                           matmul, eager_flops.get(key), mode, args.device,
                                           loop=n <= loop_max)
                            eager_flops.setdefault(key, row["flops_per_batched_step"])
                            row = {**row, "compiled": compiled}
                            if not compiled and mode == "fp32":
                                fp32_loop[key] = row["loop_env_steps_per_s"]
                            if fp32_loop.get(key):
                                row["speedup_vs_fp32_loop"] = round(
                                    row["batched_env_steps_per_s"] / fp32_loop[key], 2)
                            rows.append(row)
                            print(json.dumps(rows[-1]), flush=True)
                            write()
        sim = None if args.no_sim else bench_sim(max(args.steps * 4, 20))
        print(f"simulator env steps/s: {sim}")
        write(sim)
    print(f"wrote {args.out}")
    return 0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU"


if __name__ == "__main__":
    raise SystemExit(main())
