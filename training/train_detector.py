"""Train the keypoint detector that scores imagined frames (evaluation/detector.py).

    python -m training.train_detector --config configs/detector/tiny.yaml
    python -m training.train_detector --config configs/detector/tiny.yaml --resume

Data: every frame of the store's ``data.split`` episodes with its ``keypoints_2d`` /
``keypoints_visible`` (+ ``landmarks_2d`` / ``landmarks_visible`` when the store has them: the
head family), and, when ``data.world_model`` names a checkpoint, the same frames passed through
that model's tokenizer (encode -> decode): the detector must find hands in blurry imagined
frames too. Same trainer, checkpoints, metrics and ``--resume`` as every other model here. At
the end the detector is written to ``output`` (one safetensors file: weights + config + the
ceilings measured on ``data.eval_split``: PCK of the detector on true frames and on tokenizer
reconstructions, per family).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from training.components import engine_overrides, entry_parser, run_main
from training.config import ConfigError, TrainerConfig, load_config, to_dict
from training.datasets import open_store
from training.engine import load_fp32_state_dict
from training.trainer import Trainer


@dataclass(frozen=True)
class DetectorDataConfig:
    """Frames the detector learns from.

    Attributes:
        store: episode store with keypoints (simulator store or an EgoDex/EgoVerse import).
        split: training split.
        eval_split: split whose frames measure the detector's ceiling at the end.
        world_model: checkpoint whose tokenizer reconstructions are added (None: true only).
        also_world_models: further checkpoints whose reconstructions are added too, so that one
            detector scores models with different tokenizers on an equal footing.
        max_eval_frames: frames of ``eval_split`` used for the ceiling.
    """

    store: str = "data/sim.zarr"
    split: str = "train"
    eval_split: str = "val"
    world_model: str | None = "dexac_env/assets/dexac_default.safetensors"
    also_world_models: tuple[str, ...] = ()
    max_eval_frames: int = 2048

    def __post_init__(self) -> None:
        if self.also_world_models and not self.world_model:
            raise ConfigError("data.also_world_models needs data.world_model")
        stems = [Path(p).stem for p in self.also_world_models]
        if len(set(stems)) != len(stems):
            raise ConfigError(
                f"data.also_world_models names two files with one stem ({stems}): each names "
                "its view in the detector's ceiling"
            )

    def reconstruction_views(self) -> dict[str, str]:
        """View name -> checkpoint whose reconstructions it holds (the first is "reconstructions")."""
        paths = [self.world_model, *self.also_world_models] if self.world_model else []
        return {
            ("reconstructions" if i == 0 else f"reconstructions {Path(p).stem}"): p
            for i, p in enumerate(paths)
        }


@dataclass(frozen=True)
class DetectorModelConfig:
    """Architecture (see evaluation.detector.DetectorConfig): U-Net widths, target sigma."""

    widths: tuple[int, int, int] = (32, 64, 96)
    sigma: float = 1.0


@dataclass(frozen=True)
class DetectorRunConfig:
    """A detector training run: model, data, trainer, and the output file."""

    model: DetectorModelConfig = field(default_factory=DetectorModelConfig)
    data: DetectorDataConfig = field(default_factory=DetectorDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    output: str = "checkpoints/detector_tiny.safetensors"


class KeypointFrames(Dataset):
    """In-memory frames with their points: ``{"frames", "points_uv", "visible", "_index"}``."""

    def __init__(self, frames: np.ndarray, points_uv: np.ndarray, visible: np.ndarray) -> None:
        self.frames = torch.from_numpy(frames)
        self.points_uv = torch.from_numpy(points_uv.astype(np.float32))
        self.visible = torch.from_numpy(visible.astype(bool))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        return {
            "frames": self.frames[index],
            "points_uv": self.points_uv[index],
            "visible": self.visible[index],
            "_index": index,
        }


def point_set(store) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names, families) of the points a store labels: its keypoints, then its landmarks."""
    from dexac_env.actions import KEYPOINT_NAMES  # noqa: PLC0415
    from dexac_env.sim.scene import LANDMARK_NAMES  # noqa: PLC0415

    names = list(KEYPOINT_NAMES)
    families = ["wrist" if n.endswith("wrist") else "finger" for n in names]
    first = store.episodes()[0]
    if "landmarks_2d" in first.keys():
        names += [f"landmark_{n}" for n in LANDMARK_NAMES]
        families += ["head"] * len(LANDMARK_NAMES)
    return tuple(names), tuple(families)


def read_points(store, split: str, limit: int | None = None):
    """Frames (N, H, W, 3), points (N, K, 2), visible (N, K) of a split (first ``limit``)."""
    from evaluation.cli import episode_points  # noqa: PLC0415

    frames, points, visible = [], [], []
    for episode in store.episodes(split):
        frames.append(episode.read("rgb"))
        uv, vis = episode_points(episode)
        points.append(uv)
        visible.append(vis)
        if limit is not None and sum(len(f) for f in frames) >= limit:
            break
    if not frames:
        raise ConfigError(f"{store.path} has no episodes in split {split!r}")
    cut = slice(0, limit)
    return np.concatenate(frames)[cut], np.concatenate(points)[cut], np.concatenate(visible)[cut]


def reconstruct(world_model_path: str, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """Frames through a world model's tokenizer (encode -> decode), uint8 like the input."""
    from world_model import WorldModel  # noqa: PLC0415

    model = WorldModel.from_pretrained(world_model_path).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            clip = torch.from_numpy(frames[i : i + batch])[:, None]  # (n, 1, H, W, 3)
            out.append(model.decode(model.encode(clip))[:, 0].numpy())
    return np.concatenate(out)


def build_dataset(config: DetectorRunConfig):
    """The training set (true frames + reconstructions) and the point set."""
    store = open_store(config.data.store)
    names, families = point_set(store)
    frames, points, visible = read_points(store, config.data.split)
    drawn = [reconstruct(path, frames) for path in config.data.reconstruction_views().values()]
    copies = 1 + len(drawn)
    frames = np.concatenate([frames, *drawn])
    points, visible = np.concatenate([points] * copies), np.concatenate([visible] * copies)
    return KeypointFrames(frames, points, visible), names, families, store


def measure_ceiling(detector, config: DetectorRunConfig, store) -> dict:
    """The detector's PCK per family on held-out true frames and their reconstructions."""
    from evaluation.scoring import detector_ceiling  # noqa: PLC0415

    frames, points, visible = read_points(
        store, config.data.eval_split, config.data.max_eval_frames
    )
    views = {"true_frames": frames}
    for name, path in config.data.reconstruction_views().items():
        views[name] = reconstruct(path, frames)
    return {name: detector_ceiling(detector, view, points, visible) for name, view in views.items()}


def main(argv: list[str] | None = None) -> int:
    from evaluation.detector import DetectorConfig, KeypointDetector  # noqa: PLC0415

    args = entry_parser(__doc__.splitlines()[0], "configs/detector/tiny.yaml").parse_args(argv)
    config = load_config(DetectorRunConfig, args.config, engine_overrides(args))
    torch.manual_seed(config.trainer.seed)
    dataset, names, families, store = build_dataset(config)
    resolution = int(dataset.frames.shape[1])

    def make() -> KeypointDetector:
        return KeypointDetector(
            DetectorConfig(
                names, families, resolution, tuple(config.model.widths), config.model.sigma
            )
        )

    model = make()
    trainer = Trainer(
        model,
        dataset,
        config.trainer,
        {"run": to_dict(config), "model_config": model.config.to_dict()},
    )
    trainer.fit(resume=args.resume)
    if trainer.engine.rank == 0:
        final = make()
        final.load_state_dict(load_fp32_state_dict(Path(config.trainer.out_dir) / "checkpoints"))
        ceiling = measure_ceiling(final.eval(), config, store)
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        final.save(config.output, extra={"ceiling": ceiling, "run_config": to_dict(config)})
        for view, scores in ceiling.items():
            print(
                f"  ceiling on {view}: "
                + ", ".join(f"{k}={v:.3f}" for k, v in scores.items() if isinstance(v, float)),
                flush=True,
            )
        print(f"  wrote {config.output}", flush=True)
    trainer.engine.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
