"""PPO / SAC in imagination or in the simulator, resumable through SB3's own save/load.

The trainer receives its parts: an env config (:class:`~agents.envs.AgentEnvConfig`, which
world and which reward) and a :class:`TrainConfig`. A run folder holds ``model.zip`` (SB3's
format; written atomically every ``save_every`` steps and at the end), ``config.json``,
``progress.json`` (SB3's JSON-lines log: one object per rollout/update), ``progress.csv``,
``episodes.jsonl`` (every finished episode: step, return, length) and ``tb/`` when TensorBoard
is installed. Running again with ``resume=True`` continues from ``model.zip`` up to
``total_steps``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from tqdm import tqdm

from agents.envs import AgentEnvConfig, make_vec_env
from agents.features import ImageProprioExtractor

ALGORITHMS = {"ppo": PPO, "sac": SAC}


@dataclass(frozen=True)
class TrainConfig:
    """algo: ``"ppo"`` or ``"sac"``. total_steps: env steps over all envs. num_envs: parallel
    envs (imagination: one batched sampler call per step for all). n_steps: PPO rollout length
    per env. batch_size: minibatch. learning_rate. buffer_size: SAC replay (images: 12 KB each
    at 64 px). save_every: env steps between checkpoints. seed."""

    algo: str = "ppo"
    total_steps: int = 2048
    num_envs: int = 4
    n_steps: int = 64
    batch_size: int = 64
    learning_rate: float = 3e-4
    buffer_size: int = 10_000
    save_every: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {self.algo!r}")
        if self.total_steps < 1 or self.num_envs < 1:
            raise ValueError("total_steps and num_envs must be >= 1")


class ProgressCallback(BaseCallback):
    """tqdm bar, JSON-lines episode log and periodic atomic saves."""

    def __init__(self, run_dir: Path, total: int, save_every: int, show: bool = True):
        super().__init__()
        self.run_dir, self.total, self.save_every, self.show = run_dir, total, save_every, show
        self._last_save = 0

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self.num_timesteps, disable=not self.show,
                        desc="train", unit="step")
        self.episodes = open(self.run_dir / "episodes.jsonl", "a")  # noqa: SIM115
        self._last_save = self.num_timesteps

    def _on_step(self) -> bool:
        self.bar.update(self.model.n_envs)
        for info in self.locals.get("infos", []):
            if "episode" in info:  # SB3's Monitor / VecMonitor statistics
                row = {"step": self.num_timesteps, "return": float(info["episode"]["r"]),
                       "length": int(info["episode"]["l"])}
                self.episodes.write(json.dumps(row) + "\n")
                self.episodes.flush()  # readable while training runs
        if self.num_timesteps - self._last_save >= self.save_every:
            save_model(self.model, self.run_dir)
            self._last_save = self.num_timesteps
        return True

    def _on_training_end(self) -> None:
        self.bar.close()
        self.episodes.close()


def save_model(model: Any, run_dir: Path) -> None:
    """SB3 save to a temporary file, then one rename: a killed run keeps the last good model."""
    tmp = run_dir / "model.tmp.zip"
    model.save(tmp)
    os.replace(tmp, run_dir / "model.zip")


def build_model(config: TrainConfig, venv: Any, run_dir: Path) -> Any:
    policy_kwargs = {"features_extractor_class": ImageProprioExtractor}
    common = {"policy_kwargs": policy_kwargs, "learning_rate": config.learning_rate,
              "batch_size": config.batch_size, "seed": config.seed, "verbose": 0}
    if config.algo == "ppo":
        return PPO("MultiInputPolicy", venv, n_steps=config.n_steps, **common)
    return SAC("MultiInputPolicy", venv, buffer_size=config.buffer_size, learning_starts=200,
               **common)


def train(env_config: AgentEnvConfig, config: TrainConfig, run_dir: str | Path,
          resume: bool = False, progress: bool = True) -> Path:
    """Train (or resume) and return the path of ``model.zip``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "model.zip"
    if checkpoint.exists() and not resume:
        raise ValueError(f"{checkpoint} exists: pass resume (--resume) or another --out")
    (run_dir / "config.json").write_text(json.dumps(
        {"env": env_config.to_dict(), "train": asdict(config)}, indent=2))
    venv = make_vec_env(env_config, config.num_envs, seed=config.seed)
    if resume and checkpoint.exists():
        model = ALGORITHMS[config.algo].load(checkpoint, env=venv)
    else:
        model = build_model(config, venv, run_dir)
    formats = ["json", "csv"] + (["tensorboard"] if importlib.util.find_spec("tensorboard") else [])
    model.set_logger(configure(str(run_dir), formats))
    remaining = config.total_steps - model.num_timesteps
    if remaining > 0:
        callback = ProgressCallback(run_dir, config.total_steps, config.save_every, progress)
        model.learn(remaining, callback=callback, reset_num_timesteps=False)
    save_model(model, run_dir)
    venv.close()
    return checkpoint


def load_model(path: str | Path, env: Any = None) -> Any:
    """An SB3 model saved by :func:`train` (the algorithm is read from the run's config)."""
    path = Path(path)
    config_file = path.parent / "config.json"
    algo = json.loads(config_file.read_text())["train"]["algo"] if config_file.exists() else "ppo"
    return ALGORITHMS[algo].load(path, env=env)
