"""Imagined rollouts scored against the truth: frames, keypoints, action sensitivity.

For every episode the first ``context_frames`` true frames are encoded and the model rolls out
``frames`` frames through :func:`world_model.rollout.rollout_latents` (the loop the env uses)
under three action sequences, batched with the same sampler noise so their differences are
the actions' doing alone:

- ``true``: the episode's own actions;
- ``frozen``: the last context pose held (a model that follows actions must lose accuracy);
- ``other``: another episode's motion re-anchored to this start pose (a counterfactual).

Each is scored against the episode's true frames and keypoints: PSNR, SSIM, PCK per family
(detections in the imagined frame vs the stored ground truth). Two references are scored on
the same frames: ``vae_reconstruction`` (encode -> decode of the true frames: the tokenizer's
ceiling) and ``copy_last_context`` (the last context frame repeated: a model that ignores
actions). Imports world_model only; episodes arrive as plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from evaluation.distribution import lpips_from_levels
from evaluation.scoring import point_correctness
from world_model.metrics import psnr, ssim
from world_model.rollout import rollout_latents

ACTION_VARIANTS = ("true", "frozen", "other")
REFERENCES = ("vae_reconstruction", "copy_last_context")


@dataclass(frozen=True)
class RolloutOptions:
    """How the rollout loop is driven (``world_model.rollout.rollout_latents``): sampler steps
    (None: the model's), predicted frames kept per sampler call (None: a whole chunk), and
    ``hold_future`` (each call sees only the poses of the frames it keeps, then holds: with
    ``frames_per_call=1`` exactly what ``DexACWorld-v0``'s default 1-frame step sees), and
    ``cfg_scale`` (guidance on actions; None: the model's)."""

    num_steps: int | None = None
    frames_per_call: int | None = None
    hold_future: bool = False
    cfg_scale: float | None = None


DEFAULT_OPTIONS = RolloutOptions()


@dataclass
class EpisodeArrays:
    """One stored episode as arrays: rgb (T, H, W, 3) uint8, actions (T, 57), points_uv
    (T, K, 2) pixels and visible (T, K) bool (keypoints then landmarks), text."""

    name: str
    rgb: np.ndarray
    actions: np.ndarray
    points_uv: np.ndarray
    visible: np.ndarray
    text: str


def action_rows(actions: np.ndarray, context: int, frames: int) -> np.ndarray:
    """(1 + frames, 57): the last context frame's pose, then the poses of the predicted frames
    (past the episode end, the last pose is held)."""
    rows = actions[context - 1 : context + frames]
    if len(rows) < frames + 1:
        rows = np.concatenate([rows, np.repeat(rows[-1:], frames + 1 - len(rows), axis=0)])
    return rows


def imagine(
    model,
    episode: EpisodeArrays,
    variants: dict[str, np.ndarray],
    frames: int,
    seed: int,
    options: RolloutOptions = DEFAULT_OPTIONS,
) -> dict[str, np.ndarray]:
    """Decoded imagined frames (frames, H, W, 3) uint8 per action variant (one batch)."""
    context = model.config.context_frames
    if model.config.temporal_compression != 1:
        raise ValueError("rollout evaluation steps frame-wise latents (kl tokenizers) only")
    names = list(variants)
    with torch.no_grad():
        pixels = torch.from_numpy(episode.rgb[None, :context])  # (1, context, H, W, 3)
        latents = model.encode(pixels).expand(len(names), -1, -1, -1, -1)
        semantic = model.encode_semantic(pixels[:, -1], [episode.text])
        if semantic is not None and len(names) > 1:
            semantic = type(semantic).cat([semantic] * len(names))
        rows = torch.from_numpy(np.stack([variants[n] for n in names])).float()
        generators = [torch.Generator().manual_seed(seed) for _ in names]  # common noise
        new, _ = rollout_latents(
            model,
            latents,
            rows,
            semantic,
            generators,
            options.num_steps,
            cfg_scale=options.cfg_scale,
            frames_per_call=options.frames_per_call,
            hold_future=options.hold_future,
        )
        model.clear_cache()
        decoded = model.decode(new).numpy()  # (V, frames, H, W, 3)
    return {name: decoded[i] for i, name in enumerate(names)}


def references(model, episode: EpisodeArrays, frames: int) -> dict[str, np.ndarray]:
    """The tokenizer's reconstruction of the true frames and the repeated last context frame."""
    context = model.config.context_frames
    target = episode.rgb[context : context + frames]
    with torch.no_grad():
        recon = model.decode(model.encode(torch.from_numpy(target[None])))[0].numpy()
    return {
        "vae_reconstruction": recon,
        "copy_last_context": np.repeat(episode.rgb[context - 1 : context], frames, axis=0),
    }


def score(
    frames_hat: np.ndarray,
    episode: EpisodeArrays,
    context: int,
    detector,
    truth_levels: list | None = None,
) -> dict:
    """Per-frame scores of predicted frames (F, H, W, 3) against the episode's frames
    ``context .. context + F``: psnr (F,), ssim (F,), per threshold (F, K) correctness, and
    ``lpips_sim`` (F,) against the truth's detector pyramid ``truth_levels`` when given.
    ``_features`` / ``_levels``: the detector's pooled features and pyramid of ``frames_hat``."""
    n = len(frames_hat)
    target = episode.rgb[context : context + n]
    out = {"psnr": psnr(frames_hat, target), "ssim": ssim(frames_hat, target)}
    if detector is not None:
        detections = detector.detect(frames_hat, keep_levels=True)
        side = float(target.shape[-2])
        out.update(
            point_correctness(
                detections,
                episode.points_uv[context : context + n],
                episode.visible[context : context + n],
                side,
            )
        )
        out["_features"], out["_levels"] = detections.features, detections.levels
        if truth_levels is not None:
            out["lpips_sim"] = lpips_from_levels(detections.levels, truth_levels)
    return out
