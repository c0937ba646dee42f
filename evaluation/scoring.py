"""Keypoint accuracy per family, confidence intervals, the detector's ceiling.

Definitions (stated once here; docs/evaluation.md explains them):

- PCK@p: a ground-truth-visible point is correct when the detector found it in the scored
  frame and its detection lies strictly within p% of the image side of the true position
  (p = 5, 10, 20; ``world_model.metrics.pck_correct``). The image side, not a hand size, is
  the reference length because head landmarks have no hand size, and it is what the paper's
  threshold convention means for a fixed egocentric frame. At 64 px: 3.2, 6.4, 12.8 px.
- Families: ``wrist`` (2 wrists), ``finger`` (10 fingertips), ``head`` (static scene landmarks,
  whose image motion is pure head motion; not available when the store has none).
- Overall PCK pools all scored points of all families.
- Intervals: mean over episodes with a 95% Student-t interval (episodes are the independent
  units; frames of one episode are not).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from world_model.metrics import pck_correct

PCK_THRESHOLDS = {"pck@5": 0.05, "pck@10": 0.10, "pck@20": 0.20}


def point_correctness(detections, points_uv, visible, side: float) -> dict[str, np.ndarray]:
    """{"pck@p": (..., K) 1/0/NaN} for detections (uv, found) against the true points."""
    return {
        name: pck_correct(detections.uv, points_uv, visible, t, side, found=detections.found)
        for name, t in PCK_THRESHOLDS.items()
    }


def family_means(correct: np.ndarray, families: tuple[str, ...], axis=None) -> dict[str, float]:
    """Overall and per-family PCK of a (..., K) correctness array (NaN = not scored).

    ``axis`` None reduces everything to floats; a family with no scored point gives None
    ("not available", never 0)."""
    families = np.asarray(families)
    out = {"all": _nanmean(correct, axis)}
    for family in ("wrist", "finger", "head"):
        mask = families == family
        out[family] = _nanmean(correct[..., mask], axis) if mask.any() else None
    return out


def _nanmean(values: np.ndarray, axis):
    if axis is None:
        finite = values[~np.isnan(values)]
        return float(finite.mean()) if finite.size else None
    with warnings.catch_warnings():  # a frame with no scored point is NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values.reshape(*values.shape[: axis + 1], -1), axis=-1)


def mean_ci(values) -> dict[str, float | int | None]:
    """Mean and 95% Student-t half-width over independent units (NaN/None dropped)."""
    x = np.asarray([v for v in np.ravel(values) if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = (
        float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
        if x.size > 1
        else None
    )
    return {"mean": float(x.mean()), "ci95": half, "n": int(x.size)}


def detector_ceiling(detector, frames, points_uv, visible) -> dict[str, float | None]:
    """The detector's own PCK per family on frames whose true points are known."""
    detections = detector.detect(frames)
    side = float(frames.shape[-2])
    out: dict[str, float | None] = {"frames": int(len(frames))}
    for name, correct in point_correctness(detections, points_uv, visible, side).items():
        for family, value in family_means(correct, detector.config.point_families).items():
            out[f"{name}/{family}"] = value
    return out
