"""World-model checkpoints: one safetensors file, self-describing, never unpickled.

The file holds every weight and buffer of the :class:`WorldModel` (DiT, conditioning with its
action statistics, tokenizer with its latent statistics, reward head, ssl-vit-tiny when used).
Its string metadata holds the full config (JSON), the action and latent statistics (JSON, for
readers that do not build the model), the code version and, for the wan tokenizer, the
AutoencoderKLWan config. Frozen external encoders (DINO, the text model) are not stored: they
are read from their own directories / package.
"""

from __future__ import annotations

import contextlib
import json
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from world_model.version import __version__

FORMAT = "dexac-world-model"
FILENAME = "model.safetensors"


def _file(path: str) -> str:
    return path if path.endswith(".safetensors") else os.path.join(path, FILENAME)


@contextlib.contextmanager
def _open(target: str):
    """``safe_open`` whose errors on a damaged file (truncated, not safetensors) are one
    ValueError naming the file, not safetensors' own exception."""
    try:
        with safe_open(target, framework="pt", device="cpu") as handle:
            yield handle
    except SafetensorError as exc:
        raise ValueError(
            f"{target} is damaged or not a safetensors file ({exc}); re-download or re-export it"
        ) from exc


# Tensors only the ssl-vit's self-distillation training needs; inference reads the teacher.
TRAINING_ONLY_PREFIXES = (
    "semantic_encoder.ssl_vit.student.",
    "semantic_encoder.ssl_vit.student_head.",
    "semantic_encoder.ssl_vit.teacher_head.",
    "semantic_encoder.ssl_vit.center",
)
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int8": torch.float16}
# "int8": weight matrices and conv kernels of at least this many elements are stored as int8
# with one float32 scale per output channel (symmetric, scale = max |w| / 127 over the
# channel); everything else as float16. The scale of tensor NAME is the tensor NAME + SCALE.
# Written here rather than with torch.ao / optimum-quanto: those keep quantised modules at run
# time, while this is storage only (loading gives plain float weights and the same modules).
INT8_MIN_ELEMENTS = 4096
SCALE = ".int8_scale"


def _quantise(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, ...) float -> (int8 of the same shape, float32 (out,) per-channel scales)."""
    rows = tensor.float().flatten(1)  # (out, in ...)
    scale = (rows.abs().amax(dim=1) / 127.0).clamp_min(1e-12)  # (out,); all-zero rows stay 0
    quantised = torch.round(rows / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return quantised.view(tensor.shape), scale


def _dequantise(quantised: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (quantised.ndim - 1)
    return quantised.float() * scale.view(shape)


def save_world_model(model, path: str, inference_only: bool = False, dtype: str = "float32") -> str:
    """Write ``model`` to ``path`` (directory or .safetensors file); returns the file path.

    ``inference_only`` leaves out the tensors only ssl-vit training uses; ``dtype="float16"``
    stores floating-point weights in half precision, ``dtype="int8"`` stores weight matrices
    as int8 with per-output-channel scales and the rest in half precision (loading casts back
    to the model's dtype). All exist to keep shipped checkpoints small; a compact file loads for
    inference only.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    target = _file(path)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if inference_only and name.startswith(TRAINING_ONLY_PREFIXES):
            continue
        tensor = tensor.detach().cpu()
        if (
            dtype == "int8"
            and tensor.is_floating_point()
            and tensor.ndim >= 2
            and (tensor.numel() >= INT8_MIN_ELEMENTS)
        ):
            tensor, tensors[name + SCALE] = _quantise(tensor)
        elif tensor.is_floating_point():
            tensor = tensor.to(STORAGE_DTYPES[dtype])
        tensors[name] = tensor.contiguous()
    metadata = {
        "format": FORMAT,
        "inference_only": json.dumps(inference_only),
        "storage_dtype": json.dumps(dtype),
        "code_version": __version__,
        "config": json.dumps(model.config.to_dict()),
        "action_mean": json.dumps(model.action_mean.tolist()),
        "action_std": json.dumps(model.action_std.tolist()),
        "latent_mean": json.dumps(model.tokenizer.latent_mean.tolist()),
        "latent_std": json.dumps(model.tokenizer.latent_std.tolist()),
    }
    if model.config.tokenizer.kind == "wan":
        metadata["tokenizer_vae_config"] = json.dumps(dict(model.tokenizer.vae.config))
    save_file(tensors, target, metadata=metadata)
    return target


def read_metadata(path: str) -> dict:
    """The parsed metadata of a checkpoint (config as a dict, statistics as lists)."""
    target = _file(path)
    if not os.path.isfile(target):
        raise ValueError(f"no world-model checkpoint at {target}")
    with _open(target) as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{target} is not a {FORMAT} checkpoint (format={metadata.get('format')!r})"
        )
    parsed = {
        key: json.loads(value)
        for key, value in metadata.items()
        if key not in ("format", "code_version")
    }
    parsed["code_version"] = metadata.get("code_version", "unknown")
    return parsed


def check_state(
    expected: dict[str, torch.Tensor], found: dict[str, tuple[int, ...]], source: str
) -> None:
    """One ValueError naming every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mis_shaped = [
        f"{name}: config gives {tuple(expected[name].shape)}, file has {found[name]}"
        for name in sorted(set(expected) & set(found))
        if tuple(expected[name].shape) != tuple(found[name])
    ]
    if missing or unexpected or mis_shaped:

        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        raise ValueError(
            f"the config does not match the weights in {source}: "
            f"{len(missing)} missing [{head(missing)}], {len(unexpected)} unexpected "
            f"[{head(unexpected)}], {len(mis_shaped)} with another shape [{head(mis_shaped)}]"
        )


def read_weights(
    path: str, expected: dict[str, torch.Tensor], inference_only: bool = False
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, after one :func:`check_state` against ``expected`` (the state
    dict of the model built from the file's config); an ``inference_only`` file leaves the
    ssl-vit training tensors out on purpose. ``WorldModel.from_pretrained`` builds the model:
    this module knows the file, not the model, so it imports nothing from the facade."""
    target = _file(path)
    if inference_only:
        expected = {k: v for k, v in expected.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    with _open(target) as handle:
        stored = set(handle.keys())
        names = [name for name in stored if not name.endswith(SCALE)]
        found = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
        check_state(expected, found, target)
        state = {name: handle.get_tensor(name) for name in names}
        for name in names:
            if name + SCALE in stored:  # int8 storage
                state[name] = _dequantise(state[name], handle.get_tensor(name + SCALE))
        return state
