"""One trainer for every model with ``loss(batch) -> (loss, logs)``: tokenizer, semantic
encoder, reward head, world model.

The trainer receives its parts (model, dataset, config) and owns the loop: the sharded,
resumable batch order, the engine step (plain PyTorch or DeepSpeed, see ``engine.py``), a
progress bar (loss, samples/s, ETA), one JSONL metrics line per step, optional TensorBoard,
periodic checkpoints and a final summary.

Resuming: ``fit(resume=True)`` loads the newest checkpoint of ``out_dir`` and continues at the
step after it. Everything a step depends on is a function of ``(seed, step, rank)``: the
samples (``ShardedBatchSampler``) and the torch RNG (re-seeded at every step), so a run killed at
any point and resumed trains on exactly the samples, and draws exactly the noise, that an
uninterrupted run would have. Metrics lines after the resumed step are dropped first, so
``metrics.jsonl`` always holds one line per step.

Fault injection for tests: ``DEXAC_TRAIN_KILL_AT_STEP=N`` makes rank 0 send itself SIGKILL
right after step ``N`` (after that step's checkpoint, if any) -- a real crash, nothing flushed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.config import ConfigError, TrainerConfig, fingerprint
from training.datasets import ShardedBatchSampler
from training.engine import LossFn, make_engine, read_latest

KILL_ENV = "DEXAC_TRAIN_KILL_AT_STEP"
# Config keys a resumed run may change: they touch neither the maths nor the data order.
RESUME_MUTABLE = (
    "trainer.progress_bar",
    "trainer.tensorboard",
    "trainer.num_workers",
    "trainer.log_every",
    "trainer.log_samples",
    "trainer.keep_checkpoints",
    "trainer.checkpoint_every",
    "trainer.out_dir",
)
AfterStep = Callable[[nn.Module, int], None]


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one (step, rank): independent streams, reproducible on resume."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _mutable(key: str) -> bool:
    return any(key == m or key.endswith("." + m) for m in RESUME_MUTABLE)


def config_difference(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two run configs (ignoring RESUME_MUTABLE)."""
    a, b = _flatten(saved), _flatten(current)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not _mutable(k))


def _stable(values: dict[str, Any]) -> dict[str, Any]:
    flat = _flatten(values)
    return {k: v for k, v in flat.items() if not _mutable(k)}


class Trainer:
    """Trains ``model`` on ``dataset`` as ``config`` says.

    Args:
        model: any ``nn.Module`` with ``loss(batch) -> (loss, logs)`` (or see ``loss_fn``).
        dataset: map-style dataset of dicts; an ``_index`` entry is kept out of the loss and
            logged with ``trainer.log_samples``.
        config: the trainer section of the run config.
        run_config: the whole run config as a JSON-safe dict (saved with every checkpoint and
            compared on resume).
        loss_fn: ``(model, batch) -> (loss, logs)`` when ``model.loss`` does not take the dict.
        after_step: called as ``after_step(model, step)`` after every optimizer step (e.g. the
            EMA teacher update of the semantic encoder).
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        config: TrainerConfig,
        run_config: dict[str, Any],
        *,
        loss_fn: LossFn | None = None,
        after_step: AfterStep | None = None,
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.config = config
        self.run_config = run_config
        self.loss_fn = loss_fn
        self.after_step = after_step
        self.out_dir = Path(config.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"

    # -- checks ----------------------------------------------------------------------------------

    def _check_resume(self, resume: bool) -> None:
        has_checkpoint = read_latest(self.checkpoint_dir) is not None
        if has_checkpoint and not resume:
            raise ConfigError(
                f"{self.out_dir} already holds a run; pass --resume to continue it or set "
                "trainer.out_dir to a new directory"
            )
        saved_path = self.out_dir / "run_config.json"
        if resume and has_checkpoint and saved_path.is_file():
            saved = json.loads(saved_path.read_text())
            differ = config_difference(saved, self.run_config)
            if differ:
                raise ConfigError(
                    f"cannot resume {self.out_dir}: its checkpoint was trained with another config "
                    f"(differs in {', '.join(differ)}); use a new trainer.out_dir"
                )

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.steps`` (continuing the newest checkpoint if ``resume``); summary."""
        cfg = self.config
        self._check_resume(resume)
        engine = make_engine(self.model, cfg, self.loss_fn)
        rank, world = engine.rank, engine.world_size
        start_step = 0
        if resume:
            client = engine.load(self.checkpoint_dir)
            if client is not None:
                if client.get("world_size") != world:
                    raise ConfigError(
                        f"cannot resume {self.out_dir}: it was trained on {client.get('world_size')} "
                        f"ranks, this run has {world}; the data order depends on the rank count"
                    )
                if client.get("config_fingerprint") != fingerprint(_stable(self.run_config)):
                    raise ConfigError(f"cannot resume {self.out_dir}: checkpoint of another config")
                start_step = int(client["step"])
        if rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "run_config.json").write_text(json.dumps(self.run_config, indent=2))
            self._truncate_metrics(start_step)
        engine.barrier()

        accum = cfg.grad_accum_steps
        sampler = ShardedBatchSampler(
            len(self.dataset),
            cfg.batch_size,
            rank,
            world,
            cfg.seed,
            start=start_step * accum,
            stop=cfg.steps * accum,
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            persistent_workers=False,
        )
        samples_per_step = cfg.batch_size * accum * world
        writer = self._tensorboard() if rank == 0 and cfg.tensorboard else None
        bar = tqdm(
            total=cfg.steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            disable=not (rank == 0 and cfg.progress_bar),
            file=sys.stderr,
        )
        metrics = open(self.metrics_path, "a") if rank == 0 else None  # noqa: SIM115
        kill_at = int(os.environ.get(KILL_ENV, "-1"))
        losses: list[float] = []
        step_times: list[float] = []
        first_loss = None
        run_start = time.perf_counter()
        batches = iter(loader)
        try:
            for step in range(start_step + 1, cfg.steps + 1):
                # 1. data: `accum` micro-batches of this rank's shard
                t_data = time.perf_counter()
                micro = [next(batches) for _ in range(accum)]
                indices = [int(i) for mb in micro for i in mb.pop("_index").tolist()]
                t_step = time.perf_counter()
                # 2. one optimizer step; the RNG is a function of (seed, step, rank)
                torch.manual_seed(step_seed(cfg.seed, step, rank))
                loss, logs = engine.train_step(micro)
                if self.after_step is not None:
                    self.after_step(engine.module, step)
                t_end = time.perf_counter()
                # 3. metrics, averaged over ranks
                keys = sorted(logs)
                reduced = engine.reduce_mean([loss] + [logs[k] for k in keys])
                loss, logs = reduced[0], dict(zip(keys, reduced[1:], strict=True))
                all_indices = engine.gather(indices) if cfg.log_samples else None
                step_times.append(t_end - t_data)
                losses.append(loss)
                first_loss = loss if first_loss is None else first_loss
                if rank == 0:
                    record = {
                        "step": step,
                        "loss": loss,
                        **logs,
                        "lr": engine.lr,
                        "epoch": sampler.epoch_of((step - 1) * accum),
                        "step_s": round(t_end - t_data, 5),
                        "data_s": round(t_step - t_data, 5),
                        "samples_per_s": samples_per_step / max(t_end - t_data, 1e-9),
                    }
                    if all_indices is not None:
                        record["samples"] = all_indices
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        recent = step_times[-cfg.log_every :]
                        bar.set_postfix(
                            loss=f"{loss:.4f}",
                            samples_s=f"{samples_per_step * len(recent) / sum(recent):.1f}",
                        )
                        if writer is not None:
                            for key, value in record.items():
                                if isinstance(value, float):
                                    writer.add_scalar(key, value, step)
                    bar.update(step - bar.n)
                # 4. checkpoint
                if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                    self._save(engine, step)
                if step == kill_at and rank == 0:
                    os.kill(os.getpid(), signal.SIGKILL)
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
            if writer is not None:
                writer.close()
        wall = time.perf_counter() - run_start
        steady = step_times[1:] or step_times
        summary = {
            "engine": engine.name,
            "world_size": world,
            "start_step": start_step,
            "steps": cfg.steps,
            "samples_per_step": samples_per_step,
            "wall_s": round(wall, 3),
            "samples_per_s": round(samples_per_step * len(steady) / max(sum(steady), 1e-9), 3),
            "first_loss": first_loss,
            "final_loss": float(np.mean(losses[-10:])) if losses else None,
            "checkpoint": str(self.checkpoint_dir / read_latest(self.checkpoint_dir))
            if read_latest(self.checkpoint_dir)
            else None,
            "metrics": str(self.metrics_path),
        }
        if rank == 0:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            print(format_summary(summary), flush=True)
        self.engine = engine
        return summary

    # -- helpers ---------------------------------------------------------------------------------

    def _save(self, engine, step: int) -> None:
        client = {
            "step": step,
            "world_size": engine.world_size,
            "config_fingerprint": fingerprint(_stable(self.run_config)),
        }
        engine.save(self.checkpoint_dir, f"step_{step:08d}", client)
        engine.barrier()
        if engine.rank == 0:
            tags = sorted(p.name for p in self.checkpoint_dir.glob("step_*") if p.is_dir())
            for old in tags[: -self.config.keep_checkpoints]:
                shutil.rmtree(self.checkpoint_dir / old, ignore_errors=True)

    def _truncate_metrics(self, start_step: int) -> None:
        """Keep the metrics lines of steps <= ``start_step`` (a killed run may have logged more)."""
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if record.get("step", 0) <= start_step:
                kept.append(line)
        self.metrics_path.write_text("".join(f"{line}\n" for line in kept))

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError(
                "trainer.tensorboard is on but the tensorboard package is not installed "
                "(pip install tensorboard), or set trainer.tensorboard: false"
            ) from exc
        return SummaryWriter(str(self.out_dir / "tensorboard"))


def format_summary(summary: dict[str, Any]) -> str:
    """The few lines a user reads at the end of a run."""
    loss = summary["final_loss"]
    return "\n".join(
        [
            f"done: {summary['steps']} steps ({summary['engine']}, {summary['world_size']} rank(s), "
            f"resumed at step {summary['start_step']})",
            f"  wall {summary['wall_s']:.1f} s, {summary['samples_per_s']:.1f} samples/s",
            f"  loss {summary['first_loss']} -> {loss if loss is None else round(loss, 5)} "
            "(mean of the last 10 steps)",
            f"  checkpoint {summary['checkpoint']}",
            f"  metrics {summary['metrics']}",
        ]
    )
