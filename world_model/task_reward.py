"""Task reward head: the reward of an imagined frame given the commanded pose and the task text.

Why a second head. The world model's own reward head (:mod:`world_model.reward_head`) judges
each latent frame on its own: it sees neither the instruction ("touch the purple cylinder with
your left index finger") nor where the commanded fingertips are, so on ``touch`` it cannot
tell which object or finger counts (success AUC 0.70 on real frames, docs/agents.md) and a
planner that maximises it has nothing to climb far from an object. This head is the standard
model-based-RL reward ``r(z, a)`` (TD-MPC, Dreamer) conditioned on the task:

- ``z``: the imagined latent frame (where the objects are, as the world model draws them);
- ``a``: the commanded 57-D pose, as the 12 projected hand keypoints of
  :mod:`world_model.keypoint_prior` (Gaussian heatmaps on a ``sub`` x finer grid than the
  latent, plus their camera-frame 3D positions and visibility);
- the task text's sentence embedding (the semantic branch's, 384-D MiniLM), by FiLM.

It predicts the simulator's dense reward, its logarithm (``log max(r, r_floor)``: for the
``0.9 exp(-d / s)`` rewards of touch and push, a quantity linear in the distance ``d``, so a
planner far from the object still sees which way is closer), and the success logit.
It is trained apart from the world model on frames the world model encodes
(``training/train_task_reward.py``) and stored in its own small file (:func:`save_task_reward`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from world_model.action_tokenizer import ACTION_DIM
from world_model.json_config import JSONConfig
from world_model.keypoint_prior import KEYPOINTS, camera_keypoints, keypoint_heatmaps


@dataclass(frozen=True)
class TaskRewardConfig(JSONConfig):
    """Attributes:
    latent_channels / latent_size: the world model's latent frame (C, h = w).
    text_dim: size of the task-text embedding.
    camera: normalised pinhole intrinsics (fx / W, fy / H, cx / W, cy / H) of the frames.
    sub: heatmap cells per latent cell side (the keypoints are drawn at ``latent_size * sub``).
    sigma: heatmap Gaussian width in image fractions.
    width: channels of the conv net.
    reward_floor: floor of the reward before its logarithm.
    """

    latent_channels: int = 8
    latent_size: int = 8
    text_dim: int = 384
    camera: tuple[float, float, float, float] = (0.714074, 0.714074, 0.5, 0.5)
    sub: int = 4
    sigma: float = 0.04
    width: int = 48
    reward_floor: float = 1e-3

    def __post_init__(self) -> None:
        if min(self.latent_channels, self.latent_size, self.text_dim, self.sub, self.width) < 1:
            raise ValueError(f"sizes must be >= 1: {self}")
        if self.sigma <= 0 or not 0 < self.reward_floor < 1 or len(self.camera) != 4:
            raise ValueError(f"sigma > 0, 0 < reward_floor < 1 and 4 camera values needed: {self}")


class _FiLM(nn.Module):
    """Per-channel scale and shift from the text embedding; zero-initialised (identity)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(text)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class TaskRewardHead(nn.Module):
    """(latent frame, commanded pose, task text) -> (reward, log reward, success logit)."""

    def __init__(self, config: TaskRewardConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config.latent_channels + KEYPOINTS, config.width
        self.stem = nn.Conv2d(c, w, 3, padding=1)
        self.film1 = _FiLM(config.text_dim, w)
        self.down1 = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.film2 = _FiLM(config.text_dim, w)
        self.down2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.film3 = _FiLM(config.text_dim, 2 * w)
        grid = config.latent_size * config.sub // 4
        self.pool = nn.AdaptiveAvgPool2d(min(grid, 4))
        pooled = 2 * w * min(grid, 4) ** 2
        self.text_proj = nn.Linear(config.text_dim, w)
        self.mlp = nn.Sequential(
            nn.Linear(pooled + w + KEYPOINTS * 4, 2 * w), nn.SiLU(), nn.Linear(2 * w, 3)
        )

    def keypoint_inputs(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 57) raw poses -> heatmaps (B, 12, S, S) and per-point features (B, 48): the
        camera-frame position (metres, depth clipped to >= 0) and visibility of each point."""
        cfg = self.config
        points, uv, visible = camera_keypoints(actions, cfg.camera)
        size = cfg.latent_size * cfg.sub
        maps = keypoint_heatmaps(uv, visible.to(uv.dtype), size, size, cfg.sigma)
        points = torch.cat([points[..., :2], points[..., 2:].clamp(min=0.0)], -1)
        features = torch.cat([points.clamp(-2.0, 2.0), visible[..., None].to(points.dtype)], -1)
        return maps, features.flatten(1)

    def forward(
        self, latents: torch.Tensor, actions: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """latents (B, C, h, w) normalised latent frames; actions (B, 57) raw commanded poses;
        text (B, text_dim). Returns reward (B,), log reward (B,), success logit (B,)."""
        cfg = self.config
        expected = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        if latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
            raise ValueError(f"latents must have shape (B, {expected}), got {tuple(latents.shape)}")
        b = latents.shape[0]
        if tuple(actions.shape) != (b, ACTION_DIM) or tuple(text.shape) != (b, cfg.text_dim):
            raise ValueError(
                f"actions must be ({b}, {ACTION_DIM}) and text ({b}, {cfg.text_dim}), got "
                f"{tuple(actions.shape)} and {tuple(text.shape)}"
            )
        maps, point_features = self.keypoint_inputs(actions.float())
        text = text.float()
        grid = F.interpolate(latents.float(), scale_factor=cfg.sub, mode="nearest")
        x = F.silu(self.film1(self.stem(torch.cat([grid, maps], 1)), text))
        x = F.silu(self.film2(self.down1(x), text))
        x = F.silu(self.film3(self.down2(x), text))
        features = torch.cat([self.pool(x).flatten(1), F.silu(self.text_proj(text)), point_features], 1)
        out = self.mlp(features)
        return out[:, 0], out[:, 1], out[:, 2]

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Reward MSE + 0.1 log-reward MSE + success BCE. batch: latents (B, C, h, w), actions
        (B, 57), text (B, text_dim), reward (B,) float, success (B,) in {0, 1}."""
        predicted, log_predicted, logit = self(batch["latents"], batch["actions"], batch["text"])
        reward, success = batch["reward"].float(), batch["success"].float()
        log_reward = torch.log(reward.clamp(min=self.config.reward_floor))
        reward_loss = F.mse_loss(predicted, reward)
        log_loss = F.mse_loss(log_predicted, log_reward)
        success_loss = F.binary_cross_entropy_with_logits(logit, success)
        loss = reward_loss + 0.1 * log_loss + success_loss
        logs = {"loss": loss, "reward_loss": reward_loss, "log_reward_loss": log_loss,
                "success_loss": success_loss}
        return loss, {k: float(v.detach()) for k, v in logs.items()}


def save_task_reward(head: TaskRewardHead, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the head to one ``.safetensors`` file, its config (and ``metadata``) inside."""
    from safetensors.torch import save_file  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    meta = {"task_reward_config": json.dumps(asdict(head.config)),
            "metadata": json.dumps(metadata or {})}
    save_file(tensors, str(path), metadata=meta)
    return path


def load_task_reward(path: str | Path, device: str | torch.device = "cpu") -> TaskRewardHead:
    """The head written by :func:`save_task_reward` (eval mode)."""
    from safetensors import safe_open  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no task reward head at {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "task_reward_config" not in meta:
        raise ValueError(f"{path} is not a task reward head (no task_reward_config metadata)")
    config = json.loads(meta["task_reward_config"])
    config["camera"] = tuple(config["camera"])
    head = TaskRewardHead(TaskRewardConfig(**config))
    head.load_state_dict(load_file(str(path)))
    return head.to(device).eval()
