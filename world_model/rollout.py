"""The one autoregressive rollout loop: the env's step and the evaluation both call it.

A rollout predicts the latent frames of T pixel frames from a window of clean context latents
and T + 1 action rows: row 0 is the pose the last context frame shows, row t the pose of the
t-th predicted frame (``action[t]`` is the pose frame t shows, DESIGN.md). Each sampler call
takes ``1 + action_frames`` rows (row 0 = the previous call's last row); past the end of the
given rows the last pose is held. A call keeps ``frames_per_call`` of its predicted frames
(default: all of them) and the kept frames become the next call's context: fewer kept frames
follow the given rows more closely at the cost of more calls (the env's 1-frame step keeps 1).
``hold_future`` shows each call only the poses of the frames it keeps and holds the last of
them for the rest of the chunk: what an env step that knows only its own target sees (the env's
rows end at its target, so it gets this without asking).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def rollout_latents(
    model: Any,
    context_latents: torch.Tensor,
    action_rows: torch.Tensor,
    semantic: Any = None,
    generator: Any = None,
    num_steps: int | None = None,
    cfg_scale: float | None = None,
    frames_per_call: int | None = None,
    hold_future: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll the world model forward over the given action rows.

    context_latents (B, context_frames, C, h, w); action_rows (B, 1 + T, 57) raw units, T a
    multiple of the tokenizer's temporal compression. ``model`` is a ``WorldModel`` (only its
    ``config`` and ``predict`` are used). Returns (new latent frames (B, T / tc, C, h, w), the
    final context window (B, context_frames, C, h, w)).
    """
    cfg = model.config
    tc, per_call = int(cfg.temporal_compression), int(cfg.action_frames)
    keep = per_call if frames_per_call is None else int(frames_per_call)
    total = action_rows.shape[1] - 1
    if action_rows.ndim != 3 or total < 1:
        raise ValueError(
            f"action_rows must be (B, 1 + T, 57) with T >= 1, got {tuple(action_rows.shape)}"
        )
    if not 1 <= keep <= per_call or keep % tc or total % tc:
        raise ValueError(
            f"frames_per_call must be in 1..{per_call} and, like T={total}, a multiple of the "
            f"temporal compression {tc}; got frames_per_call={keep}"
        )
    calls = math.ceil(total / keep)
    hold = action_rows[:, -1:].expand(-1, calls * keep + per_call - total, -1)
    rows = torch.cat([action_rows, hold], dim=1)  # (B, 1 + calls*keep + per_call, 57)
    context, new = context_latents, []
    for call in range(calls):
        start = call * keep
        kept_rows = min(keep, total - start)
        kept = kept_rows // tc  # latent frames kept from this call
        chunk = rows[:, start : start + 1 + per_call]  # (B, 1 + per_call, 57)
        if hold_future:
            chunk = torch.cat(
                [
                    chunk[:, : 1 + kept_rows],
                    chunk[:, kept_rows : 1 + kept_rows].expand(-1, per_call - kept_rows, -1),
                ],
                dim=1,
            )
        predicted = model.predict(
            context,
            chunk,
            semantic,
            generator=generator,
            num_steps=num_steps,
            cfg_scale=cfg_scale,
        )[:, :kept]  # (B, kept, C, h, w)
        context = torch.cat([context, predicted], dim=1)[:, -cfg.context_frames :]
        new.append(predicted)
    return torch.cat(new, dim=1), context
