"""Typed, frozen training configs, read from YAML once at the entry point.

A run config is a tree of frozen dataclasses; every field has a docstring line in its class's
``Attributes`` section. :func:`load_config` reads a YAML file, applies ``--set key=value``
overrides (dotted keys, YAML-parsed values) and builds the tree; a key that does not exist
raises :class:`ConfigError` naming the key and the valid ones, a value of the wrong type raises
one naming the expected type. Nothing downstream mutates a config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file problem a user can fix; the message is one line meant to be printed."""


@dataclass(frozen=True)
class TrainerConfig:
    """How to optimise, log and checkpoint; shared by every ``(loss, logs)`` model.

    Attributes:
        steps: optimizer steps of the whole run (a resumed run stops at the same step).
        batch_size: samples per rank per micro-step.
        grad_accum_steps: micro-steps per optimizer step; global batch =
            batch_size * grad_accum_steps * world_size.
        lr: peak learning rate (AdamW).
        min_lr_ratio: the cosine schedule decays to lr * min_lr_ratio at ``steps``.
        warmup_steps: linear warm-up steps from 0 to ``lr``.
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW betas.
        grad_clip: global gradient-norm clip (0 = off).
        seed: seeds the model init, the data order (with the epoch) and the per-step noise.
        log_every: steps between progress-bar updates and TensorBoard writes (JSONL gets
            every step).
        checkpoint_every: steps between training checkpoints (0 = only the final one).
        keep_checkpoints: training checkpoints kept on disk (oldest deleted first).
        out_dir: run directory: ``metrics.jsonl``, ``checkpoints/``, ``summary.json``,
            ``tensorboard/``, ``run_config.json``.
        deepspeed_config: path of a DeepSpeed JSON config; None trains with plain PyTorch in
            one process. Batch size, grad accumulation and clipping are set from this config.
        tensorboard: also write scalars for TensorBoard (needs the ``tensorboard`` package).
        log_samples: write the dataset indices of every step's samples (all ranks) to
            ``metrics.jsonl`` (used to check that resumed runs lose or repeat nothing).
        progress_bar: show a tqdm bar on rank 0 (loss, samples/s, ETA).
        num_workers: DataLoader worker processes per rank.
    """

    steps: int = 1000
    batch_size: int = 8
    grad_accum_steps: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    out_dir: str = "runs/default"
    deepspeed_config: str | None = None
    tensorboard: bool = False
    log_samples: bool = False
    progress_bar: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0 or self.warmup_steps < 0 or self.num_workers < 0:
            raise ConfigError("trainer.checkpoint_every, warmup_steps, num_workers must be >= 0")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"trainer.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


@dataclass(frozen=True)
class WindowDataConfig:
    """Windows of cached latents for world-model training (see ``training.datasets``).

    Attributes:
        store: path of the episode store (with ``latent`` cached by ``cache_latents.py``), or
            of a training pack made from one (``python -m training.latent_pack``, a ``.npz``).
        split: episodes of this split are used ("train", "val" or "test").
        window_stride: latent frames between the starts of consecutive windows.
        semantic_frame: which frame's cached semantic image features condition a window:
            "rollout" (any reset frame up to the window's last context frame, as during an
            env rollout), "last_context", or "first_context" (the episode's first reset frame,
            as a rollout from an episode start; training/datasets.py SEMANTIC_FRAMES).
        also_stores: more stores or packs (latents from the same tokenizer) whose windows of
            ``split`` join ``store``'s; actions are normalised with ``store``'s statistics.
    """

    store: str = "data/sim.zarr"
    split: str = "train"
    window_stride: int = 1
    semantic_frame: str = "rollout"
    also_stores: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.window_stride < 1:
            raise ConfigError(f"data.window_stride must be >= 1, got {self.window_stride}")
        if self.semantic_frame not in ("rollout", "last_context", "first_context"):
            raise ConfigError(
                "data.semantic_frame must be 'rollout', 'last_context' or 'first_context', got "
                f"{self.semantic_frame!r}"
            )


@dataclass(frozen=True)
class ClipDataConfig:
    """Short pixel clips for tokenizer / semantic-encoder training.

    Attributes:
        store: path of the episode store.
        split: episodes of this split are used.
        clip_frames: frames per sample (1 for a frame-wise VAE; 1 + 4k for a causal video VAE).
        clip_stride: frames between the starts of consecutive clips.
    """

    store: str = "data/sim.zarr"
    split: str = "train"
    clip_frames: int = 1
    clip_stride: int = 1

    def __post_init__(self) -> None:
        if self.clip_frames < 1 or self.clip_stride < 1:
            raise ConfigError("data.clip_frames and data.clip_stride must be >= 1")


@dataclass(frozen=True)
class WMModelConfig:
    """Which world model to build: ``WorldModelConfig.from_size(size, variant, **overrides)``.

    Attributes:
        size: a size in the facade's registry ("tiny", ...).
        variant: action conditioning ("dexac", "dexac_no_local", "dexac_no_global",
            "mlp_global", "frame_adaln").
        overrides: keyword overrides passed to ``WorldModelConfig.from_size``.
        tokenizer_checkpoint: safetensors file written by ``train_tokenizer.py --model vae``;
            its weights and latent statistics replace the facade's fresh tokenizer (must be
            the tokenizer that cached the store's latents).
        semantic_checkpoint: safetensors file written by ``train_tokenizer.py --model
            ssl_vit`` for the semantic image encoder (None: the facade's default).
        init_checkpoint: a WorldModel file (an export) whose weights start this run, e.g. to
            fine-tune the shipped default with a new zero-initialised part (the keypoint
            prior). It is loaded first, so the two checkpoints above, when named, replace its
            tokenizer and semantic encoder (the named tokenizer is the one that cached the
            training latents: a fine-tune onto a new tokenizer names it); every tensor of the
            file must fit the model, and the model's tensors the file lacks keep their init
            (they are listed at start).
    """

    size: str = "tiny"
    variant: str = "dexac"
    overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer_checkpoint: str | None = None
    semantic_checkpoint: str | None = None
    init_checkpoint: str | None = None


@dataclass(frozen=True)
class OwnRolloutConfig:
    """Training on the model's own rollouts (scheduled sampling for autoregressive video, as
    in DIAMOND's and GameNGen's drift discussion and Self-Forcing): each window is read
    ``chunks`` action chunks longer; the model first predicts those chunks itself, without
    gradients, from the window's real context and the recorded actions, and for a
    ``probability`` share of the windows the scored chunk is then predicted from that imagined
    context instead of the recorded one. The target stays the recorded chunk, so the model
    learns to pull a drifted context back to the world, the error an env rollout makes when
    it feeds its own frames back.

    Attributes:
        chunks: imagined chunks before the scored one (0 = off: plain teacher forcing). With
            ``chunks >= context_frames / chunk_frames`` the whole context is imagined.
        probability: share of windows whose context is the imagined one (per window).
        sampler_steps: Euler steps of each imagined chunk (the shipped sampler's count).
    """

    chunks: int = 0
    probability: float = 0.5
    sampler_steps: int = 2

    def __post_init__(self) -> None:
        if self.chunks < 0 or self.sampler_steps < 1:
            raise ConfigError(
                f"rollout.chunks must be >= 0 and rollout.sampler_steps >= 1, got "
                f"{self.chunks}, {self.sampler_steps}"
            )
        if not 0 <= self.probability <= 1:
            raise ConfigError(f"rollout.probability must be in [0, 1], got {self.probability}")


@dataclass(frozen=True)
class WMRunConfig:
    """A world-model training run (``training/train_wm.py``).

    Attributes:
        model: which world model.
        data: which windows.
        trainer: how to train.
        rollout: training on the model's own rollouts (off by default).
    """

    model: WMModelConfig = field(default_factory=WMModelConfig)
    data: WindowDataConfig = field(default_factory=WindowDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    rollout: OwnRolloutConfig = field(default_factory=OwnRolloutConfig)

    def world_model_config(self):
        """The ``WorldModelConfig`` of ``model`` (size preset + variant + overrides); a bad
        size, variant or override is one ConfigError."""
        from world_model import WorldModelConfig  # noqa: PLC0415

        try:
            return WorldModelConfig.from_size(
                self.model.size, variant=self.model.variant, **self.model.overrides
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"model: {exc}") from exc


@dataclass(frozen=True)
class DistillRunConfig:
    """A step-distillation run (``training/distill_wm.py``, world_model/distill.py).

    Attributes:
        teacher: the WorldModel file (.safetensors) whose Euler sampler is distilled.
        student_steps: sampler steps of the student; the teacher is matched at twice as many.
        student_init: a WorldModel file the student starts from (e.g. an earlier student, to
            distil longer); None = a copy of the teacher.
        data: the windows (the teacher's training windows: same store or pack).
        trainer: how to train.
    """

    teacher: str = "dexac_env/assets/dexac_default.safetensors"
    student_steps: int = 1
    student_init: str | None = None
    data: WindowDataConfig = field(default_factory=WindowDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.student_steps < 1:
            raise ConfigError(f"student_steps must be >= 1, got {self.student_steps}")


@dataclass(frozen=True)
class TokenizerModelConfig:
    """Which perception model ``train_tokenizer.py`` trains. (The reward head is trained with
    the world model: ``WorldModel.loss`` adds its loss whenever the store has rewards.)

    Attributes:
        kind: "vae" (the VideoTokenizer) or "ssl_vit" (the DINO-style semantic image encoder).
        wm_size: the world-model size whose tokenizer / ssl-vit config is the starting point,
            so the trained weights fit that world model.
        overrides: fields of TokenizerConfig (vae) or SSLViTConfig (ssl_vit) that differ from
            the ``wm_size`` preset.
        latent_stats_frames: frames sampled from the store to fit the VAE's latent mean/std
            after training.
        teacher_momentum: ssl_vit only: EMA momentum of the teacher update after every step.
        init_checkpoint: a tokenizer file (``train_tokenizer.py``'s output) whose weights start
            this run (vae only): a fine-tune.
        hard_pixel_weight, hard_pixel_fraction: vae only: weight of the worst pixels' error
            term of ``VideoTokenizer.loss`` and the share of each frame's pixels it averages.
        hue_augment: vae only: the share of training frames given a random hue rotation
            (``world_model.object_locator.rotate_hue``), so that colours no training frame shows
            are kept rather than drawn as the nearest training colour.
    """

    kind: str = "vae"
    wm_size: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    latent_stats_frames: int = 256
    teacher_momentum: float = 0.996
    init_checkpoint: str | None = None
    hard_pixel_weight: float = 0.0
    hard_pixel_fraction: float = 0.02
    hue_augment: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("vae", "ssl_vit"):
            raise ConfigError(f"model.kind must be 'vae' or 'ssl_vit', got {self.kind!r}")
        vae_only = {"init_checkpoint": self.init_checkpoint is not None,
                    "hard_pixel_weight": self.hard_pixel_weight != 0.0,
                    "hue_augment": self.hue_augment != 0.0}
        if self.kind != "vae" and any(vae_only.values()):
            raise ConfigError(f"model.{', '.join(k for k, v in vae_only.items() if v)}: "
                              "vae only")
        if self.hard_pixel_weight < 0 or not 0.0 < self.hard_pixel_fraction <= 1.0:
            raise ConfigError(f"model.hard_pixel_weight must be >= 0 and hard_pixel_fraction in "
                              f"(0, 1], got {self.hard_pixel_weight}, {self.hard_pixel_fraction}")
        if not 0.0 <= self.hue_augment <= 1.0:
            raise ConfigError(f"model.hue_augment must be in [0, 1], got {self.hue_augment}")


@dataclass(frozen=True)
class TokenizerRunConfig:
    """A perception-model training run (``training/train_tokenizer.py``).

    Attributes:
        model: which model.
        data: which clips.
        trainer: how to train.
        output: where the trained weights go (one safetensors file with its config).
    """

    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    output: str = "checkpoints/tokenizer.safetensors"


# -- building dataclasses from mappings ------------------------------------------------------


def from_mapping(cls: type[T], values: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursively; unknown keys -> :class:`ConfigError`."""
    where = prefix.rstrip(".") or "the top level"
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' in {where}; valid keys: {sorted(fields)}"
        )
    kwargs = {
        name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in values.items()
    }
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        return tuple(_coerce(args[0], v, key) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key {key!r} expects a list of {len(args)}, got {value!r}")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} expects a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        return _as_float(value, key)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
    if hint in (int, str) and (not isinstance(value, hint) or isinstance(value, bool)):
        raise ConfigError(f"config key {key!r} expects {hint.__name__}, got {value!r}")
    return value


def _as_float(value: Any, key: str) -> float:
    """A number, or a string that spells one: PyYAML (YAML 1.1) reads ``1e-3`` as a string."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number):
        raise ConfigError(f"config key {key!r} expects a finite number, got {value!r}")
    return number


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-safe dict of a config tree (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def fingerprint(values: dict[str, Any]) -> str:
    """Short stable hash of a JSON-safe dict (identifies a run's config in its checkpoints)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, returning a copy."""
    values = json.loads(json.dumps(values))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return values


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read ``path`` (YAML; None = all defaults), apply overrides and build ``cls``."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a YAML mapping at the top level")
    return from_mapping(cls, apply_overrides(values, overrides or []))
