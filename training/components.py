"""Weights of one trained component (tokenizer, ssl-vit) as a self-describing safetensors file,
and the shared command-line surface of the entry scripts.

A component file holds the module's state dict and string metadata: ``format`` (which
component), ``config`` (its config as JSON) and ``code_version``. Loading never unpickles and
checks the config against the module it is loaded into.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dexac_env.replay.store import StoreError
from training.config import ConfigError

FORMATS = ("dexac-tokenizer", "dexac-ssl-vit")


def save_component(
    path: str | Path,
    module: nn.Module,
    fmt: str,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``module``'s weights and buffers with their config to ``path`` (.safetensors)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    from world_model import __version__  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    metadata = {"format": fmt, "config": json.dumps(config), "code_version": __version__}
    metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def load_component(path: str | Path, fmt: str, into: nn.Module, config: dict[str, Any]) -> None:
    """Load a component file into ``into``; its config must equal ``config`` (one clear error)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {fmt} checkpoint at {path}")
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != fmt:
            raise ValueError(
                f"{path} is not a {fmt} checkpoint (format={metadata.get('format')!r})"
            )
        saved = json.loads(metadata["config"])
        if _normalise(saved) != _normalise(config):
            differ = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise ValueError(
                f"{path} was trained with another {fmt} config (differs in {differ}): the file has "
                f"{ {k: saved.get(k) for k in differ} }, the model wants { {k: config.get(k) for k in differ} }"
            )
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    into.load_state_dict(state, strict=True)


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values))


# -- entry-script helpers --------------------------------------------------------------------


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``, as ``load_config`` takes them."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def entry_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    """The arguments every training entry accepts (the DeepSpeed launcher adds --local_rank)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help="YAML run config")
    add_set_argument(parser, "override a config entry, e.g. --set trainer.steps=100 (repeatable)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the newest checkpoint in trainer.out_dir"
    )
    parser.add_argument(
        "--deepspeed_config",
        "--deepspeed-config",
        default=None,
        help="DeepSpeed JSON (overrides trainer.deepspeed_config)",
    )
    parser.add_argument(
        "--no-deepspeed",
        action="store_true",
        help="train with plain PyTorch even if the config names a DeepSpeed JSON",
    )
    parser.add_argument(
        "--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS
    )  # passed by the deepspeed launcher
    return parser


def engine_overrides(args: argparse.Namespace) -> list[str]:
    """The --deepspeed_config / --no-deepspeed flags as config overrides."""
    extra = list(args.overrides)
    if args.deepspeed_config:
        extra.append(f"trainer.deepspeed_config={args.deepspeed_config}")
    if args.no_deepspeed:
        extra.append("trainer.deepspeed_config=null")
    return extra


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run an entry's ``main``; user errors become one line on stderr and exit code 2."""
    try:
        return main(argv)
    except (ConfigError, StoreError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
