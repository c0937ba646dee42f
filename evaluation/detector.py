"""A small heatmap keypoint detector: hands (wrists, fingertips) and static scene landmarks.

It finds in a frame (real, reconstructed or imagined) the points an episode store labels in
``keypoints_2d`` (+ ``landmarks_2d`` where the store has them), so that keypoint accuracy of
imagined frames (PCK) can be measured the way the paper measures it. Trained by
``dexac evaluate train-detector`` on a store's frames and on the world model's tokenizer
reconstructions of them (imagined frames are blurry: a low PCK must mean a wrong hand, not a
blurry one).

Network (64 px default): pixel-unshuffle 2 -> a three-level U-Net at 1/2, 1/4, 1/8 resolution
-> one heatmap per point at 1/2 resolution, and a presence logit per point from the pooled
bottleneck. Location = soft-argmax of the heatmap in a 5x5 cell window around its peak (sub-pixel);
a point is *found* when its presence probability is >= 0.5 (a point the detector does not
find counts as wrong in PCK, never as skipped). Loss: spatial cross-entropy of each visible
point's heatmap against a Gaussian target (sigma 1 heatmap cell) + binary cross-entropy of
presence against visibility. The pooled bottleneck features double as the feature network of
the in-project distribution metrics (``fid_sim``, ``fvd_sim``, ``lpips_sim``): a network this
project trained on its own frames, named as such.

Imports world_model only (the one-way dependency rule); stores are read elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = "dexac-keypoint-detector"
FAMILIES = ("wrist", "finger", "head")


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture and point set of a :class:`KeypointDetector`.

    point_names: the detected points, in the order of the store's keypoints then landmarks.
    point_families: family of each point ("wrist", "finger" or "head" = static landmarks).
    resolution: square input side in pixels (the store's frames).
    widths: channels of the three U-Net levels (1/2, 1/4, 1/8 resolution).
    sigma: Gaussian target width in heatmap cells (1 cell = 2 px).
    """

    point_names: tuple[str, ...]
    point_families: tuple[str, ...]
    resolution: int = 64
    widths: tuple[int, int, int] = (32, 64, 96)
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if len(self.point_names) != len(self.point_families) or not self.point_names:
            raise ValueError(
                f"point_names and point_families must be non-empty and of equal length, got "
                f"{len(self.point_names)} and {len(self.point_families)}"
            )
        unknown = sorted(set(self.point_families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"point families must be in {FAMILIES}, got {unknown}")
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {self.resolution}")

    @property
    def num_points(self) -> int:
        return len(self.point_names)

    @property
    def heatmap_size(self) -> int:
        return self.resolution // 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DetectorConfig:
        values = dict(values)
        for key in ("point_names", "point_families", "widths"):
            values[key] = tuple(values[key])
        return cls(**values)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


@dataclass
class Detections:
    """Detector output for N frames: uv (N, K, 2) pixels, found (N, K) bool, presence (N, K)
    probability, features (N, D) pooled bottleneck features; levels: the encoder pyramid
    (``features_pyramid``) when asked for, else None."""

    uv: np.ndarray
    found: np.ndarray
    presence: np.ndarray
    features: np.ndarray
    levels: list[torch.Tensor] | None = None


class KeypointDetector(nn.Module):
    """Frames (N, H, W, 3) uint8 -> heatmaps and presence logits; see the module docstring."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3 = config.widths
        k = config.num_points
        self.enc1 = _block(12, w1)  # 1/2 resolution (pixel-unshuffled input)
        self.enc2 = _block(w1, w2)  # 1/4
        self.enc3 = _block(w2, w3)  # 1/8
        self.dec2 = _block(w3 + w2, w2)
        self.dec1 = _block(w2 + w1, w1)
        self.heatmap_head = nn.Conv2d(w1, k, 1)
        self.presence_head = nn.Linear(w3, k)

    # -- network ---------------------------------------------------------------------------------
    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 or [0, 1] float -> (N, 3, R, R) in [-1, 1] at the config's size."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (N, H, W, 3), got {tuple(frames.shape)}")
        x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        x = x.permute(0, 3, 1, 2) * 2.0 - 1.0
        r = self.config.resolution
        if x.shape[-1] != r or x.shape[-2] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features_pyramid(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """The three encoder levels [(N, w1, R/2, R/2), (N, w2, R/4, R/4), (N, w3, R/8, R/8)]."""
        x = F.pixel_unshuffle(self._pixels(frames.to(self.heatmap_head.weight.device)), 2)
        f1 = self.enc1(x)
        f2 = self.enc2(F.avg_pool2d(f1, 2))
        f3 = self.enc3(F.avg_pool2d(f2, 2))
        return [f1, f2, f3]

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns heatmap logits (N, K, R/2, R/2), presence logits (N, K), features (N, w3)."""
        return self.heads(self.features_pyramid(frames))

    def heads(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder and heads on an encoder pyramid (see :meth:`forward`)."""
        f1, f2, f3 = levels
        # 1. decoder with skips
        d2 = self.dec2(torch.cat([F.interpolate(f3, scale_factor=2.0), f2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), f1], dim=1))
        # 2. heads
        pooled = f3.mean(dim=(2, 3))  # (N, w3)
        return self.heatmap_head(d1), self.presence_head(pooled), pooled

    # -- training --------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: frames (N, H, W, 3) uint8, points_uv (N, K, 2) pixels, visible (N, K) bool."""
        heatmaps, presence, _ = self(batch["frames"])
        n, k, s, _ = heatmaps.shape
        target = self._gaussian_targets(batch["points_uv"].float(), s)  # (N, K, s*s)
        visible = batch["visible"].bool()
        log_prob = F.log_softmax(heatmaps.reshape(n, k, s * s), dim=-1)
        ce = -(target * log_prob).sum(-1)  # (N, K)
        heat_loss = (ce * visible).sum() / visible.sum().clamp_min(1)
        presence_loss = F.binary_cross_entropy_with_logits(presence, visible.float())
        loss = heat_loss + presence_loss
        return loss, {
            "loss": loss.item(),
            "heatmap_ce": heat_loss.item(),
            "presence_bce": presence_loss.item(),
        }

    def _gaussian_targets(self, points_uv: torch.Tensor, size: int) -> torch.Tensor:
        """(N, K, 2) pixel coordinates -> (N, K, size*size) normalised Gaussian heatmaps."""
        scale = size / self.config.resolution
        cells = torch.arange(size, dtype=torch.float32, device=points_uv.device) + 0.5
        u = points_uv[..., 0:1] * scale  # (N, K, 1) heatmap units (cell centres at i + 0.5)
        v = points_uv[..., 1:2] * scale
        gx = torch.exp(-((cells - u) ** 2) / (2 * self.config.sigma**2))  # (N, K, size)
        gy = torch.exp(-((cells - v) ** 2) / (2 * self.config.sigma**2))
        grid = gy[..., :, None] * gx[..., None, :]  # (N, K, size, size)
        grid = grid.reshape(*grid.shape[:2], -1)
        return grid / grid.sum(-1, keepdim=True).clamp_min(1e-12)

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(
        self, frames: np.ndarray | torch.Tensor, batch_size: int = 256, keep_levels: bool = False
    ) -> Detections:
        """Detect every point in frames (N, H, W, 3) (uint8, or float in [0, 1]);
        ``keep_levels`` also returns the encoder pyramid (``lpips_sim`` reuses it)."""
        frames = torch.as_tensor(np.asarray(frames)) if not torch.is_tensor(frames) else frames
        outs, levels = [], []
        for i in range(0, len(frames), batch_size):
            pyramid = self.features_pyramid(frames[i : i + batch_size])
            outs.append(self._detect_batch(*self.heads(pyramid)))
            if keep_levels:
                levels.append(pyramid)
        arrays = (np.concatenate(parts) for parts in zip(*outs, strict=True))
        kept = [torch.cat(parts) for parts in zip(*levels, strict=True)] if keep_levels else None
        return Detections(*arrays, levels=kept)

    def _detect_batch(self, heatmaps, presence, features):
        n, k, s, _ = heatmaps.shape
        prob = F.softmax(heatmaps.reshape(n, k, -1), dim=-1).reshape(n, k, s, s)
        peak = prob.reshape(n, k, -1).argmax(-1)
        py, px = peak // s, peak % s
        # soft-argmax in a 5x5 window around the peak: sub-pixel, robust to far-away mass
        offsets = torch.arange(-2, 3, device=prob.device)
        ys = (py[..., None] + offsets).clamp(0, s - 1)  # (N, K, 5)
        xs = (px[..., None] + offsets).clamp(0, s - 1)
        window = prob[
            torch.arange(n)[:, None, None, None],
            torch.arange(k)[None, :, None, None],
            ys[..., :, None],
            xs[..., None, :],
        ]  # (N, K, 5, 5)
        weight = window / window.sum((-1, -2), keepdim=True).clamp_min(1e-12)
        v = (weight.sum(-1) * (ys.float() + 0.5)).sum(-1)
        u = (weight.sum(-2) * (xs.float() + 0.5)).sum(-1)
        uv = torch.stack([u, v], -1) * (self.config.resolution / s)  # pixels
        presence = torch.sigmoid(presence)
        return (
            uv.cpu().numpy(),
            (presence >= 0.5).cpu().numpy(),
            presence.cpu().numpy(),
            features.cpu().numpy(),
        )

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str, extra: dict | None = None) -> None:
        """One self-describing safetensors file: weights, config, and ``extra`` (e.g. metrics)."""
        from world_model import __version__  # noqa: PLC0415

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        metadata = {
            "format": FORMAT,
            "config": json.dumps(self.config.to_dict()),
            "code_version": __version__,
            "extra": json.dumps(extra or {}),
        }
        save_file(tensors, path, metadata=metadata)

    @classmethod
    def load(cls, path: str) -> KeypointDetector:
        """Load a file written by :meth:`save` (never unpickles)."""
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise ValueError(
                        f"{path} is not a keypoint-detector file (format={metadata.get('format')!r})"
                    )
                state = {name: handle.get_tensor(name) for name in handle.keys()}
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no keypoint-detector file at {path}") from exc
        except (OSError, SafetensorError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file ({exc})") from exc
        detector = cls(DetectorConfig.from_dict(json.loads(metadata["config"])))
        detector.load_state_dict(state, strict=True)
        detector.info = json.loads(metadata.get("extra", "{}"))
        return detector.eval()
