"""Train the world model's perception parts on the store's frames: the VAE tokenizer or the
ssl-vit-tiny semantic image encoder.

    python training/train_tokenizer.py --config configs/tokenizer/tiny_vae.yaml
    python training/train_tokenizer.py --config configs/tokenizer/tiny_ssl_vit.yaml
    deepspeed --num_gpus 2 training/train_tokenizer.py --config configs/tokenizer/tiny_vae.yaml \
        --deepspeed_config configs/deepspeed/zero2_fp32.json

Same trainer, engines, checkpoints and ``--resume`` as ``train_wm.py``. At the end rank 0
loads the final checkpoint's fp32 weights, fits the VAE's per-channel latent statistics on
``model.latent_stats_frames`` frames, and writes ``output`` (one safetensors file with its
config), which ``cache_latents.py`` and ``train_wm.py`` read. The reward head is trained with the
world model (its loss is part of ``WorldModel.loss``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # script form (deepspeed needs it): see training/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

from dexac_env.replay.store import StoreError
from training.components import (
    engine_overrides,
    entry_parser,
    load_component,
    run_main,
    save_component,
)
from training.config import (
    ConfigError,
    TokenizerModelConfig,
    TokenizerRunConfig,
    load_config,
    to_dict,
)
from training.datasets import ClipDataset
from training.engine import load_fp32_state_dict
from training.trainer import Trainer


def build_model(config: TokenizerRunConfig) -> tuple[nn.Module, dict]:
    """The model to train and its config dict, from the ``wm_size`` preset plus overrides."""
    from world_model import WorldModelConfig  # noqa: PLC0415
    from world_model.ssl_vit import SSLViT  # noqa: PLC0415
    from world_model.tokenizer import VideoTokenizer  # noqa: PLC0415

    preset = WorldModelConfig.from_size(config.model.wm_size)
    try:
        if config.model.kind == "vae":
            tok = dataclasses.replace(preset.tokenizer, **config.model.overrides)
            return VideoTokenizer(tok), tok.to_dict()
        ssl = dataclasses.replace(preset.semantic.ssl_vit, **config.model.overrides)
        return SSLViT(ssl), ssl.to_dict()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.overrides: {exc}") from exc


def vae_loss_fn(config: TokenizerModelConfig):
    """The VAE's ``(model, batch) -> (loss, logs)``: ``hue_augment`` of the frames turned to a
    random hue first, then ``VideoTokenizer.loss`` with the config's worst-pixel term."""
    from world_model.object_locator import rotate_hue  # noqa: PLC0415

    def vae_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        frames = batch["frames"]  # (B, T, H, W, 3) uint8
        if config.hue_augment > 0:
            b = frames.shape[0]
            turned = torch.rand(b, device=frames.device) < config.hue_augment
            angle = torch.rand(b, device=frames.device) * 2 * math.pi * turned
            frames = (rotate_hue(frames.float() / 255.0, angle) * 255.0).round().to(torch.uint8)
        return model.loss(frames, config.hard_pixel_weight, config.hard_pixel_fraction)

    return vae_loss


def ssl_vit_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    return model.loss(batch["frames"][:, 0])  # (B, H, W, 3) uint8: the first frame of a clip


def fit_latent_stats(model: nn.Module, dataset: ClipDataset, frames: int, seed: int) -> None:
    """Set the tokenizer's latent mean/std from ``frames`` clips drawn with ``seed``."""
    count = min(frames, len(dataset))
    picks = np.random.default_rng([seed, 1]).choice(len(dataset), size=count, replace=False)
    clips = torch.stack([dataset[int(i)]["frames"] for i in picks])  # (N, T, H, W, 3)
    model.eval()
    with torch.no_grad():
        model.compute_latent_stats(clips)


def main(argv: list[str] | None = None) -> int:
    args = entry_parser(__doc__.splitlines()[0], "configs/tokenizer/tiny_vae.yaml").parse_args(argv)
    config = load_config(TokenizerRunConfig, args.config, engine_overrides(args))
    torch.manual_seed(config.trainer.seed)
    model, model_config = build_model(config)
    dataset = ClipDataset(
        config.data.store, config.data.split, config.data.clip_frames, config.data.clip_stride
    )
    height = dataset[0]["frames"].shape[1]
    if height != model_config.get("resolution", model_config.get("image_size")):
        raise StoreError(
            f"store frames are {height} px, the {config.model.kind} config expects "
            f"{model_config.get('resolution', model_config.get('image_size'))} px"
        )
    kind = config.model.kind
    if config.model.init_checkpoint:  # a fine-tune: the file's weights, its config checked
        load_component(config.model.init_checkpoint, "dexac-tokenizer", model, model_config)
    momentum = config.model.teacher_momentum
    trainer = Trainer(
        model,
        dataset,
        config.trainer,
        {"run": to_dict(config), "model_config": model_config},
        loss_fn=vae_loss_fn(config.model) if kind == "vae" else ssl_vit_loss,
        after_step=None if kind == "vae" else (lambda m, step: m.update_teacher(momentum)),
    )
    trainer.fit(resume=args.resume)
    if trainer.engine.rank == 0:
        final, _ = build_model(config)
        final.load_state_dict(load_fp32_state_dict(Path(config.trainer.out_dir) / "checkpoints"))
        if kind == "vae":
            fit_latent_stats(final, dataset, config.model.latent_stats_frames, config.trainer.seed)
        fmt = "dexac-tokenizer" if kind == "vae" else "dexac-ssl-vit"
        path = save_component(
            config.output, final, fmt, model_config, extra={"run_config": to_dict(config)}
        )
        print(f"  wrote {path}", flush=True)
    trainer.engine.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
