"""ssl-vit-tiny: a small ViT trained by this project, DINO-style, on its own (simulator) frames.

No pretrained image backbone can be had offline here, so the CPU-default semantic branch uses
this encoder in the place of DINOv3. It is *not* DINO: same kind of objective (self-distillation
between a student and an EMA teacher over two augmented views, with centring and sharpening),
far smaller, trained on far less data. Anything computed with it says "ssl-vit-tiny".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from world_model.json_config import JSONConfig

NAME = "ssl-vit-tiny (DINO-style self-distillation, trained on DexAC sim frames)"


@dataclass(frozen=True)
class SSLViTConfig(JSONConfig):
    """Attributes:
    image_size: input size (frames are resized to it).
    patch_size: ViT patch; dense features are (image_size / patch_size)^2 tokens.
    dim, depth, heads: ViT width, blocks, heads.
    out_dim: prototypes of the DINO head.
    student_temp, teacher_temp: softmax temperatures (teacher sharper).
    center_momentum: EMA of the teacher-output centre.
    """

    image_size: int = 64
    patch_size: int = 8
    dim: int = 128
    depth: int = 4
    heads: int = 4
    out_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class ViT(nn.Module):
    def __init__(self, config: SSLViTConfig) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, config.dim, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + config.num_patches, config.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            4 * config.dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) normalised -> tokens (B, 1 + P, D), CLS first."""
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, P, D)
        tokens = torch.cat([self.cls_token.expand(len(patches), -1, -1), patches], dim=1)
        return self.norm(self.blocks(tokens + self.pos_embed))  # (B, 1 + P, D)


class DINOHead(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.prototypes = nn.utils.parametrizations.weight_norm(nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prototypes(F.normalize(self.mlp(x), dim=-1))


def _augment(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random crop-and-resize (scale 0.5-1) and brightness/contrast jitter; (B, 3, S, S)."""
    b = images.shape[0]
    rand = torch.rand(b, 5, generator=generator, device=images.device)
    scale = 0.5 + 0.5 * rand[:, 0]
    shift = (1 - scale)[:, None] * (2 * rand[:, 1:3] - 1)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale, scale, shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, align_corners=False, padding_mode="reflection")
    brightness = (rand[:, 3] - 0.5)[:, None, None, None] * 0.4
    contrast = (0.7 + 0.6 * rand[:, 4])[:, None, None, None]
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    return (views - mean) * contrast + mean + brightness


class SSLViT(nn.Module):
    """Student ViT + EMA teacher. ``features`` (teacher) gives dense patch tokens."""

    def __init__(self, config: SSLViTConfig) -> None:
        super().__init__()
        self.config = config
        self.student, self.teacher = ViT(config), ViT(config)
        self.student_head, self.teacher_head = (
            DINOHead(config.dim, config.out_dim) for _ in range(2)
        )
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        for parameter in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
            parameter.requires_grad_(False)
        self.register_buffer("center", torch.zeros(config.out_dim))

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (B, H, W, 3) -> (B, 3, S, S) in [-1, 1]."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be uint8 (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}"
            )
        images = frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        return images

    @torch.no_grad()
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (B, H, W, 3) -> dense patch features (B, P, D) from the teacher."""
        return self.teacher(self.preprocess(frames))[:, 1:]

    def loss(
        self, frames: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """DINO loss on two augmented views of frames uint8 (B, H, W, 3)."""
        images = self.preprocess(frames)
        views = [_augment(images, generator), _augment(images, generator)]
        cfg = self.config
        student = [self.student_head(self.student(v)[:, 0]) / cfg.student_temp for v in views]
        with torch.no_grad():
            teacher_logits = [self.teacher_head(self.teacher(v)[:, 0]) for v in views]
            teacher = [
                F.softmax((t - self.center) / cfg.teacher_temp, dim=-1) for t in teacher_logits
            ]
        # each view's student predicts the other view's teacher
        loss = (
            sum(
                -(teacher[1 - i] * F.log_softmax(student[i], dim=-1)).sum(-1).mean()
                for i in range(2)
            )
            / 2
        )
        with torch.no_grad():
            batch_center = torch.cat(teacher_logits).mean(0)
            self.center.mul_(cfg.center_momentum).add_(batch_center, alpha=1 - cfg.center_momentum)
            entropy = -(teacher[0] * teacher[0].clamp_min(1e-12).log()).sum(-1).mean()
        return loss, {"dino_loss": float(loss.detach()), "teacher_entropy": float(entropy)}

    @torch.no_grad()
    def update_teacher(self, momentum: float = 0.996) -> None:
        """EMA step teacher <- momentum teacher + (1 - momentum) student (after each optimiser step)."""
        for student, teacher in (
            (self.student, self.teacher),
            (self.student_head, self.teacher_head),
        ):
            for p_s, p_t in zip(student.parameters(), teacher.parameters(), strict=True):
                p_t.mul_(momentum).add_(p_s.detach(), alpha=1 - momentum)
