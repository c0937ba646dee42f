"""Where the default world-model checkpoint and the default episode store live.

``gym.make("DexACWorld-v0")`` with no arguments uses both. They ship inside the package under
``dexac_env/assets/``; the environment variables ``DEXAC_CHECKPOINT`` and ``DEXAC_STORE``
override them (useful for a checkpoint trained locally). A missing file raises
:class:`FileNotFoundError` with one line that says how to make it. :func:`load_world_model`
and :func:`open_store` resolve the envs' ``checkpoint=`` / ``store=`` arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dexac_env.actions import ACTION_DIM

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_CHECKPOINT = ASSETS_DIR / "dexac_default.safetensors"
DEFAULT_STORE = ASSETS_DIR / "default_episodes.zarr"
CHECKPOINT_ENV_VAR = "DEXAC_CHECKPOINT"
STORE_ENV_VAR = "DEXAC_STORE"


def default_checkpoint_path() -> Path:
    """The checkpoint used when none is given (``$DEXAC_CHECKPOINT`` or the shipped one)."""
    path = Path(os.environ.get(CHECKPOINT_ENV_VAR) or DEFAULT_CHECKPOINT)
    if not path.is_file():
        raise FileNotFoundError(
            f"no world-model checkpoint at {path}: pass checkpoint=PATH (a .safetensors file "
            f"written by WorldModel.save_pretrained, e.g. by `python -m training.train_wm`), or "
            f"set ${CHECKPOINT_ENV_VAR}, or reinstall a release that ships {DEFAULT_CHECKPOINT.name}"
        )
    return path


def default_store_path() -> Path:
    """The episode store used when none is given (``$DEXAC_STORE`` or the shipped one)."""
    path = Path(os.environ.get(STORE_ENV_VAR) or DEFAULT_STORE)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(
            f"no episode store at {path}: pass store=PATH to an episode store, or generate one "
            f"from the simulator (`dexac sim generate --out {DEFAULT_STORE.name}`, see "
            f"docs/env.md) and set ${STORE_ENV_VAR} or copy it to {DEFAULT_STORE}"
        )
    return path


def _check_action_dim(action_dim: int, source: str) -> None:
    if action_dim != ACTION_DIM:
        raise ValueError(
            f"{source} was trained on {action_dim}-D actions, DexACWorld-v0 needs "
            f"{ACTION_DIM}-D actions (dexac_env.actions); use a DexAC world-model checkpoint"
        )


def load_world_model(checkpoint: Any, device: str = "cpu") -> Any:
    """A ready ``WorldModel`` (eval mode, on ``device``) from an instance, a path, or None."""
    if checkpoint is None or isinstance(checkpoint, str | Path):
        from world_model.checkpoint import read_metadata
        from world_model.facade import WorldModel

        path = default_checkpoint_path() if checkpoint is None else Path(checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        # Check the action size from the metadata before building anything.
        _check_action_dim(len(read_metadata(str(path))["action_mean"]), f"checkpoint {path}")
        model = WorldModel.from_pretrained(str(path), device=device)
    elif all(hasattr(checkpoint, m) for m in ("encode", "decode", "predict", "config")):
        model = checkpoint.to(device)
    else:
        raise ValueError(
            f"checkpoint must be a WorldModel or a path to its .safetensors, got "
            f"{type(checkpoint).__name__}"
        )
    _check_action_dim(int(np.asarray(model.action_mean).shape[-1]), "the world model")
    return model.eval()


def open_store(store: Any = None, mode: str = "r"):
    """An ``EpisodeStore`` from an open store, a path, or None (the default store).

    The one way every env and training script opens a store. A missing default raises
    :class:`FileNotFoundError` (see :func:`default_store_path`); a path with nothing at it raises
    :class:`~dexac_env.replay.store.StoreError` (a ``ValueError``) that says how to make one.
    ``mode``: ``"r"`` or ``"a"`` (append, e.g. to cache latents)."""
    from dexac_env.replay.store import EpisodeStore, StoreError

    if isinstance(store, EpisodeStore):
        return store
    path = default_store_path() if store is None else Path(store)
    if not path.exists():
        raise StoreError(
            f"episode store {path} does not exist; generate one with `dexac sim generate` "
            "or import a data set first"
        )
    return EpisodeStore.open(path, mode=mode)
