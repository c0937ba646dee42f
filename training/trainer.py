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

A damaged newest checkpoint (say a file cut short by a full disk) is reported and the older
one kept on disk is resumed instead. Fault injection for tests: ``on_step_end=sigkill_after(N)``.
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
from training.engine import (
    CheckpointError,
    LossFn,
    checkpoint_tags,
    make_engine,
    read_latest,
)

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
StepEnd = Callable[[int, int], None]  # (step, rank), after the step's checkpoint


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
        on_step_end: called as ``on_step_end(step, rank)`` once the step is logged and
            checkpointed (e.g. :func:`sigkill_after` for the crash tests).
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
        on_step_end: StepEnd | None = None,
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.config = config
        self.run_config = run_config
        self.loss_fn = loss_fn
        self.after_step = after_step
        self.on_step_end = on_step_end
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
        self.engine = engine
        start_step = self._restore(engine) if resume else 0
        if engine.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "run_config.json").write_text(json.dumps(self.run_config, indent=2))
            self._truncate_metrics(start_step)
        engine.barrier()
        sampler = ShardedBatchSampler(
            len(self.dataset),
            cfg.batch_size,
            engine.rank,
            engine.world_size,
            cfg.seed,
            start=start_step * cfg.grad_accum_steps,
            stop=cfg.steps * cfg.grad_accum_steps,
        )
        loader = DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=cfg.num_workers, persistent_workers=False
        )
        batches = iter(loader)
        log = RunLog(self, engine, start_step)
        run_start = time.perf_counter()
        try:
            for step in range(start_step + 1, cfg.steps + 1):
                record, indices = self._train_step(engine, batches, step)
                record["epoch"] = sampler.epoch_of((step - 1) * cfg.grad_accum_steps)
                if cfg.log_samples:
                    record["samples"] = engine.gather(indices)
                log.write(record)
                if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                    self._save(engine, step)
                if self.on_step_end is not None:
                    self.on_step_end(step, engine.rank)
        finally:
            log.close()
        return self._finish(engine, log, start_step, time.perf_counter() - run_start)

    def _train_step(self, engine, batches, step: int) -> tuple[dict[str, Any], list[int]]:
        """One optimizer step on ``grad_accum_steps`` micro-batches of this rank's shard.
        Returns the step's metrics record (averaged over ranks) and this rank's sample indices."""
        cfg = self.config
        # 1. data
        t_data = time.perf_counter()
        micro = [next(batches) for _ in range(cfg.grad_accum_steps)]
        indices = [int(i) for mb in micro for i in mb.pop("_index").tolist()]
        t_step = time.perf_counter()
        # 2. the step; the RNG is a function of (seed, step, rank); lr is the rate it uses
        lr = engine.lr
        torch.manual_seed(step_seed(cfg.seed, step, engine.rank))
        loss, logs = engine.train_step(micro)
        if self.after_step is not None:
            self.after_step(engine.module, step)
        t_end = time.perf_counter()
        # 3. metrics, averaged over ranks
        keys = sorted(logs)
        reduced = engine.reduce_mean([loss] + [logs[k] for k in keys])
        samples_per_step = cfg.batch_size * cfg.grad_accum_steps * engine.world_size
        record = {
            "step": step,
            "loss": reduced[0],
            **dict(zip(keys, reduced[1:], strict=True)),
            "lr": lr,
            "step_s": round(t_end - t_data, 5),
            "data_s": round(t_step - t_data, 5),
            "samples_per_s": samples_per_step / max(t_end - t_data, 1e-9),
        }
        return record, indices

    def _restore(self, engine) -> int:
        """Load the newest readable checkpoint of ``out_dir``; the step it ends (0 if none).

        A damaged newest checkpoint (a truncated file) falls back to the older one kept on disk;
        the rank count and config are checked before the engine reads any weights."""
        tags = checkpoint_tags(self.checkpoint_dir)
        for tag in tags:
            try:
                client = engine.client_state(self.checkpoint_dir, tag)
                self._check_client(client, engine.world_size)
                engine.load(self.checkpoint_dir, tag)
            except CheckpointError as exc:
                if engine.rank == 0:
                    print(f"warning: {exc}; trying the previous checkpoint", file=sys.stderr)
                continue
            return int(client["step"])
        if tags:
            raise CheckpointError(
                f"no readable checkpoint in {self.checkpoint_dir} (tried {', '.join(tags)}); "
                "set trainer.out_dir to a new directory to start again"
            )
        return 0

    def _check_client(self, client: dict[str, Any], world_size: int) -> None:
        if client.get("world_size") != world_size:
            raise ConfigError(
                f"cannot resume {self.out_dir}: it was trained on {client.get('world_size')} "
                f"ranks, this run has {world_size}; the data order depends on the rank count"
            )
        if client.get("config_fingerprint") != fingerprint(_stable(self.run_config)):
            raise ConfigError(f"cannot resume {self.out_dir}: checkpoint of another config")

    def _finish(self, engine, log: RunLog, start_step: int, wall: float) -> dict[str, Any]:
        """The run summary (``summary.json`` and the lines printed by rank 0)."""
        cfg = self.config
        steady = log.step_times[1:] or log.step_times
        samples_per_step = cfg.batch_size * cfg.grad_accum_steps * engine.world_size
        latest = read_latest(self.checkpoint_dir)
        summary = {
            "engine": engine.name,
            "world_size": engine.world_size,
            "start_step": start_step,
            "steps": cfg.steps,
            "samples_per_step": samples_per_step,
            "wall_s": round(wall, 3),
            "samples_per_s": round(samples_per_step * len(steady) / max(sum(steady), 1e-9), 3),
            "first_loss": log.losses[0] if log.losses else None,
            "final_loss": float(np.mean(log.losses[-10:])) if log.losses else None,
            "checkpoint": str(self.checkpoint_dir / latest) if latest else None,
            "metrics": str(self.metrics_path),
        }
        if engine.rank == 0:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            print(format_summary(summary), flush=True)
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


class RunLog:
    """Where a run's progress goes: rank 0's progress bar, ``metrics.jsonl`` (one line per
    step) and optional TensorBoard; every rank keeps the losses and step times for the summary."""

    def __init__(self, trainer: Trainer, engine, start_step: int) -> None:
        cfg = trainer.config
        self.config = cfg
        self.is_main = engine.rank == 0
        self.samples_per_step = cfg.batch_size * cfg.grad_accum_steps * engine.world_size
        self.losses: list[float] = []
        self.step_times: list[float] = []
        self.writer = trainer._tensorboard() if self.is_main and cfg.tensorboard else None
        self.bar = tqdm(
            total=cfg.steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.is_main and cfg.progress_bar),
            file=sys.stderr,
        )
        self.metrics = open(trainer.metrics_path, "a") if self.is_main else None  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        step, loss = record["step"], record["loss"]
        self.losses.append(loss)
        self.step_times.append(record["step_s"])
        if not self.is_main:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        cfg = self.config
        if step % cfg.log_every == 0 or step == cfg.steps:
            recent = self.step_times[-cfg.log_every :]
            rate = self.samples_per_step * len(recent) / max(sum(recent), 1e-9)
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.1f}")
            if self.writer is not None:
                for key, value in record.items():
                    if isinstance(value, float):
                        self.writer.add_scalar(key, value, step)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.writer is not None:
            self.writer.close()


def sigkill_after(step: int) -> StepEnd:
    """Fault injection for tests: an ``on_step_end`` hook with which rank 0 sends itself SIGKILL
    right after ``step`` (after that step's checkpoint, if any): a real crash, nothing flushed."""

    def kill(done: int, rank: int) -> None:
        if done == step and rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    return kill


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
