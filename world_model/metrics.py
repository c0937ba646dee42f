"""Frame and keypoint metrics: PSNR, SSIM, PCK.

All take uint8 or float frames of shape (..., H, W, 3) (float frames in [0, 1]) and reduce over
the last three axes, returning one value per leading index, so per-frame curves come for free.
Networks-based metrics (LPIPS, FID, FVD) need weights that cannot be had offline here; any
variant computed with a network the project trained itself must say so in its name.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_unit_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    frames = torch.as_tensor(frames)
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    return frames.float()


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if pred.ndim < 3 or pred.shape[-1] != 3:
        raise ValueError(f"frames must have shape (..., H, W, 3), got {tuple(pred.shape)}")


def psnr(pred, target, max_db: float = 100.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per frame, shape pred.shape[:-3]; capped at max_db."""
    pred, target = _as_unit_float(pred), _as_unit_float(target)
    _check_pair(pred, target)
    mse = ((pred - target) ** 2).mean(dim=(-3, -2, -1))
    value = 10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-max_db / 10)))
    return value.numpy()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return kernel[:, None] * kernel[None, :]


def ssim(pred, target, window: int = 11) -> np.ndarray:
    """Structural similarity (Wang et al. 2004, Gaussian 11x11, sigma 1.5) per frame.

    The window shrinks to the image size for small frames (64 px is fine with 11).
    """
    pred, target = _as_unit_float(pred), _as_unit_float(target)
    _check_pair(pred, target)
    lead = pred.shape[:-3]
    h, w = pred.shape[-3], pred.shape[-2]
    size = min(window, h, w)
    size -= 1 - size % 2  # odd, and never larger than the frame
    kernel = _gaussian_window(size).expand(3, 1, size, size)
    x = pred.reshape(-1, h, w, 3).permute(0, 3, 1, 2)  # (N, 3, H, W)
    y = target.reshape(-1, h, w, 3).permute(0, 3, 1, 2)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=3)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return score.mean(dim=(1, 2, 3)).reshape(lead).numpy()


def pck_correct(pred_uv, target_uv, visible, threshold: float, scale: float, found=None):
    """Per-keypoint correctness of PCK: (..., K) float, 1 = correct, 0 = wrong, NaN = not scored.

    A keypoint is scored where the ground truth is ``visible``; it is correct when the
    prediction was ``found`` (default: all found) and lies within ``threshold * scale`` pixels
    (strictly closer). A keypoint the detector did not find counts as wrong, never as skipped.
    pred_uv, target_uv: (..., K, 2) pixels; visible, found: (..., K) bool; scale: pixels (we use
    the image side, so PCK@10 = within 10% of the image side).
    """
    pred_uv, target_uv = np.asarray(pred_uv, np.float64), np.asarray(target_uv, np.float64)
    visible = np.asarray(visible, bool)
    found = np.ones(visible.shape, bool) if found is None else np.asarray(found, bool)
    if (
        pred_uv.shape != target_uv.shape
        or pred_uv.shape[:-1] != visible.shape
        or found.shape != visible.shape
    ):
        raise ValueError(
            f"pck expects pred/target (..., K, 2) and visible/found (..., K), got {pred_uv.shape}, "
            f"{target_uv.shape}, {visible.shape}, {found.shape}"
        )
    distance = np.linalg.norm(pred_uv - target_uv, axis=-1)
    correct = (found & (distance < threshold * scale)).astype(np.float64)
    return np.where(visible, correct, np.nan)


def pck(pred_uv, target_uv, visible, threshold: float, scale: float, found=None) -> float:
    """Percentage of correct keypoints over the visible ground-truth points (see
    :func:`pck_correct`): a fraction in [0, 1], or NaN when no keypoint is visible."""
    correct = pck_correct(pred_uv, target_uv, visible, threshold, scale, found)
    if np.isnan(correct).all():
        return float("nan")
    return float(np.nanmean(correct))
