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
only, and the sampler and conditioning are the model's own (``WorldModel.predict_from_batch``,
``predict``'s integration for a training batch's cached features).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from training.config import OwnRolloutConfig
from training.engine import LossFn
from training.latent_pack import pack_episodes

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
    semantic = {
        key: batch[key][rows_of.to(batch[key].device)] for key in SEMANTIC_KEYS if key in batch
    }
    frames = imagine_chunks(model, semantic, context, actions, rollout.chunks,
                            rollout.sampler_steps)
    return frames[:, -model.config.context_frames :]


@torch.no_grad()
def imagine_chunks(model, semantic, context, actions, chunks: int, sampler_steps: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, c + chunks k, C, h, w): ``context`` (B, c, C, h, w) followed by ``chunks`` chunks the
    model imagines one after another, each from the last c frames, under ``actions`` (B, >= 1 +
    chunks k tc, 57; row 0 the pose of the last context frame), with the batch's cached
    ``semantic`` features. Noise comes from ``generator`` (CPU) or the global RNG."""
    wm = model.config
    c, rows = wm.context_frames, wm.action_frames
    frames = context.to(model.device)
    for j in range(chunks):
        chunk_batch = {**semantic, "actions": actions[:, j * rows : (j + 1) * rows + 1]}
        shape = (frames.shape[0], wm.chunk_frames, *frames.shape[2:])
        noise = (torch.randn(shape, device=frames.device) if generator is None
                 else torch.randn(shape, generator=generator))
        chunk = model.predict_from_batch(chunk_batch, frames[:, -c:], noise, sampler_steps)
        frames = torch.cat([frames, chunk], dim=1)
    return frames


# -- the offline form: whole episodes imagined once, into a training pack ------------------------


def imagine_pack(
    checkpoint: str | Path,
    pack: str | Path,
    out: str | Path,
    batch_size: int = 64,
    sampler_steps: int = 2,
    seed: int = 0,
) -> Path:
    """Write a copy of training pack ``pack`` whose ``latent`` is the world model's own
    rollout of every episode and whose new ``latent_target`` is the recorded latents.

    Each episode is imagined once from its first ``context_frames`` recorded latents under
    its recorded actions to its end (``sampler_steps`` Euler steps per chunk, conditioned on
    the semantic features of the frame ``semantic_frame: first_context`` windows read), so a
    window starting at frame s sees a context imagined s to s + c - 1 steps deep: the drift of
    a whole env rollout, at the price of one rollout per episode rather than per training
    step (the context is the checkpoint's, not the model's as it trains: DAgger's first
    round). Join it to the recorded pack with ``data.also_stores``; its windows read the
    imagined context and the recorded target (``LatentWindowDataset``).
    """
    from world_model import WorldModel  # noqa: PLC0415

    model = WorldModel.from_pretrained(str(checkpoint)).eval()
    wm = model.config
    c, k, tc = wm.context_frames, wm.chunk_frames, wm.temporal_compression
    with np.load(pack, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if "latent_target" in arrays:
        raise ValueError(f"{pack} is already an imagined pack (it holds latent_target)")
    meta = json.loads(str(arrays["meta"]))
    episodes = pack_episodes(pack)
    starts = np.concatenate([[0], np.cumsum(arrays["latent_lengths"])[:-1]])
    imagined = arrays["latent"].astype(np.float32)  # (sum T, C, h, w), overwritten below
    generator = torch.Generator().manual_seed(seed)
    by_length: dict[int, list[int]] = {}
    for i, episode in enumerate(episodes):
        by_length.setdefault(episode.shape("latent")[0], []).append(i)
    bar = tqdm(total=len(episodes), desc="imagine episodes", unit="episode")
    for length, members in sorted(by_length.items()):
        for lo in range(0, len(members), batch_size):
            group = members[lo : lo + batch_size]
            frames = _imagine_group(model, [episodes[i] for i in group], length, sampler_steps,
                                    generator)  # (B, T, C, h, w)
            for row, i in enumerate(group):
                base = starts[i]
                imagined[base : base + length] = frames[row]
            bar.update(len(group))
    bar.close()
    arrays["latent_target"] = arrays["latent"]
    arrays["latent"] = imagined.astype(arrays["latent"].dtype)
    meta.update(imagined_by=str(checkpoint), sampler_steps=sampler_steps, imagine_seed=seed,
                context_frames=c, chunk_frames=k, temporal_compression=tc)
    arrays["meta"] = np.asarray(json.dumps(meta))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return out


@torch.no_grad()
def _imagine_group(model, episodes, length: int, sampler_steps: int, generator) -> np.ndarray:
    """(B, length, C, h, w): the first context frames recorded, every later chunk imagined
    (a tail shorter than a chunk stays recorded: no window of whole chunks reaches it)."""
    wm = model.config
    c, k, tc = wm.context_frames, wm.chunk_frames, wm.temporal_compression
    frames = torch.from_numpy(np.stack([e.read("latent", 0, length) for e in episodes]))
    actions = torch.from_numpy(np.stack([e.read("action", 0, e.length) for e in episodes]))
    batch: dict[str, torch.Tensor] = {}
    if "semantic_image" in episodes[0].keys():
        pixel = (c - 1) * tc  # the frame of semantic_frame: first_context
        batch["semantic_image"] = torch.from_numpy(
            np.stack([e.read("semantic_image", pixel, pixel + 1)[0] for e in episodes])
        ).float()
        batch["semantic_text"] = torch.from_numpy(
            np.stack([e.read("semantic_text", 0, 1)[0] for e in episodes])
        ).float()
    chunks = (length - c) // k  # a tail shorter than a chunk stays recorded
    imagined = imagine_chunks(model, batch, frames[:, :c], actions[:, (c - 1) * tc :], chunks,
                              sampler_steps, generator)
    frames[:, : imagined.shape[1]] = imagined.cpu()
    return frames.numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Imagine every episode of a training pack with a world model: a pack whose "
        "windows read the model's own context and the recorded target (data.also_stores)."
    )
    parser.add_argument("--checkpoint", required=True, help="the world model that imagines")
    parser.add_argument("--pack", required=True, help="a training pack (training/latent_pack.py)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sampler-steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = imagine_pack(args.checkpoint, args.pack, args.out, args.batch_size,
                        args.sampler_steps, args.seed)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
