"""Our DiT against diffusers' Cosmos transformer (both with DexAC) at the same size.

For each backbone ("dexac_dit", "cosmos") it builds the world model of one size preset with
the same width, depth, heads, patch, AdaLN-LoRA rank and conditioning variant, and times, on a
training-sized batch:

- ``train_step``: ``WorldModel.loss`` forward + backward (what training pays per micro-step);
- ``forward``: one backbone evaluation without gradients (one sampler step of a rollout).

The backbones are timed in alternation (repeat r runs both) so drift of a shared machine hits
both alike; FLOPs come from ``torch.utils.flop_counter``; the fp32 matmul rate is measured in
the same run, before and after. Writes JSON; asserts nothing.

    python -m benchmarks.bench_backbones --size tiny --out benchmarks/results/backbones.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from benchmarks.bench_wm_step import _flops, matmul_gflops
from world_model import WorldModel, WorldModelConfig
from world_model.backbones import BACKBONES


def _build(size: str, variant: str, backbone: str, device: torch.device) -> WorldModel:
    torch.manual_seed(0)
    config = WorldModelConfig.from_size(
        size, variant=variant, backbone=backbone, semantic={"enabled": False}
    )
    return WorldModel(config, np.zeros(57), np.ones(57)).to(device)


def _batch(config: WorldModelConfig, batch: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    side, c = config.tokenizer.resolution // 8, config.tokenizer.latent_channels

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    return {
        "context_latents": randn(batch, config.context_frames, c, side, side),
        "target_latents": randn(batch, config.chunk_frames, c, side, side),
        "actions": randn(batch, config.action_rows, 57),
    }


def _calls(model: WorldModel, batch: dict) -> dict:
    """The two timed calls of one backbone, as zero-argument functions."""
    cfg = model.config
    frames = torch.cat([batch["context_latents"], batch["target_latents"]], dim=1)
    sigma = torch.full((frames.shape[0],), 0.5, device=frames.device)

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        loss, _ = model.loss(batch)
        loss.backward()

    def forward():  # timed under no_grad; FLOPs counted with grad on (flop_counter's
        model.eval()  # module tracker fails on no-grad calls), the count is the same
        context = model._context(batch["actions"], None, None)
        model.dit(frames, sigma, context, cfg.context_frames)

    return {"train_step": train_step, "forward": forward}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(size: str, variant: str, batch_size: int, repeats: int, device: torch.device) -> dict:
    models = {name: _build(size, variant, name, device) for name in BACKBONES}
    batch = _batch(next(iter(models.values())).config, batch_size, device)
    calls = {name: _calls(model, batch) for name, model in models.items()}
    times = {name: {call: [] for call in fns} for name, fns in calls.items()}
    for fns in calls.values():  # warm-up
        for fn in fns.values():
            fn()
    for model in models.values():
        model.zero_grad(set_to_none=True)
    for _ in range(repeats):  # alternate backbones within each repeat
        for name, fns in calls.items():
            for call, fn in fns.items():
                _sync(device)
                start = time.perf_counter()
                with torch.set_grad_enabled(call == "train_step"):
                    fn()
                _sync(device)
                times[name][call].append(time.perf_counter() - start)
    results = {}
    for name, fns in calls.items():
        row = {"parameters": sum(p.numel() for p in models[name].dit.parameters())}
        for call, fn in fns.items():
            seconds, flops = float(np.median(times[name][call])), _flops(fn)
            row[call] = {
                "ms": round(1e3 * seconds, 2),
                "gflop": round(flops / 1e9, 3),
                "achieved_gflops": round(flops / seconds / 1e9, 1),
            }
        results[name] = row
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--variant", default="dexac")
    parser.add_argument("--batch", type=int, default=16, help="samples per call")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/backbones.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    matmul_before = matmul_gflops(device)
    results = bench(args.size, args.variant, args.batch, args.repeats, device)
    report = {
        "benchmark": "bench_backbones",
        "command": "python -m benchmarks.bench_backbones "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "size": args.size,
        "variant": args.variant,
        "batch": args.batch,
        "repeats": args.repeats,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "fp32_matmul_gflops_before": {k: round(v, 1) for k, v in matmul_before.items()},
        "fp32_matmul_gflops_after": {k: round(v, 1) for k, v in matmul_gflops(device).items()},
        "loadavg_1min": os.getloadavg()[0],
        "backbones": results,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
