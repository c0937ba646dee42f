"""Video tokenizer: frames <-> normalised latents, on diffusers' autoencoder classes.

Two kinds behind one interface:

- ``kl_tiny``: a small frame-wise ``AutoencoderKL`` (8x spatial, no temporal compression),
  trained by the project (``loss``) for the CPU default.
- ``wan``: ``AutoencoderKLWan`` (16 channels, 4x temporal, 8x spatial) with weights read from a
  local diffusers directory (``pretrained_dir``); the paper-scale tokenizer. Not trained here.

Latents are normalised per channel with statistics held as buffers (saved with the weights):
``encode`` returns ``(z - mean) / std``, ``decode`` undoes it. Encoding uses the posterior mean,
so it is deterministic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderKLWan
from torch import nn

from world_model.json_config import JSONConfig

KINDS = ("kl_tiny", "wan")


@dataclass(frozen=True)
class TokenizerConfig(JSONConfig):
    """Attributes:
    kind: "kl_tiny" or "wan".
    resolution: frame height = width in pixels.
    latent_channels: C (kl_tiny: chosen freely; wan: 16).
    block_out_channels: kl_tiny encoder widths; len - 1 downsamplings (4 -> 8x).
    layers_per_block: kl_tiny ResNet layers per block.
    norm_groups: kl_tiny GroupNorm groups.
    kl_weight: weight of the KL term in ``loss``.
    pretrained_dir: local diffusers directory of an AutoencoderKLWan (wan only).
    """

    kind: str = "kl_tiny"
    resolution: int = 64
    latent_channels: int = 8
    block_out_channels: tuple[int, ...] = (32, 64, 64, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    kl_weight: float = 1e-6
    pretrained_dir: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "wan" and self.latent_channels != 16:
            raise ValueError(
                f"the wan tokenizer has 16 latent channels, got {self.latent_channels}"
            )
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {self.resolution}")
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))


def _frames_to_unit(frames: torch.Tensor) -> torch.Tensor:
    if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be uint8 of shape (B, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}"
        )
    return frames.float().div(127.5).sub(1.0)  # (B, T, H, W, 3) in [-1, 1]


class VideoTokenizer(nn.Module):
    """frames uint8 (B, T, H, W, 3) <-> normalised latents float32 (B, T', C, h, w).

    ``vae_config``: an AutoencoderKLWan config dict to build the wan architecture without its
    weight directory (used when loading a world-model checkpoint that already holds them).
    """

    def __init__(self, config: TokenizerConfig, vae_config: dict | None = None) -> None:
        super().__init__()
        self.config = config
        if config.kind == "kl_tiny":
            levels = len(config.block_out_channels)
            self.vae = AutoencoderKL(
                down_block_types=("DownEncoderBlock2D",) * levels,
                up_block_types=("UpDecoderBlock2D",) * levels,
                block_out_channels=config.block_out_channels,
                layers_per_block=config.layers_per_block,
                latent_channels=config.latent_channels,
                norm_num_groups=config.norm_groups,
                sample_size=config.resolution,
                mid_block_add_attention=False,
            )
            mean, std = torch.zeros(config.latent_channels), torch.ones(config.latent_channels)
        else:
            if vae_config is not None:
                self.vae = AutoencoderKLWan.from_config(vae_config)
            elif config.pretrained_dir is None or not os.path.isdir(config.pretrained_dir):
                raise ValueError(
                    "the wan tokenizer reads AutoencoderKLWan weights from a local diffusers "
                    f"directory; set TokenizerConfig.pretrained_dir (got {config.pretrained_dir!r})"
                )
            else:
                self.vae = AutoencoderKLWan.from_pretrained(config.pretrained_dir)
            mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32)
            std = torch.tensor(self.vae.config.latents_std, dtype=torch.float32)
        self.register_buffer("latent_mean", mean)
        self.register_buffer("latent_std", std)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def spatial_compression(self) -> int:
        return 8

    @property
    def temporal_compression(self) -> int:
        return 1 if self.config.kind == "kl_tiny" else 4

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(T', C, h, w) of the latents of ``frames`` frames of ``height`` x ``width``."""
        if self.temporal_compression > 1 and (frames - 1) % self.temporal_compression:
            raise ValueError(f"wan needs 1 + 4k frames, got {frames}")
        latent_frames = 1 + (frames - 1) // self.temporal_compression
        return latent_frames, self.latent_channels, height // 8, width // 8

    # -- statistics -------------------------------------------------------------------------
    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-channel statistics of raw latents, (C,) each."""
        mean, std = torch.as_tensor(mean).float(), torch.as_tensor(std).float()
        if mean.shape != (self.latent_channels,) or std.shape != (self.latent_channels,):
            raise ValueError(
                f"latent stats must have shape ({self.latent_channels},), got {tuple(mean.shape)}, "
                f"{tuple(std.shape)}"
            )
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std.clamp_min(1e-6))

    @torch.no_grad()
    def compute_latent_stats(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit and set the statistics from frames uint8 (B, T, H, W, 3); returns (mean, std)."""
        raw = self._encode_raw(frames)  # (B, T', C, h, w)
        mean = raw.mean(dim=(0, 1, 3, 4))
        std = raw.std(dim=(0, 1, 3, 4))
        self.set_latent_stats(mean, std)
        return mean, std

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean[:, None, None], self.latent_std[:, None, None]  # (C, 1, 1)

    # -- encode / decode --------------------------------------------------------------------
    def _posterior(self, frames: torch.Tensor):
        pixels = _frames_to_unit(frames)  # (B, T, H, W, 3)
        b, t = pixels.shape[:2]
        if self.config.kind == "kl_tiny":
            images = pixels.permute(0, 1, 4, 2, 3).flatten(0, 1)  # (B T, 3, H, W)
            return self.vae.encode(images).latent_dist, (b, t)
        video = pixels.permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
        return self.vae.encode(video).latent_dist, (b, t)

    def _to_frames_first(self, z: torch.Tensor, b: int) -> torch.Tensor:
        if self.config.kind == "kl_tiny":
            return z.unflatten(0, (b, -1))  # (B, T, C, h, w)
        return z.permute(0, 2, 1, 3, 4)  # (B, T', C, h, w)

    def _encode_raw(self, frames: torch.Tensor) -> torch.Tensor:
        posterior, (b, _) = self._posterior(frames)
        return self._to_frames_first(posterior.mode(), b)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (B, T, H, W, 3) -> normalised latents float32 (B, T', C, h, w)."""
        mean, std = self._stats()
        return (self._encode_raw(frames) - mean) / std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents (B, T', C, h, w) -> frames uint8 (B, T, H, W, 3)."""
        if latents.ndim != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(
                f"latents must have shape (B, T, {self.latent_channels}, h, w), got {tuple(latents.shape)}"
            )
        mean, std = self._stats()
        raw = latents * std + mean
        b = raw.shape[0]
        if self.config.kind == "kl_tiny":
            raw = raw.flatten(0, 1)  # (B T, C, h, w)
            if raw.device.type == "cpu":
                # oneDNN's convolutions run channels-last natively: fed NCHW they reorder every
                # activation. Channels-last input made a 16-frame decode 1.2-1.4x faster in
                # fp32 and 1.4-1.8x in bf16 here (E24); the frames differ by rounding (<= 2 of
                # 255). Not done on a GPU, where it was not measured.
                raw = raw.contiguous(memory_format=torch.channels_last)
            pixels = self.vae.decode(raw).sample.unflatten(0, (b, -1))  # (B, T, 3, H, W)
        else:
            pixels = self.vae.decode(raw.permute(0, 2, 1, 3, 4)).sample.permute(0, 2, 1, 3, 4)
        pixels = pixels.permute(0, 1, 3, 4, 2)  # (B, T, H, W, 3)
        return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    def loss(self, frames: torch.Tensor, hard_pixel_weight: float = 0.0,
             hard_pixel_fraction: float = 0.02) -> tuple[torch.Tensor, dict[str, float]]:
        """VAE objective on frames uint8 (B, T, H, W, 3): L1 + MSE reconstruction + weighted KL,
        plus ``hard_pixel_weight`` x the mean absolute error (summed over RGB) of each frame's
        worst ``hard_pixel_fraction`` of pixels. The plain mean lets a 2-3 px object vanish (it
        is ~0.2% of a 64 px frame): the worst pixels are where it went."""
        if self.config.kind != "kl_tiny":
            raise ValueError("only the kl_tiny tokenizer is trained here; wan is loaded pretrained")
        target = _frames_to_unit(frames).permute(0, 1, 4, 2, 3).flatten(0, 1)  # (B T, 3, H, W)
        posterior = self.vae.encode(target).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample  # (B T, 3, H, W)
        l1 = F.l1_loss(reconstruction, target)
        mse = F.mse_loss(reconstruction, target)
        kl = posterior.kl().mean() / target[0].numel()
        loss = l1 + mse + self.config.kl_weight * kl
        psnr = 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))  # range [-1, 1] -> peak 2
        logs = {
            "l1": float(l1.detach()),
            "mse": float(mse.detach()),
            "kl": float(kl.detach()),
            "psnr": float(psnr),
        }
        if hard_pixel_weight > 0:
            if not 0.0 < hard_pixel_fraction <= 1.0:
                raise ValueError(f"hard_pixel_fraction must be in (0, 1], got {hard_pixel_fraction}")
            error = (reconstruction - target).abs().sum(1).flatten(1)  # (B T, H W)
            worst = error.topk(max(1, int(hard_pixel_fraction * error.shape[1])), dim=1).values
            hard = worst.mean()
            loss = loss + hard_pixel_weight * hard
            logs["hard"] = float(hard.detach())
        return loss, logs
