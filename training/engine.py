"""Optimisation engines behind the trainer: plain PyTorch (one process) or DeepSpeed (any ranks).

Both wrap a model that has ``loss(batch) -> (loss, logs)`` and expose the same small surface:
``train_step(micro_batches)``, ``save(dir, tag, client_state)``, ``client_state(dir, tag)``,
``load(dir, tag)``, ``reduce_mean``,
``gather``, ``barrier``, ``rank``/``world_size``. This is the only module that imports DeepSpeed.

Choosing: a DeepSpeed JSON config (``trainer.deepspeed_config``) selects DeepSpeed, whether the
script runs under the ``deepspeed`` launcher or as a bare ``python`` process. In the latter case
the rendezvous variables DeepSpeed expects (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT) are set to a one-process world first, so DeepSpeed does not go looking for MPI.
Without a DeepSpeed config the plain engine trains in one process with torch's AdamW.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import ConfigError, TrainerConfig

Batch = dict[str, Any]
# Besides tensors and plain containers, DeepSpeed's own checkpoint files pickle only these
# (checked on ZeRO-1/2/3, fp32 and bf16). Anything else in a `.pt` would run code on loading.
DEEPSPEED_PICKLED_TYPES = frozenset(
    {
        "deepspeed.runtime.fp16.loss_scaler.LossScaler",
        "deepspeed.runtime.zero.config.ZeroStageEnum",
        "deepspeed.utils.tensor_fragment.fragment_address",
    }
)
# What torch.load raises on a truncated or damaged file
UNREADABLE = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, KeyError, ValueError)


class CheckpointError(ConfigError):
    """A checkpoint file that cannot or must not be loaded; one line naming the file."""


def check_pickled_code(tag_dir: Path) -> None:
    """Refuse a checkpoint folder whose ``.pt`` files reference anything but tensors, plain
    containers and DeepSpeed's own types: DeepSpeed loads them with ``weights_only=False``, so
    a planted ``__reduce__`` would run. The scan reads the pickles without executing them."""
    for path in sorted(Path(tag_dir).glob("*.pt")):
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except UNREADABLE as exc:
            raise CheckpointError(f"{path} is damaged or truncated ({exc})") from exc
        code = sorted(set(found) - DEEPSPEED_PICKLED_TYPES)
        if code:
            raise CheckpointError(
                f"{path} would run code when loaded (it references {', '.join(code)}); refusing "
                "it: only load checkpoints this trainer wrote"
            )


LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]


def default_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """``model.loss(batch)`` without the bookkeeping entries (keys starting with ``_``)."""
    return model.loss({k: v for k, v in batch.items() if not k.startswith("_")})


class LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)`` so DeepSpeed's engine (and its ZeRO-3 hooks)
    see a plain forward. ``loss_fn`` adapts models whose ``loss`` takes a tensor rather than the
    batch dict (``VideoTokenizer.loss(frames)``); the default calls ``model.loss(batch)``."""

    def __init__(self, model: nn.Module, loss_fn: LossFn | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn or default_loss

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(self.model, batch)


def lr_lambda(config: TrainerConfig):
    """Linear warm-up then cosine decay to ``min_lr_ratio``; a function of the step only."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine

    return factor


def _adamw(params, config: TrainerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )


def _to_float_logs(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in logs.items()}


class TorchEngine:
    """One process, fp32, torch AdamW + the warm-up/cosine schedule (on cuda:0 if present)."""

    name = "torch"
    rank = 0
    world_size = 1
    local_rank = 0

    def __init__(self, model: nn.Module, config: TrainerConfig, loss_fn: LossFn | None = None):
        self.config = config
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        self.wrapper = LossModule(model.to(self.device), loss_fn)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = _adamw(params, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.params = params

    @property
    def module(self) -> nn.Module:
        return self.wrapper.model

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train_step(self, micro_batches: list[Batch]) -> tuple[float, dict[str, float]]:
        self.wrapper.train()
        total, logs_sum = 0.0, {}
        for batch in micro_batches:
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss, logs = self.wrapper(batch)
            (loss / len(micro_batches)).backward()
            total += float(loss.detach())
            for k, v in _to_float_logs(logs).items():
                logs_sum[k] = logs_sum.get(k, 0.0) + v
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        n = len(micro_batches)
        return total / n, {k: v / n for k, v in logs_sum.items()}

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Write ``directory/tag/state.pt`` then ``directory/latest`` (each by atomic rename)."""
        staging = directory / f".{tag}.tmp"
        staging.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "client_state_json": json.dumps(client_state),
        }
        torch.save(state, staging / "state.pt")
        final = directory / tag
        if final.exists():
            _remove_tree(final)
        os.rename(staging, final)
        _write_atomic(directory / "latest", tag)

    def client_state(self, directory: Path, tag: str) -> dict[str, Any]:
        """The ``client_state`` saved with ``directory/tag`` (weights are not read)."""
        return json.loads(_torch_load(directory / tag / "state.pt", mmap=True)["client_state_json"])

    def load(self, directory: Path, tag: str) -> None:
        state = _torch_load(directory / tag / "state.pt")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def reduce_mean(self, values: list[float]) -> list[float]:
        return values

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def set_single_process_env() -> None:
    """Give DeepSpeed a one-rank world when not started by a launcher (else it looks for MPI)."""
    defaults = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def deepspeed_json(config: TrainerConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config file with batch size, accumulation and clipping from ``config``."""
    path = Path(config.deepspeed_config or "")
    if not path.is_file():
        raise FileNotFoundError(
            f"DeepSpeed config {path} does not exist (trainer.deepspeed_config)"
        )
    ds = json.loads(path.read_text())
    if not isinstance(ds, dict):
        raise ValueError(f"{path} must hold a JSON object")
    if ds.get("fp16", {}).get("enabled"):
        raise ValueError(f"{path}: fp16 does not run on every device here; use bf16 or fp32")
    ds["train_micro_batch_size_per_gpu"] = config.batch_size
    ds["gradient_accumulation_steps"] = config.grad_accum_steps
    ds["train_batch_size"] = config.batch_size * config.grad_accum_steps * world_size
    ds["gradient_clipping"] = config.grad_clip
    ds.setdefault("steps_per_print", 10**9)  # the trainer logs; keep DeepSpeed quiet
    ds.setdefault("wall_clock_breakdown", False)
    return ds


class DeepSpeedEngine:
    """DeepSpeed ZeRO (1/2/3, fp32 or bf16) over however many ranks the launcher started."""

    name = "deepspeed"

    def __init__(self, model: nn.Module, config: TrainerConfig, loss_fn: LossFn | None = None):
        if "RANK" not in os.environ:
            set_single_process_env()
        import deepspeed  # noqa: PLC0415  (only this module imports DeepSpeed)

        self._deepspeed = deepspeed
        deepspeed.init_distributed(verbose=False)
        world_size = int(os.environ["WORLD_SIZE"])
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        if not torch.cuda.is_available() and local_world > 1:
            # ranks on one CPU host share its cores; oversubscribing threads slows every rank
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        self.config = config
        ds_config = deepspeed_json(config, world_size)
        wrapper = LossModule(model, loss_fn)
        params = [p for p in wrapper.parameters() if p.requires_grad]
        optimizer = None if "optimizer" in ds_config else _adamw(params, config)
        scheduler = None
        if optimizer is not None and "scheduler" not in ds_config:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
        self.engine, _, _, _ = deepspeed.initialize(
            model=wrapper,
            model_parameters=params,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=ds_config,
        )
        self.rank = int(self.engine.global_rank)
        self.world_size = int(self.engine.world_size)
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.dtype = torch.bfloat16 if self.engine.bfloat16_enabled() else torch.float32

    @property
    def module(self) -> nn.Module:
        return self.engine.module.model

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def _cast(self, batch: Batch) -> Batch:
        if self.dtype == torch.float32:
            return batch
        return {
            k: v.to(self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in batch.items()
        }

    def train_step(self, micro_batches: list[Batch]) -> tuple[float, dict[str, float]]:
        self.engine.train()
        total, logs_sum = 0.0, {}
        device = self.engine.device
        for batch in micro_batches:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss, logs = self.engine(self._cast(batch))
            self.engine.backward(loss)
            self.engine.step()  # steps the optimizer only at the accumulation boundary
            total += float(loss.detach().float())
            for k, v in _to_float_logs(logs).items():
                logs_sum[k] = logs_sum.get(k, 0.0) + v
        n = len(micro_batches)
        return total / n, {k: v / n for k, v in logs_sum.items()}

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        # DeepSpeed writes `latest` only after every rank's files are on disk
        self.engine.save_checkpoint(str(directory), tag=tag, client_state=client_state)

    def client_state(self, directory: Path, tag: str) -> dict[str, Any]:
        """The ``client_state`` saved with ``directory/tag``, read before DeepSpeed sees the
        folder (so a run of another rank count gets the trainer's error, not DeepSpeed's)."""
        check_pickled_code(directory / tag)
        states = sorted((directory / tag).glob("*mp_rank_00_model_states.pt"))
        if not states:
            raise CheckpointError(f"{directory / tag} holds no DeepSpeed model states")
        saved = _torch_load(states[0], mmap=True)
        return {k: saved[k] for k in CLIENT_KEYS if k in saved}

    def load(self, directory: Path, tag: str) -> None:
        check_pickled_code(directory / tag)
        path, _ = self.engine.load_checkpoint(str(directory), tag=tag)
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load the checkpoint {directory / tag}")

    def reduce_mean(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return (tensor / self.world_size).tolist()

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        torch.distributed.barrier()


def make_engine(model: nn.Module, config: TrainerConfig, loss_fn: LossFn | None = None):
    """DeepSpeed when ``config.deepspeed_config`` is set, else plain PyTorch."""
    if config.deepspeed_config:
        return DeepSpeedEngine(model, config, loss_fn)
    return TorchEngine(model, config, loss_fn)


def read_latest(directory: Path) -> str | None:
    """The tag in ``directory/latest`` if it names an existing checkpoint, else None."""
    latest = Path(directory) / "latest"
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    return tag if (Path(directory) / tag).is_dir() else None


# The keys the trainer passes as ``client_state`` (DeepSpeed stores them at the top level)
CLIENT_KEYS = ("step", "world_size", "config_fingerprint")


def checkpoint_tags(directory: Path) -> list[str]:
    """Complete checkpoints of ``directory``, newest first: the one ``latest`` names and the
    older ``step_*`` folders (a newer one may be a save cut short)."""
    latest = read_latest(directory)
    if latest is None:
        return []
    tags = sorted(p.name for p in Path(directory).glob("step_*") if p.is_dir())
    return sorted({t for t in tags if t <= latest} | {latest}, reverse=True)


def _torch_load(path: Path, mmap: bool = False) -> Any:
    """``torch.load`` of a trusted-format file, never unpickling code; a damaged file raises
    one :class:`CheckpointError` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except UNREADABLE as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is damaged or truncated ({first})") from exc


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove_tree(path: Path) -> None:
    import shutil  # noqa: PLC0415

    shutil.rmtree(path, ignore_errors=True)


def load_fp32_state_dict(
    checkpoint_dir: str | Path, tag: str | None = None
) -> dict[str, torch.Tensor]:
    """Full fp32 model weights (keys of the wrapped model) from a trainer checkpoint directory.

    Reads either a plain-torch checkpoint (``tag/state.pt``) or a DeepSpeed one of any ZeRO stage
    (DeepSpeed's own consolidation of the fp32 master weights), without starting any ranks.
    """
    checkpoint_dir = Path(checkpoint_dir)
    tag = tag or read_latest(checkpoint_dir)
    if tag is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir} (no valid `latest` file)")
    plain = checkpoint_dir / tag / "state.pt"
    if plain.is_file():
        return _torch_load(plain)["model"]
    from deepspeed.utils.zero_to_fp32 import (  # noqa: PLC0415
        get_fp32_state_dict_from_zero_checkpoint,
    )

    check_pickled_code(checkpoint_dir / tag)
    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    # DeepSpeed's consolidation leaves out frozen parameters at ZeRO-1; the rank-0 module states
    # (its own file, written by this run) hold them in full for ZeRO <= 2.
    module_states = checkpoint_dir / tag / "mp_rank_00_model_states.pt"
    if module_states.is_file():
        module = _torch_load(module_states).get("module", {})
        for key, value in module.items():
            if key not in state and torch.is_tensor(value) and value.numel() > 0:
                state[key] = value.float() if value.is_floating_point() else value
    prefix = "model."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
