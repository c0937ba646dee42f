"""Training on the model's own rollouts (``rollout:`` in a world-model run config).

An env rollout feeds the model's own frames back as context, while teacher-forced training
only ever shows it recorded ones; the mismatch shows as drift: with the hands held still the
imagined objects fade within 10-20 steps (docs/experiments.md E18). Here each window is read
``chunks`` action chunks longer than one prediction needs. Without gradients the model
imagines those chunks from the window's real context and recorded actions (its own sampler,
``sampler_steps`` Euler steps), then, for a ``probability`` share of the windows, the last
recorded chunk is scored with that imagined context in place of the recorded one. The target
stays the recorded chunk: the model is taught to pull a drifted context back to the world
(scheduled sampling, Bengio et al. 2015; for video world models, the autoregressive-drift
remedies of Self-Forcing, Huang et al. 2025).

Nothing here is a library's: diffusers and accelerate train one step from recorded inputs
only, and the sampler and conditioning are the model's own (``WorldModel.conditional_velocity``,
the function step distillation also integrates).
"""

from __future__ import annotations

from typing import Any

import torch

from training.config import OwnRolloutConfig
from training.engine import LossFn

SEMANTIC_KEYS = ("semantic_image", "semantic_text")


def window_chunks(rollout: OwnRolloutConfig) -> int:
    """Recorded chunks a training window must hold after its context."""
    return rollout.chunks + 1


def own_rollout_loss(rollout: OwnRolloutConfig) -> LossFn:
    """The trainer's ``loss_fn``: ``model.loss`` on :func:`with_own_context`'s batch, with the
    share of imagined contexts in the logs."""

    def loss_fn(model, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = {k: v for k, v in batch.items() if not k.startswith("_")}
        scored, share = with_own_context(model, batch, rollout)
        loss, logs = model.loss(scored)
        logs["own_context_share"] = share
        return loss, logs

    return loss_fn


def with_own_context(
    model, batch: dict[str, Any], rollout: OwnRolloutConfig
) -> tuple[dict[str, Any], float]:
    """A one-chunk training batch from a window of ``rollout.chunks + 1`` recorded chunks.

    batch: context_latents (B, c, C, h, w), target_latents (B, (chunks + 1) k, C, h, w),
    actions (B, 1 + (chunks + 1) k tc, 57), optional semantic features and reward/success
    ((chunks + 1) k,). Returns (the batch of the last chunk: its recorded context, or for a
    ``rollout.probability`` share of windows the context the model imagined from the first c
    frames; the share actually drawn).
    """
    wm = model.config
    c, k, rows, r = wm.context_frames, wm.chunk_frames, wm.action_frames, rollout.chunks
    context = batch["context_latents"].to(model.device, torch.float32)
    targets = batch["target_latents"].to(model.device, torch.float32)
    actions = batch["actions"].to(model.device, torch.float32)
    if targets.shape[1] != (r + 1) * k or actions.shape[1] != 1 + (r + 1) * rows:
        raise ValueError(
            f"with rollout.chunks = {r} a window needs {(r + 1) * k} target frames and "
            f"{1 + (r + 1) * rows} action rows, got {targets.shape[1]} and {actions.shape[1]} "
            "(open the windows with training.train_wm.open_windows(..., chunks=...))"
        )
    recorded = torch.cat([context, targets], dim=1)[:, r * k : r * k + c]  # (B, c, C, h, w)
    own = torch.rand(context.shape[0], device=context.device) < rollout.probability  # (B,)
    if r > 0 and bool(own.any()):
        recorded = recorded.clone()
        recorded[own] = imagine_context(model, batch, context[own], actions[own], own, rollout)
    scored = {
        **batch,
        "context_latents": recorded,
        "target_latents": targets[:, -k:],
        "actions": actions[:, r * rows :],
    }
    for key in ("reward", "success"):
        if key in batch:
            scored[key] = batch[key][:, -k:]
    return scored, float(own.float().mean()) if r > 0 else 0.0


@torch.no_grad()
def imagine_context(model, batch, context, actions, rows_of, rollout: OwnRolloutConfig):
    """The last ``context_frames`` latents after the model imagines ``rollout.chunks`` chunks
    from ``context`` (B', c, C, h, w) under ``actions`` (B', 1 + (chunks + 1) k tc, 57);
    ``rows_of`` picks the windows' semantic features from ``batch``."""
    wm = model.config
    c, rows = wm.context_frames, wm.action_frames
    semantic = {
        key: batch[key][rows_of.to(batch[key].device)] for key in SEMANTIC_KEYS if key in batch
    }
    frames = context
    for j in range(rollout.chunks):
        chunk_batch = {**semantic, "actions": actions[:, j * rows : (j + 1) * rows + 1]}
        velocity = model.conditional_velocity(chunk_batch, frames[:, -c:])
        noise = torch.randn(
            (frames.shape[0], wm.chunk_frames, *frames.shape[2:]), device=frames.device
        )
        chunk = model.sampler.sample(velocity, noise, num_steps=rollout.sampler_steps)
        frames = torch.cat([frames, chunk], dim=1)
    return frames[:, -c:]
