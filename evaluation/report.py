"""One checkpoint over a split: per-episode scores -> means with 95% intervals, curves, gaps.

``evaluate_checkpoint`` drives :mod:`evaluation.rollouts` over episodes and returns a plain
dict (JSON-ready): for every method (the three action variants and the two references) PSNR,
SSIM, ``lpips_sim`` and PCK@5/10/20 overall and per family, each as mean and 95% interval over
episodes (and, for the true and frozen rollouts, the per-episode values); per-frame curves;
the action-sensitivity gaps; ``fid_sim`` / ``fvd_sim``; and the detector's ceiling on the same
true frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np
from tqdm import tqdm

from evaluation.distribution import fid_sim, fvd_sim
from evaluation.rollouts import (
    ACTION_VARIANTS,
    DEFAULT_OPTIONS,
    REFERENCES,
    EpisodeArrays,
    RolloutOptions,
    imagine,
    references,
    score,
)
from evaluation.scoring import PCK_THRESHOLDS, family_means, mean_ci

METHODS = ACTION_VARIANTS + REFERENCES + ("true_frames",)
GAP_METRICS = ("psnr", "pck@10/wrist", "pck@10/finger", "pck@10/head", "pck@10/all")


def _episode_summary(scores: dict, families: tuple[str, ...]) -> dict[str, float | None]:
    """Scalar per-episode values: psnr, ssim, lpips_sim and PCK per threshold and family."""
    out = {k: float(np.mean(scores[k])) for k in ("psnr", "ssim", "lpips_sim") if k in scores}
    for name in PCK_THRESHOLDS:
        if name in scores:
            for family, value in family_means(scores[name], families).items():
                out[f"{name}/{family}"] = value
    return out


def _curves(per_frame: list[dict], families: tuple[str, ...]) -> dict[str, list]:
    """Per predicted frame index, means over episodes: psnr and PCK@10 per family."""
    curves = {"psnr": np.mean([s["psnr"] for s in per_frame], axis=0).round(3).tolist()}
    if "pck@10" in per_frame[0]:
        stacked = np.stack([s["pck@10"] for s in per_frame])  # (E, F, K)
        for family, values in family_means(stacked.transpose(1, 0, 2), families, axis=0).items():
            if values is not None:
                curves[f"pck@10/{family}"] = [
                    None if np.isnan(v) else round(float(v), 4) for v in values
                ]
    return curves


def evaluate_checkpoint(
    model,
    episodes: Iterable[EpisodeArrays],
    variants_of: Callable[[EpisodeArrays, int], dict],
    detector,
    frames: int,
    seed: int = 0,
    options: RolloutOptions = DEFAULT_OPTIONS,
    label: str = "model",
) -> dict:
    """Score ``model`` on ``episodes``; ``variants_of(episode, index)`` gives the action rows
    (1 + frames, 57) of each action variant. ``detector`` may be None (no PCK, no *_sim)."""
    context = model.config.context_frames
    families = detector.config.point_families if detector is not None else ()
    per_episode = {m: [] for m in METHODS}
    per_frame = {m: [] for m in METHODS}
    real_clip, fake_clip = [], []  # per episode (frames, D) detector features
    episodes = list(episodes)
    start = time.perf_counter()
    for index, episode in enumerate(tqdm(episodes, desc=label, leave=False)):
        predicted = imagine(
            model,
            episode,
            variants_of(episode, index),
            frames,
            seed + index,
            options,
        )
        predicted.update(references(model, episode, frames))
        truth = score(episode.rgb[context : context + frames], episode, context, detector)
        truth_levels = truth.pop("_levels", None)
        for method, frames_hat in predicted.items():
            scores = score(frames_hat, episode, context, detector, truth_levels)
            scores.pop("_levels", None)
            features = scores.pop("_features", None)
            per_episode[method].append(_episode_summary(scores, families))
            per_frame[method].append(scores)
            if method == "true" and features is not None:
                fake_clip.append(features)
        truth_features = truth.pop("_features", None)
        per_episode["true_frames"].append(_episode_summary(truth, families))
        per_frame["true_frames"].append(truth)
        if truth_features is not None:
            real_clip.append(truth_features)
    result = {
        "episodes": len(episodes),
        "frames": frames,
        "seconds": round(time.perf_counter() - start, 1),
        "methods": {m: _aggregate(per_episode[m]) for m in METHODS},
        "curves": {m: _curves(per_frame[m], families) for m in METHODS},
        "sensitivity": _sensitivity(per_episode),
        # the true and frozen rollouts' per-episode values, so that runs of several seeds
        # can be averaged episode by episode (evaluation.ablations)
        "per_episode": {m: per_episode[m] for m in ("true", "frozen")},
    }
    if detector is not None:
        result["fid_sim"] = fid_sim(np.concatenate(real_clip), np.concatenate(fake_clip))
        result["fvd_sim"] = fvd_sim(np.stack(real_clip), np.stack(fake_clip))
    return result


def _aggregate(rows: list[dict]) -> dict[str, dict]:
    keys = sorted({k for row in rows for k in row})
    return {k: mean_ci([row.get(k) for row in rows]) for k in keys}


def _sensitivity(per_episode: dict[str, list[dict]]) -> dict[str, dict]:
    """Per-episode gaps true - frozen and true - other, as means with 95% intervals."""
    out = {}
    for other in ("frozen", "other"):
        for metric in GAP_METRICS:
            gaps = []
            for a, b in zip(per_episode["true"], per_episode[other], strict=True):
                if a.get(metric) is not None and b.get(metric) is not None:
                    gaps.append(a[metric] - b[metric])
            out[f"{metric} true-{other}"] = mean_ci(gaps)
    return out
