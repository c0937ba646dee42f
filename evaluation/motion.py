"""How far each action family moves in the image: is the motion legible to the model?

    python -m evaluation.motion --store data/sim.zarr --split train --chunk 4 --cell-px 8 --token-px 16

For every window of ``chunk`` frames (the model's action chunk) and every point visible at both
ends: the image displacement of the **wrists**, of the **fingertips relative to their wrist**
(finger articulation, with the hand's own motion removed), and of the static **head** landmarks
(pure camera motion), in pixels, in latent cells (``cell-px`` pixels per latent cell: the
tokenizer's spatial compression) and in DiT tokens (``token-px``: compression x patch size).
Prints and writes (``--out``) median / 90th percentile per family. Reads the store's keypoint
arrays only (plain arrays from dexac_env's store).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

WRISTS = (0, 6)  # KEYPOINT_NAMES: left wrist, left tips 1-5, right wrist, right tips 7-11
TIPS = {0: range(1, 6), 6: range(7, 12)}


def displacements(points: np.ndarray, visible: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    """points (T, K, 2) (keypoints then landmarks), visible (T, K) -> pixel displacements over
    ``chunk`` frames per family (1-D arrays)."""
    a, b = slice(0, len(points) - chunk), slice(chunk, len(points))
    both = visible[a] & visible[b]
    move = np.linalg.norm(points[b] - points[a], axis=-1)  # (W, K)
    out = {"wrist": move[:, list(WRISTS)][both[:, list(WRISTS)]]}
    finger = []
    for wrist, tips in TIPS.items():
        rel = points[:, list(tips)] - points[:, wrist : wrist + 1]  # (T, 5, 2)
        ok = both[:, list(tips)] & both[:, wrist : wrist + 1]
        finger.append(np.linalg.norm(rel[b] - rel[a], axis=-1)[ok])
    out["finger (rel. wrist)"] = np.concatenate(finger)
    if points.shape[1] > 12:
        out["head (landmarks)"] = move[:, 12:][both[:, 12:]]
    return out


def summarise(store, split: str | None, chunk: int, cell_px: float, token_px: float) -> dict:
    from evaluation.cli import episode_points  # noqa: PLC0415

    pooled: dict[str, list] = {}
    for episode in store.episodes(split):
        for family, values in displacements(*episode_points(episode), chunk).items():
            pooled.setdefault(family, []).append(values)
    out = {}
    for family, parts in pooled.items():
        px = np.concatenate(parts)
        med, p90 = (float(np.percentile(px, q)) for q in (50, 90))
        out[family] = {
            "median_px": round(med, 2),
            "p90_px": round(p90, 2),
            "median_cells": round(med / cell_px, 3),
            "p90_cells": round(p90 / cell_px, 3),
            "median_tokens": round(med / token_px, 3),
            "p90_tokens": round(p90 / token_px, 3),
            "samples": int(px.size),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from dexac_env.replay.store import EpisodeStore  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/sim.zarr")
    parser.add_argument("--split", default="train")
    parser.add_argument("--chunk", type=int, default=4, help="frames per window (action chunk)")
    parser.add_argument("--cell-px", type=float, default=8.0, help="pixels per latent cell")
    parser.add_argument("--token-px", type=float, default=16.0, help="pixels per DiT token")
    parser.add_argument("--out", default=None, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    summary = summarise(
        EpisodeStore.open(args.store), args.split, args.chunk, args.cell_px, args.token_px
    )
    print(f"{'family':<22}{'median px':>10}{'p90 px':>8}{'median cells':>14}{'median tokens':>15}")
    for family, s in summary.items():
        print(
            f"{family:<22}{s['median_px']:>10.2f}{s['p90_px']:>8.2f}"
            f"{s['median_cells']:>14.3f}{s['median_tokens']:>15.3f}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "families": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
