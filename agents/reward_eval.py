"""How well the world model's reward/success head reads held-out frames.

The head is what imagined training optimises and what success termination trusts, so its
accuracy bounds both. Scored on real frames (encoded, not imagined) of a store split the model
did not train on: success AUC, F1 / precision / recall at probability 0.5, and the dense
reward's mean squared error and Pearson correlation against the simulator's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def head_predictions(model: Any, store: Any, split: str | None, task: str | None = None,
                     limit: int | None = None) -> dict[str, np.ndarray]:
    """Per frame: predicted reward, success probability, true reward and success (flat arrays)."""
    rows: dict[str, list[np.ndarray]] = {"reward": [], "prob": [], "true_reward": [], "true_success": []}
    episodes = [e for e in store.episodes(split) if task is None or e.attrs.get("task") == task]
    if not episodes:
        raise ValueError(f"no episode with split={split!r}, task={task!r} in {store.path}")
    for episode in episodes[:limit]:
        if "reward" not in episode or "success" not in episode:
            raise ValueError(f"episode {episode.name!r} has no reward/success arrays (a sim store?)")
        with torch.no_grad():
            latents = model.encode(torch.from_numpy(episode.read("rgb"))[None])  # (1, T, C, h, w)
            reward, logit = model.reward(latents)  # (1, T)
        rows["reward"].append(reward[0].double().cpu().numpy())
        rows["prob"].append(torch.sigmoid(logit[0]).double().cpu().numpy())
        rows["true_reward"].append(episode.read("reward").astype(np.float64)[: latents.shape[1]])
        rows["true_success"].append(episode.read("success").astype(bool)[: latents.shape[1]])
    return {k: np.concatenate(v) for k, v in rows.items()}


def head_scores(predictions: dict[str, np.ndarray]) -> dict[str, float]:
    from world_model.reward_head import reward_head_scores  # noqa: PLC0415

    return reward_head_scores(predictions["prob"], predictions["true_success"],
                              predictions["reward"], predictions["true_reward"])
