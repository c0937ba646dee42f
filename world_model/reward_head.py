"""Reward and termination head on latent frames, trained on the simulator's rewards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from world_model.json_config import JSONConfig


@dataclass(frozen=True)
class RewardHeadConfig(JSONConfig):
    """Attributes:
    enabled: whether the world model has a reward head.
    width: channels of its small conv net.
    success_weight: weight of the success (termination) BCE against the reward MSE.
    """

    enabled: bool = True
    width: int = 32
    success_weight: float = 1.0


class RewardHead(nn.Module):
    """Per latent frame: (reward, success logit). Each frame is judged on its own."""

    def __init__(self, config: RewardHeadConfig, latent_channels: int) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * w, w),
            nn.SiLU(),
            nn.Linear(w, 2),
        )

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, T, C, h, w) -> reward (B, T), success_logit (B, T)."""
        if latents.ndim != 5:
            raise ValueError(f"latents must have shape (B, T, C, h, w), got {tuple(latents.shape)}")
        b, t = latents.shape[:2]
        out = self.net(latents.flatten(0, 1)).reshape(b, t, 2)  # (B, T, 2)
        return out[..., 0], out[..., 1]

    def loss(
        self, latents: torch.Tensor, reward: torch.Tensor, success: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """latents (B, T, C, h, w); reward (B, T) float; success (B, T) in {0, 1}."""
        predicted_reward, success_logit = self(latents)
        if reward.shape != predicted_reward.shape or success.shape != success_logit.shape:
            raise ValueError(
                f"reward and success must have shape {tuple(predicted_reward.shape)}, "
                f"got {tuple(reward.shape)} and {tuple(success.shape)}"
            )
        reward_loss = F.mse_loss(predicted_reward, reward.float())
        success_loss = F.binary_cross_entropy_with_logits(success_logit, success.float())
        loss = reward_loss + self.config.success_weight * success_loss
        return loss, {
            "reward_loss": float(reward_loss.detach()),
            "success_loss": float(success_loss.detach()),
        }


def reward_head_scores(prob: np.ndarray, true_success: np.ndarray, reward: np.ndarray,
                       true_reward: np.ndarray) -> dict[str, float]:
    """How a reward head reads frames: success AUC, F1 / precision / recall at probability
    0.5, and the dense reward's mean squared error and Pearson correlation (flat arrays of
    predicted success probability, true success, predicted and true reward). Used for the
    frame head (``dexac agent reward``) and the task head (training/train_task_reward.py)."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score  # noqa: PLC0415

    truth = np.asarray(true_success, bool)
    predicted = np.asarray(prob) >= 0.5
    both = len(np.unique(truth)) == 2
    reward, true_reward = np.asarray(reward, np.float64), np.asarray(true_reward, np.float64)
    return {
        "frames": int(len(truth)),
        "success_frames": int(truth.sum()),
        "success_auc": float(roc_auc_score(truth, prob)) if both else float("nan"),
        "success_f1": float(f1_score(truth, predicted, zero_division=0)),
        "success_precision": float(precision_score(truth, predicted, zero_division=0)),
        "success_recall": float(recall_score(truth, predicted, zero_division=0)),
        "reward_mse": float(np.mean((reward - true_reward) ** 2)),
        "reward_corr": float(np.corrcoef(reward, true_reward)[0, 1]),
        "reward_mean_true": float(true_reward.mean()),
        "reward_mean_predicted": float(reward.mean()),
    }
