"""Extract the frozen perception parts of a world-model checkpoint as component files.

    python -m training.extract_components dexac_env/assets/dexac_default.safetensors --out-dir checkpoints

writes ``tokenizer_<size>.safetensors`` (format ``dexac-tokenizer``) and, when the model has an
ssl-vit semantic encoder, ``ssl_vit_<size>.safetensors`` (``dexac-ssl-vit``): the files that
``cache_latents.py`` and ``train_wm.py`` read. Why: a baseline or ablation must share the exact
tokenizer and semantic encoder of the model it is compared with, and the shipped checkpoint is
the only place those weights are kept (a compact checkpoint stores them in float16, so the
extracted weights are the float16 values the shipped model itself runs with). The ssl-vit's
training-only tensors (DINO heads) are not in a compact checkpoint; they are written freshly
initialised, which changes nothing the frozen encoder computes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.components import run_main, save_component


def extract(checkpoint: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write the component files of ``checkpoint`` into ``out_dir``; returns their paths."""
    from world_model import WorldModel  # noqa: PLC0415

    model = WorldModel.from_pretrained(str(checkpoint))
    config = model.config
    out_dir = Path(out_dir)
    written = {
        "tokenizer": save_component(
            out_dir / f"tokenizer_{config.size}.safetensors",
            model.tokenizer,
            "dexac-tokenizer",
            config.tokenizer.to_dict(),
            extra={"extracted_from": str(checkpoint)},
        )
    }
    ssl_vit = getattr(model.semantic_encoder, "ssl_vit", None)
    if ssl_vit is not None:
        written["semantic"] = save_component(
            out_dir / f"ssl_vit_{config.size}.safetensors",
            ssl_vit,
            "dexac-ssl-vit",
            config.semantic.ssl_vit.to_dict(),
            extra={"extracted_from": str(checkpoint)},
        )
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a WorldModel .safetensors file")
    parser.add_argument("--out-dir", default="checkpoints", help="folder for the component files")
    args = parser.parse_args(argv)
    for name, path in extract(args.checkpoint, args.out_dir).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
