"""Cost of one env-sized world-model step: a DiT forward and a full chunk sample.

For each batch size (1 and 16 by default) it times, on an untrained model of the chosen size:

- ``forward``: one DiT evaluation on (context + chunk) latent frames (one sampler step);
- ``sample``: one ``WorldModel.predict`` call (``num_steps`` Euler steps + conditioning);

counts the FLOPs of the same calls with ``torch.utils.flop_counter`` (matmuls and attention;
2 FLOPs per multiply-add), and measures this machine's fp32 matmul rate in the same run, so
achieved GFLOP/s can be read against the ceiling. ``--compile`` times the same calls again
after ``model.dit.compile()`` (TorchInductor; on a CPU it needs a C++ compiler), in the same
run, with the compile time (the first call's extra seconds). Writes JSON; asserts nothing.

    python -m benchmarks.bench_wm_step --size tiny --out benchmarks/results/wm_step_tiny.json
    python -m benchmarks.bench_wm_step --checkpoint dexac_env/assets/dexac_default.safetensors \
        --num-steps 2 --out benchmarks/results/wm_step_default.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from world_model import WorldModel, WorldModelConfig
from world_model.facade import cpu_has_bf16_matmul
from world_model.semantic import SemanticFeatures


def _time(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def machine_description() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` is empty on Linux),
    its core count and whether it multiplies bf16 in hardware: bf16 figures from a CPU with
    AMX and from one without differ by an order of magnitude (E24)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    units = "yes" if cpu_has_bf16_matmul() else "no"
    return f"{name}, {os.cpu_count()} cpus, bf16 matmul units: {units}"


def matmul_gflops(device: torch.device, sizes=(512, 1024, 2048), repeats: int = 5,
                  dtype: torch.dtype = torch.float32) -> dict:
    """Measured square-matmul rate of this machine (fp32 unless ``dtype``), per size, GFLOP/s."""
    rates = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = _time(lambda a=a, b=b: a @ b, repeats, device)
        rates[str(n)] = 2 * n**3 / seconds / 1e9
    return rates


def _calls(model, config, batch: int, steps: int, device: torch.device) -> dict:
    """The two timed calls at one batch size: one DiT forward and one full chunk sample."""
    latent = config.tokenizer.resolution // 8
    c = config.tokenizer.latent_channels
    context = torch.randn(batch, config.context_frames, c, latent, latent, device=device)
    actions = torch.randn(batch, config.action_rows, 57, device=device)
    semantic = None
    if model.semantic_encoder is not None:
        # random features of the encoders' shapes: a rollout encodes its reset frame and
        # text once, outside the step timed here (and MiniLM need not be installed)
        encoder = model.semantic_encoder
        semantic = SemanticFeatures(
            image=torch.randn(batch, encoder.num_tokens - 1, encoder.image_dim, device=device),
            text=torch.randn(batch, 1, encoder.text_dim, device=device),
        )
    frames_in = torch.randn(
        batch, config.context_frames + config.chunk_frames, c, latent, latent, device=device
    )
    sigma = torch.full((batch,), 0.5, device=device)
    with torch.no_grad():
        dit_context = model._context(actions, None, model._semantic_kv(semantic, True))

    def forward():
        with torch.no_grad():
            model.dit(frames_in, sigma, dit_context, config.context_frames)

    def sample():
        model.predict(
            context, actions, semantic, torch.Generator(device).manual_seed(0), num_steps=steps
        )

    return {"forward": forward, "sample": sample}


def _row(name: str, batch: int, steps: int, flops: float, seconds: float) -> dict:
    return {
        "what": name,
        "batch": batch,
        "num_steps": steps if name == "sample" else 1,
        "compiled": False,
        "seconds": seconds,
        "gflop": flops / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
        "ms_per_env": 1e3 * seconds / batch,
    }


def bench(
    size: str,
    variant: str,
    batches: list[int],
    num_steps: int | None,
    repeats: int,
    device: torch.device,
    checkpoint: str | None = None,
    compile_dit: bool = False,
) -> dict:
    torch.manual_seed(0)
    if checkpoint is not None:  # the architecture (and weights) of a trained model
        model = WorldModel.from_pretrained(checkpoint)
        config, size, variant = model.config, checkpoint, model.config.conditioning.variant
    else:
        config = WorldModelConfig.from_size(size, variant=variant)
        model = WorldModel(config, np.zeros(57), np.ones(57))
    model = model.to(device).eval().requires_grad_(False)
    steps = num_steps or config.sampler.num_steps
    latent = config.tokenizer.resolution // 8
    rows = []
    calls = {}
    for batch in batches:
        calls[batch] = _calls(model, config, batch, steps, device)
        for name, fn in calls[batch].items():
            flops = _flops(fn)
            rows.append(_row(name, batch, steps, flops, _time(fn, repeats, device)))
    if compile_dit:
        # in place (state-dict names unchanged); every shape below compiles once, on first call
        model.compile_network()
        for batch in batches:
            for name, fn in calls[batch].items():
                start = time.perf_counter()
                fn()
                first = time.perf_counter() - start
                flops = next(r["gflop"] for r in rows if (r["what"], r["batch"]) == (name, batch))
                row = _row(name, batch, steps, flops * 1e9, _time(fn, repeats, device))
                rows.append({**row, "compiled": True, "compile_s": first - row["seconds"]})
    params = {
        name: sum(p.numel() for p in part.parameters())
        for name, part in (("dit", model.dit), ("conditioner", model.conditioner))
    }
    tokens = (config.context_frames + config.chunk_frames) * (latent // config.dit.patch_size) ** 2
    return {
        "size": size,
        "variant": variant,
        "tokens_per_sample": tokens,
        "parameters": params,
        "semantic": config.semantic.enabled,
        "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--variant", default="dexac")
    parser.add_argument(
        "--checkpoint", default=None, help="a WorldModel file: its architecture instead of --size"
    )
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--num-steps", type=int, default=None, help="default: the size's sampler")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--compile", action="store_true", help="also time the calls with model.dit.compile()"
    )
    parser.add_argument("--out", default="benchmarks/results/wm_step_tiny.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    ceiling = matmul_gflops(device)
    report = bench(
        args.size,
        args.variant,
        [int(b) for b in args.batches.split(",")],
        args.num_steps,
        args.repeats,
        device,
        args.checkpoint,
        args.compile,
    )
    best = max(ceiling.values())
    for row in report["results"]:
        row["fraction_of_matmul_peak"] = row["achieved_gflops"] / best
    report["machine"] = {
        "device": str(device),
        "cpu": machine_description(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_fp32_gflops": ceiling,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    for row in report["results"]:
        print(
            f"{'compiled ' if row['compiled'] else ''}{row['what']:8s} B={row['batch']:3d} steps={row['num_steps']:3d} "
            f"{1e3 * row['seconds']:9.2f} ms  {row['gflop']:8.3f} GFLOP  "
            f"{row['achieved_gflops']:7.1f} GFLOP/s ({100 * row['fraction_of_matmul_peak']:.0f}% "
            f"of matmul {best:.0f})"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
