"""Train the task reward head that planners in imagination maximise (world_model/task_reward.py).

    python -m training.train_task_reward --config configs/task_reward/touch.yaml
    python -m training.train_task_reward --config configs/task_reward/touch.yaml --resume
    python -m training.train_task_reward --config configs/task_reward/touch_more.yaml \
        --score HEAD.safetensors [HEAD ...] --score-out scores.json   # compare heads only

Data: every frame of the stores' ``data.split`` episodes that carry the simulator's reward and
success, each as (latent frame, commanded pose = the stored ``action`` row, the task text's
embedding) -> (reward, success). The latents are what the world model ``data.world_model``
sees: its tokenizer's encoding of the true frames and, with ``data.imagined``, the same
episodes imagined open-loop by that world model from their first frames with their own
actions (one frame per step and ``data.sampling_steps`` sampler steps, as ``DexACWorld-v0``
steps), paired with the true reward. The head must score imagined frames at planning time;
trained on true frames only, it would meet blurrier, drifting frames it never saw. The text
embedding is the world model's own (its semantic branch), as the env gives it.

At the end the head is written to ``output`` with its scores on ``data.eval_splits`` (true and
imagined frames: success AUC / F1, reward and log-reward correlation, per task) inside it and
in a ``.json`` beside it. The simulator's ``test`` split holds object colours no training frame
shows (as the agents' evaluation does).
"""

from __future__ import annotations

import json
import sys
import zlib
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class TaskRewardDataConfig:
    """Frames the head learns from.

    Attributes:
        stores: episode stores with ``reward`` / ``success`` (simulator stores), read as true
            frames and (with ``imagined``) as imagined rollouts.
        true_only_stores: more such stores, read as true frames only (breadth at the cost of
            encoding, not of imagining).
        tasks: tasks whose episodes are used (empty: all).
        split: training split; eval_splits: the splits scored at the end.
        world_model: the checkpoint whose latents and text embeddings the head reads.
        imagined: add the episodes imagined open-loop by ``world_model``.
        sampling_steps: sampler steps of those imagined rollouts (the env's default: 2).
        latent_noise: std of Gaussian noise added to training latents (normalised units).
        batch_episodes: episodes imagined per batched rollout.
        cache: directory for the encoded frames (one ``.npz`` per store and split, keyed by
            everything above that changes them); a rerun or ``--resume`` skips the encoding.
    """

    stores: tuple[str, ...] = ("data/sim.zarr",)
    true_only_stores: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    split: str = "train"
    eval_splits: tuple[str, ...] = ("val", "test")
    world_model: str = "dexac_env/assets/dexac_default.safetensors"
    imagined: bool = True
    sampling_steps: int = 2
    latent_noise: float = 0.05
    batch_episodes: int = 64
    cache: str | None = None


@dataclass(frozen=True)
class TaskRewardModelConfig:
    """Architecture (world_model.task_reward.TaskRewardConfig): width, heatmap grid and sigma,
    structure (``"contact"`` trains and scores on touch frames only: its reward form is
    touch's, and it learns where the named object is from the simulator's own scene, recovered
    per episode by a reset) and the loss's log-reward and location weights."""

    width: int = 48
    sub: int = 4
    sigma: float = 0.04
    structure: str = "free"
    log_weight: float = 0.1
    locate_weight: float = 10.0


@dataclass(frozen=True)
class TaskRewardRunConfig:
    model: TaskRewardModelConfig = field(default_factory=TaskRewardModelConfig)
    data: TaskRewardDataConfig = field(default_factory=TaskRewardDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    output: str = "checkpoints/task_reward.safetensors"


class RewardFrames(Dataset):
    """In-memory frames: ``{"latents", "actions", "text", "reward", "success", "_index"}``
    (and ``object``, the named object's place, when the arrays carry it)."""

    def __init__(self, arrays: dict[str, np.ndarray], latent_noise: float = 0.0) -> None:
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()
                       if k in ("latents", "actions", "text", "reward", "success", "object")}
        self.latent_noise = float(latent_noise)

    def __len__(self) -> int:
        return len(self.arrays["reward"])

    def __getitem__(self, index: int) -> dict:
        item = {k: v[index] for k, v in self.arrays.items()}
        if self.latent_noise > 0:
            item["latents"] = item["latents"] + self.latent_noise * torch.randn_like(item["latents"])
        return item | {"_index": index}


def _episodes(data: TaskRewardDataConfig, split: str, path: str) -> list[Any]:
    return [e for e in open_store(path).episodes(split)
            if (not data.tasks or e.attrs.get("task") in data.tasks)
            and "reward" in e and "success" in e]


def encode_frames(model: Any, episodes: list[Any], data: TaskRewardDataConfig,
                  imagined: bool, desc: str) -> dict[str, np.ndarray]:
    """Per frame: latents (N, C, h, w), actions (N, 57), text (N, D), reward, success, task,
    episode index, and ``imagined`` (bool). Imagined rows skip the context frames (they are
    the true frames). Every episode is cut to the shortest one's length (one batched rollout)."""
    from world_model.rollout import rollout_latents  # noqa: PLC0415

    rows: dict[str, list[np.ndarray]] = {k: [] for k in (
        "latents", "actions", "text", "reward", "success", "task", "episode", "imagined")}
    text_cache: dict[str, np.ndarray] = {}
    ctx = int(model.config.context_frames)
    length = min(e.length for e in episodes)
    for start in tqdm(range(0, len(episodes), data.batch_episodes), desc=desc, unit="batch"):
        batch = episodes[start : start + data.batch_episodes]
        rgb = torch.from_numpy(np.stack([e.read("rgb", 0, length) for e in batch]))
        actions = np.stack([e.read("action", 0, length) for e in batch]).astype(np.float32)
        reward = np.stack([e.read("reward", 0, length) for e in batch]).astype(np.float32)
        success = np.stack([e.read("success", 0, length) for e in batch]).astype(bool)
        with torch.no_grad():
            latents = model.encode(rgb)  # (B, T, C, h, w)
            semantic = [model.encode_semantic(rgb[i, ctx - 1 : ctx], [e.task_text])
                        for i, e in enumerate(batch)]
        if semantic[0] is None:
            raise ConfigError("the task reward head needs a world model with a semantic branch "
                              "(its text embedding)")
        for e, s in zip(batch, semantic, strict=True):
            text_cache.setdefault(e.task_text, s.text[0, 0].float().cpu().numpy())
        text = np.stack([text_cache[e.task_text] for e in batch])  # (B, D)
        views = [(latents.cpu().numpy(), 0, False)]
        if imagined:
            # seeded by episode name: the same episode imagines the same way in any batch
            generators = [torch.Generator().manual_seed(zlib.crc32(e.name.encode())) for e in batch]
            rows_t = torch.from_numpy(actions[:, ctx - 1 :])  # (B, 1 + T - ctx, 57)
            joint = type(semantic[0]).cat(semantic)
            with torch.no_grad():
                dream, _ = rollout_latents(model, latents[:, :ctx], rows_t, joint, generator=generators,
                                           num_steps=data.sampling_steps, frames_per_call=1)
            views.append((dream.cpu().numpy(), ctx, True))
        for view, first, is_imagined in views:
            n, t = view.shape[:2]
            rows["latents"].append(view.reshape(n * t, *view.shape[2:]))
            rows["actions"].append(actions[:, first:].reshape(n * t, -1))
            rows["text"].append(np.repeat(text, t, axis=0))
            rows["reward"].append(reward[:, first:].reshape(-1))
            rows["success"].append(success[:, first:].reshape(-1).astype(np.float32))
            rows["task"].append(np.repeat([str(e.attrs.get("task")) for e in batch], t))
            rows["episode"].append(np.repeat(np.arange(start, start + n), t))
            rows["imagined"].append(np.full(n * t, is_imagined))
    return {k: np.concatenate(v) for k, v in rows.items()}


CONTACT_TASKS = ("touch",)


def rows_of_tasks(arrays: dict[str, np.ndarray], tasks: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The rows of ``tasks`` only (all rows when empty)."""
    if not tasks:
        return arrays
    keep = np.isin(arrays["task"], list(tasks))
    if not keep.any():
        raise ConfigError(f"no frame of tasks {list(tasks)} in the data")
    return {k: v[keep] for k, v in arrays.items()}


def object_places(episodes: list[Any], tasks: tuple[str, ...], desc: str) -> np.ndarray:
    """(N, 3) float32: each episode's named object centre at its first frame, in the episode
    frame (:func:`dexac_env.sim.generate.named_object_start`); NaN for other tasks'."""
    from dexac_env.sim.generate import named_object_start  # noqa: PLC0415

    places = np.full((len(episodes), 3), np.nan, np.float32)
    for i, e in enumerate(tqdm(episodes, desc=desc, unit="episode")):
        if e.attrs.get("task") in tasks:
            places[i] = named_object_start(e.attrs)
    return places


def cached_frames(model: Any, data: TaskRewardDataConfig, split: str,
                  places_of: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """:func:`encode_frames` of ``split`` over every store, each read from / written to
    ``data.cache`` when set; episode indices run on across stores. With ``places_of`` (tasks)
    the rows also carry ``object``: their episode's :func:`object_places` (cached beside)."""
    import hashlib  # noqa: PLC0415

    parts = []
    sources = [(p, data.imagined) for p in data.stores] + [(p, False) for p in data.true_only_stores]
    for store, imagined in sources:
        key = json.dumps([store, list(data.tasks), split, data.world_model, imagined,
                          data.sampling_steps])
        path, episodes = None, None
        if data.cache:
            digest = hashlib.sha1(key.encode()).hexdigest()[:12]
            path = Path(data.cache) / f"{Path(store).stem}_{split}_{digest}.npz"
        if path is not None and path.is_file():
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
        else:
            episodes = _episodes(data, split, store)
            if not episodes:
                continue
            arrays = encode_frames(model, episodes, data, imagined,
                                   f"encode {Path(store).name} {split}")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, **arrays)
                path.with_suffix(".json").write_text(key + "\n")
        if places_of:
            place_path = None if path is None else path.with_name(f"{path.stem}_objects.npy")
            if place_path is not None and place_path.is_file():
                places = np.load(place_path)
            else:
                if episodes is None:  # the frames came from the cache
                    episodes = _episodes(data, split, store)
                places = object_places(episodes, places_of, f"objects {Path(store).name} {split}")
                if place_path is not None:
                    np.save(place_path, places)
            arrays["object"] = places[arrays["episode"]]
        if parts:
            arrays["episode"] = arrays["episode"] + parts[-1]["episode"].max() + 1
        parts.append(arrays)
    if not parts:
        raise ConfigError(f"no episode of split {split!r} with reward/success (tasks "
                          f"{list(data.tasks) or 'all'}) in {[p for p, _ in sources]}")
    return {k: np.concatenate([a[k] for a in parts]) for k in parts[0]}


def score_head(head: Any, arrays: dict[str, np.ndarray], batch: int = 1024) -> dict[str, Any]:
    """:func:`world_model.reward_head.reward_head_scores` (success AUC / F1, reward MSE /
    correlation, ...) plus the log-reward correlation, overall and per (task, true | imagined)
    view."""
    from world_model.reward_head import reward_head_scores  # noqa: PLC0415

    out = {"reward": [], "log_reward": [], "prob": [], "locate_error": []}
    locates = head.config.structure == "contact" and "object" in arrays
    with torch.no_grad():
        for i in range(0, len(arrays["reward"]), batch):
            inputs = [torch.from_numpy(arrays[k][i : i + batch])
                      for k in ("latents", "actions", "text")]
            r, lr, logit = head(*inputs)
            out["reward"].append(r.numpy())
            out["log_reward"].append(lr.numpy())
            out["prob"].append(torch.sigmoid(logit).numpy())
            if locates:
                out["locate_error"].append(head.locate_error(
                    *inputs, torch.from_numpy(arrays["object"][i : i + batch])).numpy())
    pred = {k: np.concatenate(v).astype(np.float64) for k, v in out.items() if v}
    floor = head.config.reward_floor

    def scores(mask: np.ndarray) -> dict[str, float]:
        true_reward = arrays["reward"][mask].astype(np.float64)
        result = reward_head_scores(pred["prob"][mask], arrays["success"][mask] > 0.5,
                                    pred["reward"][mask], true_reward) | {
            "log_reward_corr": float(np.corrcoef(pred["log_reward"][mask],
                                                 np.log(np.maximum(true_reward, floor)))[0, 1]),
        }
        if locates and np.isfinite(pred["locate_error"][mask]).any():
            # the contact head's located centre against the true one, centimetres
            result["locate_error_cm_median"] = float(
                100 * np.nanmedian(pred["locate_error"][mask]))
        return result

    result: dict[str, Any] = {"all": scores(np.ones(len(arrays["reward"]), bool))}
    for task in sorted(set(arrays["task"].tolist())):
        for view, flag in (("true", False), ("imagined", True)):
            mask = (arrays["task"] == task) & (arrays["imagined"] == flag)
            if mask.any():
                result[f"{task}/{view}"] = scores(mask)
    return result


def score_heads(world: Any, data: TaskRewardDataConfig, heads: list[str], out: str | None) -> int:
    """``--score``: every head on the same frames of ``data.eval_splits`` (one JSON)."""
    from world_model.task_reward import load_task_reward  # noqa: PLC0415

    frames = {split: cached_frames(world, data, split, CONTACT_TASKS)
              for split in data.eval_splits}
    result = {"command": "python -m training.train_task_reward " + " ".join(sys.argv[1:]),
              "heads": {h: {split: score_head(load_task_reward(h), arrays)
                            for split, arrays in frames.items()} for h in heads}}
    text = json.dumps(result, indent=2) + "\n"
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"  wrote {out}")
    else:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    from world_model import WorldModel  # noqa: PLC0415
    from world_model.task_reward import TaskRewardConfig, TaskRewardHead, save_task_reward  # noqa: PLC0415

    parser = entry_parser(__doc__.splitlines()[0], "configs/task_reward/touch.yaml")
    parser.add_argument("--score", nargs="+", default=None, metavar="HEAD",
                        help="train nothing: score these heads on the config's eval_splits")
    parser.add_argument("--score-out", default=None, help="JSON for --score (default: stdout)")
    args = parser.parse_args(argv)
    config = load_config(TaskRewardRunConfig, args.config, engine_overrides(args))
    torch.manual_seed(config.trainer.seed)
    data = config.data
    world = WorldModel.from_pretrained(data.world_model).eval()
    if args.score:
        return score_heads(world, data, args.score, args.score_out)
    camera = world.config.conditioning.camera
    if camera is None:
        raise ConfigError(f"{data.world_model} records no camera intrinsics (conditioning.camera)")
    tasks = CONTACT_TASKS if config.model.structure == "contact" else ()
    train = rows_of_tasks(cached_frames(world, data, data.split, tasks), tasks)
    latent_shape = train["latents"].shape[1:]

    def make() -> TaskRewardHead:
        return TaskRewardHead(TaskRewardConfig(
            latent_channels=int(latent_shape[0]), latent_size=int(latent_shape[1]),
            text_dim=int(train["text"].shape[1]), camera=tuple(float(c) for c in camera),
            sub=config.model.sub, sigma=config.model.sigma, width=config.model.width,
            structure=config.model.structure, log_weight=config.model.log_weight,
            locate_weight=config.model.locate_weight))

    trainer = Trainer(make(), RewardFrames(train, data.latent_noise), config.trainer,
                      {"run": to_dict(config)})
    trainer.fit(resume=args.resume)
    if trainer.engine.rank == 0:
        head = make()
        head.load_state_dict(load_fp32_state_dict(Path(config.trainer.out_dir) / "checkpoints"))
        head.eval()
        scores = {split: score_head(head, rows_of_tasks(cached_frames(world, data, split, tasks),
                                                        tasks))
                  for split in data.eval_splits}
        save_task_reward(head, config.output, {"scores": scores, "run_config": to_dict(config)})
        report = Path(config.output).with_suffix(".json")
        report.write_text(json.dumps({"scores": scores, "run_config": to_dict(config)}, indent=2) + "\n")
        for split, by_view in scores.items():
            for name, s in by_view.items():
                print(f"  {split} {name}: " + ", ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()),
                    flush=True)
        print(f"  wrote {config.output} and {report}", flush=True)
    trainer.engine.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
