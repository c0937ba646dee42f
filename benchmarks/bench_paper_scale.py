"""The paper-scale check: DexAC on the Cosmos-Predict2.5-2B backbone, random weights, one
training step (forward + backward + AdamW) at a given latent size, with activation
checkpointing and bf16 autocast over fp32 weights (what ``configs/wm/paper_2b_cosmos.yaml``
trains with). Records parameters, peak GPU memory and step time with the card's name.

Only the trained part is built: the action conditioner and the backbone (the frozen Wan VAE,
DINOv3 and MiniLM encode pixels and text once, before training, in training/cache_latents.py;
here their outputs are random tensors of the right shapes: 16 latent channels, DINOv3-L 1024-D
image tokens, MiniLM 384-D text). Needs a CUDA GPU for anything but a toy size.

    python -m benchmarks.bench_paper_scale --latent 5,32,32 --batch 4 --out paper_scale.json
    python -m benchmarks.bench_paper_scale --latent 24,88,160 --batch 1     # Cosmos 720p clip
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from world_model import WorldModelConfig
from world_model.backbones import build_backbone
from world_model.conditioning import build_conditioner
from world_model.flow import FlowMatching


def build(size: str, variant: str, latent_frames: int, device: torch.device):
    """(config, conditioner, backbone) of the Cosmos world model of ``size``; the chunk is
    the latent frames after the preset's context."""
    base = WorldModelConfig.from_size(size, variant=variant)
    config = base.replace(
        backbone="cosmos",
        cosmos={"gradient_checkpointing": True},
        chunk_frames=latent_frames - base.context_frames,
    )
    conditioner = build_conditioner(
        config.conditioning,
        num_rows=config.action_rows,
        hidden_dim=config.dit.hidden_dim,
        chunk_frames=config.chunk_frames,
        action_mean=np.zeros(57),
        action_std=np.ones(57),
    )
    backbone = build_backbone(
        config,
        action_token_dim=config.conditioning.token_dim if config.conditioning.uses_local else None,
        semantic_dims=(1024, 384),
        load_weights=False,
    )
    return config, conditioner.to(device), backbone.to(device)


def train_step(config, conditioner, backbone, optimizer, batch: int, latent_hw, device) -> float:
    """One forward + backward + optimizer step; returns the flow loss."""
    c, f = config.context_frames, config.chunk_frames
    channels = config.tokenizer.latent_channels
    h, w = latent_hw
    clean = torch.randn(batch, c + f, channels, h, w, device=device)
    actions = torch.randn(batch, config.action_rows, 57, device=device)
    image = torch.randn(batch, 256, 1024, device=device)  # DINOv3-L tokens of a 256 px frame
    text = torch.randn(batch, 1, 384, device=device)
    flow = FlowMatching(config.flow)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        semantic_kv = backbone.semantic_keys_values(image, text)
        context = backbone.prepare(conditioner(actions, None), semantic_kv, c)

        def velocity_fn(noisy, sigma):
            frames = torch.cat([clean[:, :c], noisy], dim=1)
            return backbone(frames, sigma, context, c)[:, c:].float()

        loss, _ = flow.loss(velocity_fn, clean[:, c:])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="paper-2b")
    parser.add_argument("--variant", default="dexac")
    parser.add_argument("--latent", default="5,32,32", help="latent frames,height,width")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    t, h, w = (int(v) for v in args.latent.split(","))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    start = time.perf_counter()
    with device:  # parameters are created on the GPU (a 2B CPU init takes minutes)
        config, conditioner, backbone = build(args.size, args.variant, t, device)
    build_s = time.perf_counter() - start
    params = [p for m in (conditioner, backbone) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-5, fused=device.type == "cuda")
    tokens = t * (h // config.dit.patch_size) * (w // config.dit.patch_size)
    losses, times = [], []
    for step in range(args.steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        losses.append(train_step(config, conditioner, backbone, optimizer, args.batch, (h, w), device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # step 0 is the warm-up
            times.append(time.perf_counter() - begin)
        print(f"step {step}: loss {losses[-1]:.4f} ({time.perf_counter() - begin:.2f} s)", flush=True)
    result = {
        "size": args.size,
        "variant": args.variant,
        "backbone": "cosmos (diffusers CosmosTransformer3DModel, random weights) + DexAC",
        "precision": "fp32 weights and AdamW state, bf16 autocast, activation checkpointing",
        "latent_thw": [t, h, w],
        "batch": args.batch,
        "tokens_per_sample": tokens,
        "trainable_parameters": sum(p.numel() for p in params),
        "build_s": round(build_s, 2),
        "step_s_median": round(float(np.median(times)), 4) if times else None,
        "step_s_all": [round(x, 4) for x in times],
        "losses": losses,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
