"""Start a DiT of a finer spatial patch from a trained one of a coarser patch.

The tiny DiT cuts 8 x 8 latents into 2 x 2 patches: 16 tokens per frame, each 16 x 16 pixels
of a 64 px frame, so a 2-3 cm object shares its token with three other latent cells
(docs/experiments.md E21). Only three layers see the patch: the patch embedding, the final
projection and the keypoint prior's embedding; every other weight acts per token and carries
over. :func:`repatch_state_dict` converts the three so that content constant over each old
patch embeds and projects as before:

- the patch embedding of a finer token sums the old weights over the places a finer patch
  takes in an old one (a constant old patch then embeds, in every finer token, as the old
  token did);
- the final projection of a finer patch averages the old rows over those places (the old
  patch's mean, for content constant over it);
- the keypoint prior's embedding (heatmap cells at the same resolution) sums as the patch
  embedding does.

Rotary positions are per token, so the finer grid's positions run twice as far: fine-tuning
has to learn that scale (the transfer is a start, not an equal model).
"""

from __future__ import annotations

import torch


def _sum_sub_patches(weight: torch.Tensor, channels: int, old: int, new: int) -> torch.Tensor:
    """(D, channels * old * old) input weights, laid out (channel, y, x) -> (D, channels * new
    * new). A finer token sits at one of (old // new)^2 places q in the old patch, its cell i
    at old cell q * new + i; the shared finer weight sums the old ones over q."""
    k = old // new
    w = weight.unflatten(1, (channels, k, new, k, new))  # (D, C, q y, new y, q x, new x)
    return w.sum((2, 4)).flatten(1)


def repatch_state_dict(state: dict[str, torch.Tensor], latent_channels: int, old: int, new: int,
                       keypoint_sub: int | None = None, prefix: str = "") -> dict[str, torch.Tensor]:
    """A DiT state dict of patch ``old`` -> one of patch ``new`` (``old`` a multiple of ``new``).

    ``prefix``: the DiT's key prefix in ``state`` (e.g. ``"dit."`` in a WorldModel's);
    ``keypoint_sub``: the prior's heatmap cells per latent side (None: no prior). Keys of
    other modules are returned unchanged."""
    if old % new or new < 1:
        raise ValueError(f"the old patch {old} must be a multiple of the new {new}")
    out = dict(state)
    if old == new:
        return out
    k = old // new
    embed = state[prefix + "patch_embed.weight"]  # (D, (C + 1) old old); the +1: the mask
    out[prefix + "patch_embed.weight"] = _sum_sub_patches(embed, latent_channels + 1, old, new)
    proj_w = state[prefix + "final_proj.weight"]  # (C old old, D), laid out (C, y, x)
    proj_w = proj_w.unflatten(0, (latent_channels, k, new, k, new)).mean((1, 3))
    out[prefix + "final_proj.weight"] = proj_w.flatten(0, 2)
    proj_b = state[prefix + "final_proj.bias"].unflatten(0, (latent_channels, k, new, k, new))
    out[prefix + "final_proj.bias"] = proj_b.mean((1, 3)).flatten()
    key = prefix + "keypoint_embed.weight"
    if keypoint_sub is not None and key in state:
        keypoints = state[key].shape[1] // (old * keypoint_sub) ** 2
        out[key] = _sum_sub_patches(state[key], keypoints, old * keypoint_sub, new * keypoint_sub)
    return out
