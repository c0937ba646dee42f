"""Train the object locator a planner reads real frames with (world_model/object_locator.py).

    python -m training.train_locator --config configs/locator/touch.yaml
    python -m training.train_locator --config configs/locator/touch.yaml --resume

Data: frames of the stores' touch episodes (every ``data.frame_stride``-th frame up to
``data.last_frame``: the scripted touch has not moved the object yet), each with its task
text's colour (XKCD's RGB for the colour word, :func:`world_model.object_locator.colour_of`)
and, as the target, the named object's start centre in that frame's camera frame (recovered
by a simulator reset, :func:`dexac_env.sim.generate.named_object_start`, and moved into the
camera that the stored ``action`` row puts there) and its mean half extent. The ``test`` split
holds object colours no training frame shows. At the end the locator is written to
``output`` with its errors on ``data.eval_splits`` and the table's up normal (fitted to the
training places: a planner's "above", agents/contact.py) inside it and in a ``.json`` beside it.

``data.redraw_with`` (a world model) with ``model.redraw_fraction`` > 0 also trains on that
model's tokenizer's drawings of the frames (after their hue turn: the tokenizer's own colour
shifts are learned), for a locator that reads imagined frames (``--contact-source imagined``);
every eval split is then scored on its drawn frames too (``<split>_redrawn``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from training.components import engine_overrides, entry_parser, run_main
from training.config import ConfigError, TrainerConfig, load_config, to_dict
from training.datasets import open_store
from training.engine import load_fp32_state_dict
from training.trainer import Trainer
from world_model.object_locator import LocatorConfig, table_up

TOUCH_RADIUS_CM = 1.3  # the simulator's touch test (dexac_env.sim.tasks.TOUCH_RADIUS)


@dataclass(frozen=True)
class LocatorDataConfig:
    """Frames the locator learns from.

    Attributes:
        stores: simulator episode stores; only their touch episodes are read.
        split: training split; eval_splits: the splits scored at the end.
        frame_stride: every how many frames of an episode one is taken.
        last_frame: frames after this index are skipped (the object may have moved).
        cache: directory for the gathered arrays (one ``.npz`` per store and split).
        redraw_with: the world model whose tokenizer redraws frames (``model.redraw_fraction``
            of the training frames, and every eval split scored again on its redrawn frames):
            a checkpoint path, or "default" for the shipped one; None: no redrawing.
    """

    stores: tuple[str, ...] = ("data/sim_touch.zarr",)
    split: str = "train"
    eval_splits: tuple[str, ...] = ("val", "test")
    frame_stride: int = 3
    last_frame: int = 24
    cache: str | None = None
    redraw_with: str | None = None


@dataclass(frozen=True)
class LocatorRunConfig:
    """``model``: the locator's config; its ``image_size`` and ``camera`` are the data's."""

    model: LocatorConfig = field(default_factory=LocatorConfig)
    data: LocatorDataConfig = field(default_factory=LocatorDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    output: str = "checkpoints/object_locator.safetensors"

    def __post_init__(self) -> None:
        if self.model.redraw_fraction > 0 and self.data.redraw_with is None:
            raise ConfigError("model.redraw_fraction > 0 needs data.redraw_with (a world model)")


class LocatorFrames(Dataset):
    """In-memory ``{"frames", "colours", "centre", "radius"}`` rows."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(arrays[k]))
                       for k in ("frames", "colours", "centre", "radius")}

    def __len__(self) -> int:
        return len(self.arrays["radius"])

    def __getitem__(self, index: int) -> dict:
        return {k: v[index] for k, v in self.arrays.items()} | {"_index": index}


def gather(path: str, split: str, data: LocatorDataConfig) -> dict[str, np.ndarray]:
    """The rows of one store's split (see the module docstring), plus ``intrinsics`` (3, 3)."""
    from dexac_env.sim.generate import named_object_radius, named_object_start  # noqa: PLC0415
    from world_model.keypoint_prior import to_camera  # noqa: PLC0415
    from world_model.object_locator import colour_of  # noqa: PLC0415

    rows: dict[str, list] = {k: [] for k in ("frames", "colours", "centre", "radius")}
    intrinsics = None
    episodes = [e for e in open_store(path).episodes(split) if e.attrs.get("task") == "touch"]
    for e in tqdm(episodes, desc=f"{Path(path).name} {split}", unit="episode"):
        colour = colour_of(e.attrs["description"])
        if colour is None:
            raise ConfigError(f"{path}: {e.name}'s text names no colour: {e.attrs['description']!r}")
        last = min(e.length, data.last_frame + 1)
        index = np.arange(0, last, data.frame_stride)
        actions = torch.from_numpy(e.read("action", 0, last)[index].astype(np.float32))
        place = torch.from_numpy(named_object_start(e.attrs))
        centre = to_camera(place.expand(len(index), 1, 3), actions)[:, 0]  # (n, 3)
        rows["frames"].append(e.read("rgb", 0, last)[index])
        rows["colours"].append(np.tile(np.float32(colour), (len(index), 1)))
        rows["centre"].append(centre.numpy().astype(np.float32))
        rows["radius"].append(np.full(len(index), named_object_radius(e.attrs), np.float32))
        intrinsics = np.asarray(e.attrs["intrinsics"], np.float64)
    if not episodes:
        raise ConfigError(f"{path} has no touch episode in split {split!r}")
    return {k: np.concatenate(v) for k, v in rows.items()} | {"intrinsics": intrinsics}


def gathered(data: LocatorDataConfig, split: str) -> dict[str, np.ndarray]:
    """:func:`gather` over every store, cached under ``data.cache``."""
    parts = []
    for path in data.stores:
        cache = None if data.cache is None else Path(data.cache) / (
            f"{Path(path).stem}_{split}_s{data.frame_stride}_l{data.last_frame}.npz")
        if cache is not None and cache.is_file():
            parts.append(dict(np.load(cache)))
            continue
        arrays = gather(path, split, data)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **arrays)
        parts.append(arrays)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "intrinsics"}
    return out | {"intrinsics": parts[0]["intrinsics"]}


def locate_errors(locator: Any, arrays: dict[str, np.ndarray], batch: int = 512) -> dict[str, float]:
    """The located centre's error (cm): median, mean, share within the touch radius and
    within 2 cm; the radius's mean absolute error (cm)."""
    errors, radius_errors = [], []
    with torch.no_grad():
        for start in range(0, len(arrays["radius"]), batch):
            frames = torch.from_numpy(arrays["frames"][start:start + batch])
            colours = torch.from_numpy(arrays["colours"][start:start + batch])
            centre, radius, _ = locator(frames, colours)
            truth = torch.from_numpy(arrays["centre"][start:start + batch])
            errors.append(100 * torch.linalg.vector_norm(centre - truth, dim=-1).numpy())
            radius_errors.append(100 * np.abs(
                radius.numpy() - arrays["radius"][start:start + batch]))
    e = np.concatenate(errors)
    return {"frames": int(len(e)), "median_cm": float(np.median(e)), "mean_cm": float(e.mean()),
            f"within_{TOUCH_RADIUS_CM}cm": float((e <= TOUCH_RADIUS_CM).mean()),
            "within_2cm": float((e <= 2.0).mean()),
            "radius_mae_cm": float(np.concatenate(radius_errors).mean())}


def tokenizer_redraw(checkpoint: str):
    """frames (B, H, W, 3) float [0, 1] -> the world model's tokenizer's drawing of them
    (encode then decode), float [0, 1]; ``checkpoint``: a path or "default"."""
    from dexac_env.defaults import load_world_model  # noqa: PLC0415

    model = load_world_model(None if checkpoint == "default" else checkpoint)

    @torch.no_grad()
    def redraw(frames: torch.Tensor) -> torch.Tensor:
        pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8)[:, None]  # (B, 1, H, W, 3)
        return model.decode(model.encode(pixels))[:, 0].float().div(255.0).to(frames.device)

    return redraw


def redrawn(arrays: dict[str, np.ndarray], redraw, batch: int = 256) -> dict[str, np.ndarray]:
    """``arrays`` with its frames replaced by ``redraw``'s drawing of them (uint8)."""
    frames = [(redraw(torch.from_numpy(arrays["frames"][i:i + batch]).float() / 255.0) * 255)
              .round().to(torch.uint8).numpy() for i in range(0, len(arrays["frames"]), batch)]
    return arrays | {"frames": np.concatenate(frames)}


def main(argv: list[str] | None = None) -> int:
    from world_model.object_locator import ObjectLocator, save_locator  # noqa: PLC0415

    parser = entry_parser(__doc__.splitlines()[0], "configs/locator/touch.yaml")
    args = parser.parse_args(argv)
    config = load_config(LocatorRunConfig, args.config, engine_overrides(args))
    torch.manual_seed(config.trainer.seed)
    data = config.data
    train = gathered(data, data.split)
    k, size = train["intrinsics"], int(train["frames"].shape[1])
    camera = (k[0, 0] / size, k[1, 1] / size, k[0, 2] / size, k[1, 2] / size)

    def make() -> ObjectLocator:
        return ObjectLocator(replace(config.model, image_size=size,
                                     camera=tuple(float(c) for c in camera)))

    redraw = None if data.redraw_with is None else tokenizer_redraw(data.redraw_with)
    model = make()
    model.redraw = redraw
    trainer = Trainer(model, LocatorFrames(train), config.trainer, {"run": to_dict(config)})
    trainer.fit(resume=args.resume)
    if trainer.engine.rank == 0:
        locator = make()
        locator.load_state_dict(load_fp32_state_dict(Path(config.trainer.out_dir) / "checkpoints"))
        locator.eval()
        splits = {data.split: train} | {split: gathered(data, split)  # each read once
                                         for split in data.eval_splits if split != data.split}
        scores = {split: locate_errors(locator, arrays) for split, arrays in splits.items()}
        if redraw is not None:  # the same frames as the world model draws them
            scores |= {f"{split}_redrawn": locate_errors(locator, redrawn(splits[split], redraw))
                       for split in data.eval_splits}
        up = table_up(torch.from_numpy(train["centre"]))
        report = {"scores": scores, "table_up": up.tolist(), "run_config": to_dict(config)}
        save_locator(locator, config.output, report)
        Path(config.output).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        for split, s in scores.items():
            print(f"  {split}: " + ", ".join(f"{key}={v:.3f}" if isinstance(v, float)
                                             else f"{key}={v}" for key, v in s.items()), flush=True)
        print(f"  wrote {config.output}", flush=True)
    trainer.engine.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
