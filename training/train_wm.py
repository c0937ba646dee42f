"""Train a DexAC world model on cached latents.

    deepspeed --num_gpus 2 training/train_wm.py --config configs/wm/tiny.yaml   # DeepSpeed ranks
    python training/train_wm.py --config configs/wm/tiny.yaml                  # one process

The engine follows the config: ``trainer.deepspeed_config`` (or ``--deepspeed_config``) names a
DeepSpeed JSON -> DeepSpeed (a bare ``python`` run becomes a one-rank DeepSpeed world);
none (or ``--no-deepspeed``) -> plain PyTorch. The store must hold latents cached by
``training/cache_latents.py`` with the tokenizer named in ``model.tokenizer_checkpoint``
(``data.store`` may instead name a training pack of such a store: training/latent_pack.py). At the
end rank 0 exports ``<out_dir>/model.safetensors`` (``WorldModel.from_pretrained`` loads it).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # script form (deepspeed needs it): see training/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import ConcatDataset

from training.components import engine_overrides, entry_parser, load_component, run_main
from training.config import ConfigError, WindowDataConfig, WMRunConfig, load_config, to_dict
from training.datasets import LatentWindowDataset, open_store
from training.export import export_world_model
from training.latent_pack import PackedWindowDataset, is_pack, read_pack_stats
from training.own_rollout import own_rollout_loss, window_chunks
from training.trainer import Trainer


def build_world_model(config: WMRunConfig, action_mean, action_std):
    """The WorldModel of ``config`` with its trained tokenizer / ssl-vit loaded and frozen."""
    from world_model import WorldModel  # noqa: PLC0415

    wm_config = config.world_model_config()
    model = WorldModel(wm_config, action_mean, action_std)
    if config.model.init_checkpoint:  # first: the named parts below win over the file's copies
        start_from_checkpoint(model, config.model.init_checkpoint)
    # the tokenizer named here is the one the training latents were cached with
    if config.model.tokenizer_checkpoint:
        load_component(
            config.model.tokenizer_checkpoint,
            "dexac-tokenizer",
            model.tokenizer,
            wm_config.tokenizer.to_dict(),
        )
    if config.model.semantic_checkpoint:
        if model.semantic_encoder is None or not hasattr(model.semantic_encoder, "ssl_vit"):
            raise ConfigError(
                "model.semantic_checkpoint is set but the model has no ssl-vit encoder"
            )
        load_component(
            config.model.semantic_checkpoint,
            "dexac-ssl-vit",
            model.semantic_encoder.ssl_vit,
            wm_config.semantic.ssl_vit.to_dict(),
        )
    # pixels were encoded once by cache_latents.py: the perception parts are not trained here
    for part in (model.tokenizer, model.semantic_encoder):
        if part is not None:
            part.requires_grad_(False)
    return model


def start_from_checkpoint(model, path: str) -> None:
    """Copy every tensor of the WorldModel file ``path`` into ``model`` (float32); tensors the
    file lacks keep their init and are printed. A tensor the model lacks, or of another shape,
    is a ConfigError: the file is not a smaller version of this model. A file whose DiT patch is
    a multiple of this model's starts it through :func:`world_model.repatch.repatch_state_dict`."""
    from world_model import WorldModel  # noqa: PLC0415
    from world_model.repatch import repatch_state_dict  # noqa: PLC0415

    if not Path(path).is_file():
        raise ConfigError(f"model.init_checkpoint {path} does not exist")
    source_model = WorldModel.from_pretrained(path).float()
    source = source_model.state_dict()
    old, new = source_model.config.dit.patch_size, model.config.dit.patch_size
    if old != new:  # a finer patch from a coarser one: the three patch layers are converted
        prior = source_model.dit.keypoint_prior
        try:
            source = repatch_state_dict(source, model.config.tokenizer.latent_channels, old, new,
                                        prior[0] if prior else None, prefix="dit.")
        except ValueError as error:  # repatch's own check: old a multiple of new
            raise ConfigError(f"model.init_checkpoint {path}: {error}") from error
        print(f"  init from patch {old} to patch {new} (world_model/repatch.py)", flush=True)
    target = model.state_dict()
    wrong = [k for k, v in source.items() if k not in target or target[k].shape != v.shape]
    if wrong:
        raise ConfigError(
            f"model.init_checkpoint {path} does not fit this model: {len(wrong)} tensors are "
            f"missing from it or differ in shape, e.g. {wrong[:5]}"
        )
    missing, _ = model.load_state_dict(source, strict=False)
    print(f"  init from {path}; kept their init: {missing or 'none'}", flush=True)


def open_windows(data: WindowDataConfig, wm, chunks: int = 1):
    """The training windows of ``data`` (a store with cached latents, or its pack, and those of
    ``data.also_stores`` after it) shaped for the world-model config ``wm``: its context, then
    ``chunks`` of its predicted chunks (more than one for training on its own rollouts)."""
    parts = [_store_windows(path, data, wm, chunks) for path in (data.store, *data.also_stores)]
    return parts[0] if len(parts) == 1 else _JoinedWindows(parts)


class _JoinedWindows(ConcatDataset):
    """Windows of several stores in a row; ``_index`` is the index in the joined set (each
    part's own would repeat across parts in the trainer's per-step sample log)."""

    def __getitem__(self, index: int) -> dict:
        return {**super().__getitem__(index), "_index": int(index)}


def _store_windows(path: str, data: WindowDataConfig, wm, chunks: int):
    window_dataset = PackedWindowDataset if is_pack(path) else LatentWindowDataset
    return window_dataset(
        path,
        data.split,
        wm.context_frames,
        wm.chunk_frames * chunks,
        temporal_compression=wm.temporal_compression,
        stride=data.window_stride,
        semantic=wm.semantic.enabled,
        semantic_frame=data.semantic_frame,
        latent_shape=(
            wm.tokenizer.latent_channels,
            wm.tokenizer.resolution // 8,
            wm.tokenizer.resolution // 8,
        ),
    )


def world_model_run_config(config, model_config, action_mean, action_std) -> dict:
    """What a world-model run saves (and export.py reads): the run's config, the model's
    config and the action statistics it normalises with."""
    return {
        "run": to_dict(config),
        "world_model": model_config.to_dict(),
        "action_stats": {
            "mean": list(map(float, action_mean)),
            "std": list(map(float, action_std)),
        },
    }


def fit_and_export(trainer: Trainer, resume: bool) -> None:
    """Train (continuing the newest checkpoint if ``resume``); rank 0 then writes
    ``<out_dir>/model.safetensors``."""
    trainer.fit(resume=resume)
    if trainer.engine.rank == 0:
        path = export_world_model(trainer.config.out_dir)
        print(f"  exported {path}", flush=True)
    trainer.engine.barrier()


def main(argv: list[str] | None = None) -> int:
    args = entry_parser(__doc__.splitlines()[0], "configs/wm/tiny.yaml").parse_args(argv)
    config = load_config(WMRunConfig, args.config, engine_overrides(args))
    if is_pack(config.data.store):  # a training pack carries its store's action statistics
        stats = read_pack_stats(config.data.store)
    else:
        store = open_store(config.data.store)
        stats = store.action_stats or store.compute_action_stats("train")
    torch.manual_seed(config.trainer.seed)  # identical init on every rank
    model = build_world_model(config, stats.mean, stats.std)
    dataset = open_windows(config.data, model.config, window_chunks(config.rollout))
    run_config = world_model_run_config(config, model.config, stats.mean, stats.std)
    loss_fn = own_rollout_loss(config.rollout) if config.rollout.chunks > 0 else None
    trainer = Trainer(model, dataset, config.trainer, run_config, loss_fn=loss_fn)
    fit_and_export(trainer, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
