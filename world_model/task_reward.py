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

Two structures (``TaskRewardConfig.structure``):

- ``"free"``: a conv net over the latent and the keypoint heatmaps, FiLM by the text, and an
  MLP to the three outputs. It must learn the reward's whole shape, and a planner climbs its
  errors: near an object it ranks poses by reward only to within a few centimetres.
- ``"contact"`` (touch): the reward's known form, ``a exp(-max(d, 0) / s)`` of the distance
  ``d`` from the named fingertip to the named object's surface, with the parts a network must
  learn kept apart. From the latent and the text it *locates* the object (soft-argmax over a
  heatmap for where it is imaged, a depth read at that place, back-projected with the camera
  intrinsics, plus a radius); from the text alone it *selects* the fingertip (softmax over
  the ten); the commanded pose gives that fingertip's camera-frame position. So the predicted
  reward is a function of one distance, its best pose is on the located surface, and the
  planner's precision is the locator's (measured as the located centre's error:
  ``locate_error``, docs/agents.md).
  The object's place never depends on the commanded pose (a planner cannot move the target by
  choosing a pose). The success logit is ``(t - d) / k`` with learned ``t`` and ``k``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from world_model.action_tokenizer import ACTION_DIM
from world_model.json_config import JSONConfig
from world_model.keypoint_prior import KEYPOINTS, camera_keypoints, keypoint_heatmaps, to_camera

STRUCTURES = ("free", "contact")
# the ten fingertips among the 12 keypoints (left wrist, left tips, right wrist, right tips)
FINGERTIPS = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)


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
    structure: ``"free"`` or ``"contact"`` (see the module docstring).
    log_weight: weight of the log-reward MSE in the loss.
    locate_weight: contact structure, weight of the located centre's error (metres) in the
        loss, on rows whose batch carries the named object's place (``object``).
    """

    latent_channels: int = 8
    latent_size: int = 8
    text_dim: int = 384
    camera: tuple[float, float, float, float] = (0.714074, 0.714074, 0.5, 0.5)
    sub: int = 4
    sigma: float = 0.04
    width: int = 48
    reward_floor: float = 1e-3
    structure: str = "free"
    log_weight: float = 0.1
    locate_weight: float = 10.0

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        if min(self.log_weight, self.locate_weight) < 0:
            raise ValueError(f"log_weight and locate_weight must be >= 0: {self}")
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
        if config.structure == "contact":
            self._build_contact(config)
            return
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

    def _build_contact(self, config: TaskRewardConfig) -> None:
        c, w = config.latent_channels, config.width
        # the locator: three FiLM'd convs at the latent's grid (they see the whole 8 x 8
        # frame), then one at the sub-cell grid over the upsampled features and latent
        self.loc_convs = nn.ModuleList(
            [nn.Conv2d(c if i == 0 else w, w, 3, padding=1) for i in range(3)])
        self.loc_films = nn.ModuleList([_FiLM(config.text_dim, w) for _ in range(3)])
        self.loc_fine = nn.Conv2d(w + c, w, 3, padding=1)
        self.loc_film_fine = _FiLM(config.text_dim, w)
        self.loc_out = nn.Conv2d(w, 3, 1)  # place logit, depth, radius
        self.finger = nn.Linear(config.text_dim, len(FINGERTIPS))
        # the reward's form a exp(-max(d, 0) / s) and the success logit (t - d) / k, learned
        # from the simulator's touch values (a = 0.9, s = 0.05 m, t = 0.013 m)
        self.log_amplitude = nn.Parameter(torch.tensor(math.log(0.9)))
        self.log_scale = nn.Parameter(torch.tensor(math.log(0.05)))
        self.threshold = nn.Parameter(torch.tensor(0.013))
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(0.005)))

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
        return self._outputs(latents, actions, text)[0]

    def _outputs(
        self, latents: torch.Tensor, actions: torch.Tensor, text: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """The three outputs, and the located centre (contact structure; else None)."""
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
        latents, actions, text = latents.float(), actions.float(), text.float()
        if cfg.structure == "contact":
            centre, radius = self.locate(latents, text)
            return self._contact_outputs(self._tip_distance(centre, radius, actions, text)), centre
        maps, point_features = self.keypoint_inputs(actions)
        grid = F.interpolate(latents, scale_factor=cfg.sub, mode="nearest")
        x = F.silu(self.film1(self.stem(torch.cat([grid, maps], 1)), text))
        x = F.silu(self.film2(self.down1(x), text))
        x = F.silu(self.film3(self.down2(x), text))
        features = torch.cat([self.pool(x).flatten(1), F.silu(self.text_proj(text)), point_features], 1)
        out = self.mlp(features)
        return (out[:, 0], out[:, 1], out[:, 2]), None

    def locate(self, latents: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contact structure: the named object's centre in the camera frame (B, 3), metres, x
        right, y down, z forward, and its radius (B,), from the latent frame and the text."""
        cfg = self.config
        x = latents
        for conv, film in zip(self.loc_convs, self.loc_films, strict=True):
            x = F.silu(film(conv(x), text))
        size = cfg.latent_size * cfg.sub
        fine = torch.cat([F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False),
                          F.interpolate(latents, size=(size, size), mode="bilinear",
                                        align_corners=False)], 1)
        out = self.loc_out(F.silu(self.loc_film_fine(self.loc_fine(fine), text)))  # (B, 3, S, S)
        weights = torch.softmax(out[:, 0].flatten(1), dim=1).view(-1, size, size)
        centres = (torch.arange(size, device=out.device, dtype=out.dtype) + 0.5) / size
        u = (weights.sum(1) * centres).sum(1)  # columns -> x fraction
        v = (weights.sum(2) * centres).sum(1)  # rows -> y fraction
        depth = 0.05 + F.softplus((weights * out[:, 1]).sum((1, 2)) - 0.4)  # 0.56 m at init
        radius = F.softplus((weights * out[:, 2]).sum((1, 2)) - 3.0)
        fx, fy, cx, cy = cfg.camera
        centre = torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)
        return centre, radius

    def locate_error(self, latents: torch.Tensor, actions: torch.Tensor, text: torch.Tensor,
                     places: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Contact structure: distance (B,), metres, from the located centre (``centre`` when
        already located) to the named object's true centre ``places`` (B, 3) in the episode
        frame (NaN where unknown)."""
        if centre is None:
            centre, _ = self.locate(latents.float(), text.float())
        known = torch.isfinite(places).all(-1)
        # NaN rows are zeroed before the norm: masked afterwards, they would still give NaN
        # gradients (0 x NaN) through it
        truth = to_camera(torch.where(known[:, None], places.float(), 0.0)[:, None],
                          actions.float())[:, 0]
        error = torch.linalg.vector_norm(centre - truth, dim=-1)
        return torch.where(known, error, torch.full_like(error, float("nan")))

    def contact_distance(
        self, latents: torch.Tensor, actions: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        """Contact structure: the named fingertip's distance to the located surface (B,), m;
        the fingertip is the text's softmax choice over the ten, averaged by distance."""
        return self._tip_distance(*self.locate(latents.float(), text.float()), actions.float(),
                                  text.float())

    def _tip_distance(self, centre: torch.Tensor, radius: torch.Tensor, actions: torch.Tensor,
                      text: torch.Tensor) -> torch.Tensor:
        points, _, _ = camera_keypoints(actions, self.config.camera)  # (B, 12, 3)
        tips = points[:, list(FINGERTIPS)]  # (B, 10, 3)
        per_tip = torch.linalg.vector_norm(tips - centre[:, None], dim=-1) - radius[:, None]
        return (torch.softmax(self.finger(text), dim=-1) * per_tip).sum(-1)

    def _contact_outputs(
        self, distance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        floor = math.log(self.config.reward_floor)
        log_near = self.log_amplitude - distance.clamp(min=0.0) / self.log_scale.exp()
        logit = (self.threshold - distance) / self.log_sharpness.exp()
        p = torch.sigmoid(logit)
        reward = p + (1 - p) * log_near.exp()
        return reward, log_near.clamp(min=floor), logit

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Reward MSE + ``log_weight`` x log-reward MSE + success BCE (+ ``locate_weight`` x the
        located centre's error where ``object`` is known). batch: latents (B, C, h, w), actions
        (B, 57), text (B, text_dim), reward (B,) float, success (B,) in {0, 1}; optional object
        (B, 3), the named object's centre in the episode frame, NaN where unknown.
        With the contact structure the log-reward target of a success frame (reward 1 by the
        simulator's rule, not by distance) is the reward at contact, ``log a``."""
        (predicted, log_predicted, logit), centre = self._outputs(
            batch["latents"], batch["actions"], batch["text"])
        reward, success = batch["reward"].float(), batch["success"].float()
        log_reward = torch.log(reward.clamp(min=self.config.reward_floor))
        if self.config.structure == "contact":
            log_reward = torch.minimum(log_reward, self.log_amplitude.detach())
        reward_loss = F.mse_loss(predicted, reward)
        log_loss = F.mse_loss(log_predicted, log_reward)
        success_loss = F.binary_cross_entropy_with_logits(logit, success)
        loss = reward_loss + self.config.log_weight * log_loss + success_loss
        logs = {"loss": loss, "reward_loss": reward_loss, "log_reward_loss": log_loss,
                "success_loss": success_loss}
        if self.config.structure == "contact" and "object" in batch:
            error = self.locate_error(batch["latents"], batch["actions"], batch["text"],
                                      batch["object"], centre)
            known = torch.isfinite(error)
            if known.any():
                logs["locate_error"] = torch.where(known, error, 0.0).sum() / known.sum()
                loss = loss + self.config.locate_weight * logs["locate_error"]
                logs["loss"] = loss
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
