"""Encode a store's frames once with the world model's tokenizer (and semantic encoder) and write
the results into the store, so world-model training never touches pixels.

    python -m training.cache_latents --store data/egodex.zarr \
        --config configs/wm/paper_2b_cosmos.yaml --device cuda
    python -m training.cache_latents --store data/sim.zarr \
        --tokenizer checkpoints/tokenizer_tiny.safetensors \
        --semantic checkpoints/ssl_vit_tiny.safetensors --wm-size tiny

``--config`` names a world-model training config (training/config.py WMRunConfig, the file
train_wm.py trains with): the encoders are that config's ``tokenizer`` / ``semantic`` sections
(e.g. a Wan ``tokenizer.pretrained_dir`` and a DINOv3 ``semantic.image_encoder_dir``), seeded and
built in the order train_wm.build_world_model builds them, with ``model.tokenizer_checkpoint`` /
``model.semantic_checkpoint`` loaded when set. ``--wm-size`` (default tiny) instead takes the
encoders of a size preset with the trained files ``--tokenizer`` / ``--semantic``.

Per episode it writes ``latent`` (T', C, h, w) float32 (normalised latents, ``T' = T`` for the
frame-wise kl_tiny VAE, ``1 + (T - 1) / 4`` for wan, which encodes each episode in one call) and,
with a semantic encoder, ``semantic_image`` (T, S_img, D_img) float16 dense features of every
frame and ``semantic_text`` (1, 1, D_txt) float32, the task description's sentence embedding.
Episodes that already have them are skipped unless ``--overwrite``. All splits are cached.
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

from dexac_env.replay.store import StoreError
from training.components import add_set_argument, load_component, run_main
from training.config import ConfigError, WMRunConfig, load_config
from training.datasets import open_store


def build_encoders(wm_size: str, tokenizer_path: str, semantic_path: str | None):
    """The tokenizer (and semantic encoder) of ``wm_size`` with trained weights loaded."""
    from world_model import WorldModelConfig  # noqa: PLC0415
    from world_model.semantic import SemanticEncoder  # noqa: PLC0415
    from world_model.tokenizer import VideoTokenizer  # noqa: PLC0415

    config = WorldModelConfig.from_size(wm_size)
    tokenizer = VideoTokenizer(config.tokenizer)
    semantic = SemanticEncoder(config.semantic) if semantic_path is not None else None
    return load_encoder_weights(config, tokenizer, semantic, tokenizer_path, semantic_path)


def build_encoders_from_config(run: WMRunConfig):
    """The tokenizer and semantic encoder (None when the branch is off) of ``run``'s world model.

    Seeded with ``trainer.seed`` and built in WorldModel's order, as train_wm.build_world_model
    builds them, so without checkpoints the random-init weights are the ones it trains with.
    """
    from world_model.semantic import SemanticEncoder  # noqa: PLC0415
    from world_model.tokenizer import VideoTokenizer  # noqa: PLC0415

    config = run.world_model_config()
    torch.manual_seed(run.trainer.seed)
    try:
        tokenizer = VideoTokenizer(config.tokenizer)
        semantic = SemanticEncoder(config.semantic) if config.semantic.enabled else None
    except ValueError as exc:  # a Wan / DINOv3 directory that is not there
        raise ConfigError(f"model.overrides: {exc}") from exc
    return load_encoder_weights(
        config, tokenizer, semantic, run.model.tokenizer_checkpoint, run.model.semantic_checkpoint
    )


def load_encoder_weights(config, tokenizer, semantic, tokenizer_path, semantic_path):
    """Load the component files from train_tokenizer.py (None: keep the weights); eval mode."""
    if tokenizer_path:
        load_component(tokenizer_path, "dexac-tokenizer", tokenizer, config.tokenizer.to_dict())
    if semantic_path:
        if semantic is None or not hasattr(semantic, "ssl_vit"):
            raise ConfigError(
                f"a semantic (ssl-vit) checkpoint {semantic_path} is set but the semantic image "
                f"encoder is {config.semantic.image_encoder if semantic else 'off'}"
            )
        load_component(
            semantic_path, "dexac-ssl-vit", semantic.ssl_vit, config.semantic.ssl_vit.to_dict()
        )
    return tokenizer.eval(), semantic.eval() if semantic is not None else None


def check_resolution(store, resolution: int) -> None:
    """Frames must be ``resolution`` square: train_wm.py expects latents of resolution / 8."""
    for episode in store.episodes():
        height, width = episode.shape("rgb")[1:3]
        if (height, width) != (resolution, resolution):
            raise StoreError(
                f"episode {episode.name!r} has {height}x{width} frames, the config's tokenizer "
                f"wants {resolution}x{resolution}; import the store at --resolution {resolution}"
            )


@torch.no_grad()
def encode_episode(
    tokenizer, semantic, rgb: np.ndarray, description: str, batch_frames: int
) -> dict[str, np.ndarray]:
    """rgb uint8 (T, H, W, 3) -> the arrays to cache for one episode (on the tokenizer's device)."""
    frames = torch.from_numpy(rgb).to(tokenizer.latent_mean.device)
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
    arrays = {"latent": latent.cpu().numpy().astype(np.float32)}  # (T', C, h, w)
    if semantic is not None:
        image = torch.cat(
            [
                semantic.image_features(frames[i : i + batch_frames])
                for i in range(0, len(frames), batch_frames)
            ]
        )  # (T, S, D)
        arrays["semantic_image"] = image.cpu().numpy().astype(np.float16)
        arrays["semantic_text"] = semantic.text_features([description]).numpy().astype(np.float32)
    return arrays


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="episode store to read and write")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config", default=None, help="world-model training config (YAML) naming the encoders"
    )
    source.add_argument(
        "--wm-size", default=None, help="world-model size the encoders belong to (default tiny)"
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer file from train_tokenizer.py")
    parser.add_argument("--semantic", default=None, help="ssl-vit file from train_tokenizer.py")
    add_set_argument(
        parser,
        "override a --config entry, e.g. --set model.overrides.tokenizer.pretrained_dir=DIR",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="device of the encoders (default: cuda if available, else cpu)",
    )
    parser.add_argument("--batch-frames", type=int, default=32, help="frames per encoder call")
    parser.add_argument("--overwrite", action="store_true", help="re-encode cached episodes")
    args = parser.parse_args(argv)
    if args.config is not None and (args.tokenizer or args.semantic):
        parser.error(
            "with --config the weights are the config's model.tokenizer_checkpoint / "
            "model.semantic_checkpoint; drop --tokenizer / --semantic"
        )
    if args.config is None and args.tokenizer is None:
        parser.error("--tokenizer is required without --config")
    if args.config is None and args.overrides:
        parser.error("--set overrides entries of --config")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is visible")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.config is not None:
        run = load_config(WMRunConfig, args.config, args.overrides)
        tokenizer, semantic = build_encoders_from_config(run)
    else:
        tokenizer, semantic = build_encoders(args.wm_size or "tiny", args.tokenizer, args.semantic)
    tokenizer.to(args.device)
    if semantic is not None:
        semantic.to(args.device)
    store = open_store(args.store, mode="a")
    if args.config is not None:
        check_resolution(store, tokenizer.config.resolution)
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
