"""Distribution and perceptual metrics: FID/FVD/LPIPS and their in-project variants.

The standard networks (Inception-v3 for FID, I3D for FVD, AlexNet for LPIPS) cannot be
downloaded here; each standard metric runs when its weights are given as a local file, through
the maintained packages (torchmetrics' Fréchet distance, the ``lpips`` package). The default
variants use a feature network this project trained on its own frames -- the keypoint
detector's pooled bottleneck and feature pyramid -- and say so in their names:

- ``fid_sim``: Fréchet distance between detector features of true and imagined frames
  (torchmetrics' ``FrechetInceptionDistance`` over the features the scoring already computed,
  passed through a custom feature module).
- ``fvd_sim``: the same on clip features: per clip, the time-mean of frame features
  concatenated with the time-mean of their absolute frame-to-frame differences (motion).
- ``lpips_sim``: LPIPS's formula (unit-normalised channels, squared difference, spatial mean)
  on the detector's three feature levels with uniform channel weights (LPIPS's learned linear
  heads need the backbone they were fitted to).

These are comparable between models scored with the same detector file only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class _FrameFeatures(nn.Module):
    """torchmetrics custom feature module over features computed once by the detector
    (``Detections.features``): (N, D) -> (N, D) float64, no second detector pass."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()


class _ClipFeatures(nn.Module):
    """(N, T, D) per-frame features -> (N, 2D) [time mean, time mean of |difference|]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = 2 * dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        motion = (features[:, 1:] - features[:, :-1]).abs().mean(1)
        return torch.cat([features.mean(1), motion], dim=-1).double()


def _frechet(feature: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float | None:
    from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: PLC0415

    if len(real) < 2 or len(fake) < 2:
        return None
    metric = FrechetInceptionDistance(feature=feature, reset_real_features=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def fid_sim(real_features: np.ndarray, fake_features: np.ndarray) -> float | None:
    """Fréchet distance of per-frame detector features (``Detections.features``), (N, D) each."""
    feature = _FrameFeatures(real_features.shape[-1])
    return _frechet(feature, torch.from_numpy(real_features), torch.from_numpy(fake_features))


def fvd_sim(real_features: np.ndarray, fake_features: np.ndarray) -> float | None:
    """Fréchet distance of clip features from per-frame detector features (N, T, D) each."""
    feature = _ClipFeatures(real_features.shape[-1])
    return _frechet(feature, torch.from_numpy(real_features), torch.from_numpy(fake_features))


def lpips_sim(detector, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
    """Per-frame perceptual distance (N,) on the detector's feature pyramid (see module doc)."""
    with torch.no_grad():
        return lpips_from_levels(
            detector.features_pyramid(torch.from_numpy(frames_a)),
            detector.features_pyramid(torch.from_numpy(frames_b)),
        )


def lpips_from_levels(levels_a: list[torch.Tensor], levels_b: list[torch.Tensor]) -> np.ndarray:
    """``lpips_sim`` from two precomputed feature pyramids (``Detections.levels``)."""
    total = 0.0
    for fa, fb in zip(levels_a, levels_b, strict=True):
        na, nb = F.normalize(fa, dim=1, eps=1e-10), F.normalize(fb, dim=1, eps=1e-10)
        total = total + ((na - nb) ** 2).sum(1).mean((1, 2))
    return total.numpy()


# -- standard networks from local files ----------------------------------------------------------


def fid_inception(weights_path: str, real_frames: np.ndarray, fake_frames: np.ndarray) -> float:
    """FID with torch-fidelity's Inception-v3 weights from a local file (``pt_inception-2015-12-05``)
    through torchmetrics; needs ``pip install torchmetrics[image]`` (torch-fidelity)."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: PLC0415

    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=weights_path)
    metric.update(torch.from_numpy(real_frames).permute(0, 3, 1, 2), real=True)
    metric.update(torch.from_numpy(fake_frames).permute(0, 3, 1, 2), real=False)
    return float(metric.compute())


class _I3DFeatures(nn.Module):
    """FVD's I3D (the TorchScript file used by StyleGAN-V and common FVD code) from a local path:
    clips (N, T, H, W, 3) uint8 -> 400-d logits features, resized to 224 px as FVD does."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.i3d = torch.jit.load(path, map_location="cpu").eval()
        self.num_features = 400

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.float().permute(0, 4, 1, 2, 3) / 127.5 - 1.0  # (N, 3, T, H, W) in [-1, 1]
        x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        with torch.no_grad():
            return self.i3d(x, rescale=False, resize=False, return_features=True).double()


def fvd_i3d(weights_path: str, real_clips: np.ndarray, fake_clips: np.ndarray) -> float | None:
    """FVD with a local I3D TorchScript file; clips (N, T, H, W, 3) uint8 (T >= 9 for I3D)."""
    feature = _I3DFeatures(weights_path)
    return _frechet(feature, torch.from_numpy(real_clips), torch.from_numpy(fake_clips))


def lpips_alex(weights_dir: str, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
    """LPIPS (AlexNet) per frame with the ``lpips`` package; ``weights_dir`` holds torchvision's
    ``alexnet-owt-7be5be79.pth`` and lpips' ``alex.pth`` (needs ``pip install lpips``)."""
    import lpips  # noqa: PLC0415

    model = lpips.LPIPS(
        net="alex",
        pretrained=True,
        pnet_rand=True,
        model_path=f"{weights_dir}/alex.pth",
        verbose=False,
    )
    backbone = torch.load(f"{weights_dir}/alexnet-owt-7be5be79.pth", weights_only=True)
    features = {
        k.removeprefix("features."): v for k, v in backbone.items() if k.startswith("features.")
    }
    model.net.load_state_dict(
        {
            f"slice{s}.{k}": v
            for s, ks in _ALEX_SLICES.items()
            for k, v in features.items()
            if int(k.split(".")[0]) in ks
        },
        strict=False,
    )

    def to_unit(frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    with torch.no_grad():
        return model(to_unit(frames_a), to_unit(frames_b)).flatten().numpy()


# torchvision AlexNet feature indices held by each lpips slice (lpips.pretrained_networks.alexnet)
_ALEX_SLICES = {1: range(0, 2), 2: range(2, 5), 3: range(5, 8), 4: range(8, 10), 5: range(10, 12)}
