"""Held-out rollout quality: autoregressive predictions vs the simulator's frames.

For every episode of a split, the first ``context_frames`` frames are encoded and the model
rolls out ``--frames`` frames autoregressively from the episode's own actions (each call
predicts ``chunk_frames`` latent frames; its output becomes the next context). The decoded
prediction of frame ``t`` is compared with the stored frame ``t``: PSNR and SSIM per predicted
frame index and overall. Two references are measured on the same frames in the same run:

- ``vae_reconstruction``: encode -> decode of the true frames (the ceiling the tokenizer sets);
- ``copy_last_context``: repeat the last context frame (what a model that ignores actions and
  predicts no motion would score).

    python training/evaluate_rollouts.py --checkpoint dexac_env/assets/tiny_dexac.safetensors \
        --checkpoint runs/wm_tiny_mlp_global/model.safetensors --store data/sim.zarr --split test \
        --frames 16 --out benchmarks/results/rollout_quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from tqdm import tqdm

from dexac_env.replay.store import EpisodeStore
from world_model import WorldModel
from world_model.metrics import psnr, ssim


def rollout(
    model: WorldModel,
    rgb: np.ndarray,
    actions: np.ndarray,
    text: str,
    frames: int,
    seed: int,
    num_steps: int | None,
) -> np.ndarray:
    """Predict ``frames`` frames after the context; rgb (T, H, W, 3) uint8, actions (T, 57)."""
    cfg = model.config
    context = cfg.context_frames
    if cfg.temporal_compression != 1:
        raise ValueError("this evaluation steps frame-wise latents (kl_tiny tokenizer) only")
    if rgb.shape[0] < context + frames:
        raise ValueError(f"episode has {rgb.shape[0]} frames, need {context + frames}")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        frames_t = torch.from_numpy(rgb[None])  # (1, T, H, W, 3)
        latents = model.encode(frames_t[:, :context])  # (1, context, C, h, w)
        # the last context frame, as in training and in the env
        semantic = model.encode_semantic(frames_t[:, context - 1], [text])
        predicted = []
        t = context  # index of the next frame to predict
        while t < context + frames:
            chunk = torch.from_numpy(actions[None, t - 1 : t + cfg.chunk_frames]).float()
            if chunk.shape[1] < cfg.action_rows:  # past the episode end: hold the last pose
                pad = chunk[:, -1:].expand(1, cfg.action_rows - chunk.shape[1], -1)
                chunk = torch.cat([chunk, pad], dim=1)
            new = model.predict(
                latents[:, -context:], chunk, semantic, generator=generator, num_steps=num_steps
            )  # (1, chunk, C, h, w)
            latents = torch.cat([latents, new], dim=1)
            predicted.append(new)
            t += cfg.chunk_frames
        model.clear_cache()
        decoded = model.decode(torch.cat(predicted, dim=1)[:, :frames])  # (1, frames, H, W, 3)
    return decoded[0].numpy()


def evaluate(
    checkpoint: str,
    store: EpisodeStore,
    split: str,
    frames: int,
    seed: int,
    num_steps: int | None,
    limit: int | None,
) -> dict:
    model = WorldModel.from_pretrained(checkpoint).eval()
    episodes = store.episodes(split)[:limit]
    if not episodes:
        raise ValueError(f"{store.path} has no episodes in split {split!r}")
    context = model.config.context_frames
    scores = {
        name: {"psnr": [], "ssim": []}
        for name in ("model", "vae_reconstruction", "copy_last_context")
    }
    start = time.perf_counter()
    for index, episode in enumerate(tqdm(episodes, desc=Path(checkpoint).stem, leave=False)):
        rgb, actions = episode.read("rgb"), episode.read("action")
        target = rgb[context : context + frames]
        prediction = rollout(
            model,
            rgb,
            actions,
            episode.task_text,
            frames,
            seed + index,
            num_steps,
        )
        with torch.no_grad():
            reconstruction = model.decode(model.encode(torch.from_numpy(target[None])))[0].numpy()
        copy = np.repeat(rgb[context - 1 : context], frames, axis=0)
        for name, frames_hat in (
            ("model", prediction),
            ("vae_reconstruction", reconstruction),
            ("copy_last_context", copy),
        ):
            scores[name]["psnr"].append(psnr(frames_hat, target))
            scores[name]["ssim"].append(ssim(frames_hat, target))
    result = {
        "checkpoint": checkpoint,
        "variant": model.config.conditioning.variant,
        "episodes": len(episodes),
        "seconds": time.perf_counter() - start,
    }
    for name, values in scores.items():
        p, s = np.stack(values["psnr"]), np.stack(values["ssim"])  # (episodes, frames)
        result[name] = {
            "psnr": float(p.mean()),
            "ssim": float(s.mean()),
            "psnr_per_frame": p.mean(0).round(3).tolist(),
            "ssim_per_frame": s.mean(0).round(4).tolist(),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="a world-model .safetensors file (repeat to compare)",
    )
    parser.add_argument("--store", default="data/sim.zarr")
    parser.add_argument("--split", default="test")
    parser.add_argument("--frames", type=int, default=16, help="predicted frames per episode")
    parser.add_argument(
        "--num-steps", type=int, default=None, help="sampler steps (default: config)"
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/rollout_quality.json")
    args = parser.parse_args(argv)
    try:
        store = EpisodeStore.open(args.store)
        results = [
            evaluate(c, store, args.split, args.frames, args.seed, args.num_steps, args.limit)
            for c in args.checkpoint
        ]
    except (ValueError, FileNotFoundError) as exc:
        print(f"evaluate_rollouts: error: {exc}", file=sys.stderr)
        return 2
    print(f"{'checkpoint':<48} {'variant':<11} {'PSNR':>6} {'SSIM':>6}")
    for r in results:
        print(
            f"{r['checkpoint']:<48} {r['variant']:<11} {r['model']['psnr']:6.2f} {r['model']['ssim']:6.3f}"
        )
    for ref in ("vae_reconstruction", "copy_last_context"):
        r = results[0][ref]
        print(f"{'(reference) ' + ref:<60} {r['psnr']:6.2f} {r['ssim']:6.3f}")
    report = {"split": args.split, "frames": args.frames, "store": args.store, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
