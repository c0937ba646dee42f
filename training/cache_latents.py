"""Encode a store's frames once with the trained tokenizer (and semantic encoder) and write the
results into the store, so world-model training never touches pixels.

    python training/cache_latents.py --store data/sim.zarr \
        --tokenizer checkpoints/tokenizer_tiny.safetensors \
        --semantic checkpoints/ssl_vit_tiny.safetensors --wm-size tiny

Per episode it writes ``latent`` (T', C, h, w) float32 (normalised latents, ``T' = T`` for the
frame-wise kl_tiny VAE, ``1 + (T - 1) / 4`` for wan, which encodes each episode in one call) and,
with ``--semantic``, ``semantic_image`` (T, S_img, D_img) float16 dense features of every frame
and ``semantic_text`` (1, 1, D_txt) float32, the task description's sentence embedding. Episodes
that already have them are skipped unless ``--overwrite``. All splits are cached.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # script form (deepspeed needs it): see training/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from training.components import load_component, run_main
from training.datasets import open_store


def build_encoders(wm_size: str, tokenizer_path: str, semantic_path: str | None):
    """The tokenizer (and semantic encoder) of ``wm_size`` with trained weights loaded."""
    from world_model import WorldModelConfig  # noqa: PLC0415
    from world_model.semantic import SemanticEncoder  # noqa: PLC0415
    from world_model.tokenizer import VideoTokenizer  # noqa: PLC0415

    config = WorldModelConfig.from_size(wm_size)
    tokenizer = VideoTokenizer(config.tokenizer)
    load_component(tokenizer_path, "dexac-tokenizer", tokenizer, config.tokenizer.to_dict())
    semantic = None
    if semantic_path is not None:
        semantic = SemanticEncoder(config.semantic)
        load_component(
            semantic_path, "dexac-ssl-vit", semantic.ssl_vit, config.semantic.ssl_vit.to_dict()
        )
        semantic.eval()
    return tokenizer.eval(), semantic


@torch.no_grad()
def encode_episode(
    tokenizer, semantic, rgb: np.ndarray, description: str, batch_frames: int
) -> dict[str, np.ndarray]:
    """rgb uint8 (T, H, W, 3) -> the arrays to cache for one episode."""
    frames = torch.from_numpy(rgb)
    if tokenizer.temporal_compression > 1:  # causal video VAE: the whole episode at once
        usable = (
            1 + (len(frames) - 1) // tokenizer.temporal_compression * tokenizer.temporal_compression
        )
        latent = tokenizer.encode(frames[None, :usable])[0]
    else:  # frame-wise: any batching gives the same latents
        latent = torch.cat(
            [
                tokenizer.encode(frames[None, i : i + batch_frames])[0]
                for i in range(0, len(frames), batch_frames)
            ]
        )
    arrays = {"latent": latent.numpy().astype(np.float32)}  # (T', C, h, w)
    if semantic is not None:
        image = torch.cat(
            [
                semantic.image_features(frames[i : i + batch_frames])
                for i in range(0, len(frames), batch_frames)
            ]
        )  # (T, S, D)
        arrays["semantic_image"] = image.numpy().astype(np.float16)
        arrays["semantic_text"] = semantic.text_features([description]).numpy().astype(np.float32)
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="episode store to read and write")
    parser.add_argument("--tokenizer", required=True, help="tokenizer file from train_tokenizer.py")
    parser.add_argument("--semantic", default=None, help="ssl-vit file from train_tokenizer.py")
    parser.add_argument("--wm-size", default="tiny", help="world-model size the encoders belong to")
    parser.add_argument("--batch-frames", type=int, default=32, help="frames per encoder call")
    parser.add_argument("--overwrite", action="store_true", help="re-encode cached episodes")
    args = parser.parse_args(argv)
    tokenizer, semantic = build_encoders(args.wm_size, args.tokenizer, args.semantic)
    store = open_store(args.store, mode="a")
    wanted = ["latent"] + (["semantic_image", "semantic_text"] if semantic is not None else [])
    start, done, skipped = time.perf_counter(), 0, 0
    for episode in store.episodes():
        if not args.overwrite and all(k in episode.keys() for k in wanted):
            skipped += 1
            continue
        arrays = encode_episode(
            tokenizer,
            semantic,
            episode.read("rgb"),
            episode.task_text,
            args.batch_frames,
        )
        for key, value in arrays.items():
            store.write_array(episode.name, key, value)
        done += 1
    print(
        f"cached {done} episodes ({skipped} already cached) in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
