"""Held-out rollout quality (an alias kept for old commands): runs ``dexac evaluate``.

    python -m training.evaluate_rollouts --checkpoint A --checkpoint B --store data/sim.zarr \
        --split test --frames 16 --out benchmarks/results/eval_16.json

Every option is ``dexac evaluate``'s (see ``dexac evaluate --help`` and docs/evaluation.md):
the rollouts go through the one rollout loop (``world_model.rollout``) and are scored with
PSNR/SSIM, per-family PCK, the ``_sim`` distribution metrics and action sensitivity.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from dexac_env.cli import main as dexac_main  # noqa: PLC0415

    return dexac_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
