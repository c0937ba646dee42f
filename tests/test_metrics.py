"""PSNR, SSIM and PCK against values known in closed form."""

import numpy as np
import pytest

from world_model.metrics import pck, psnr, ssim


def test_psnr_known_value_and_identity():
    target = np.full((2, 8, 8, 3), 100, np.uint8)
    pred = target.copy()
    pred[1] += 10  # mse = (10/255)^2 -> 20*log10(25.5)
    values = psnr(pred, target)
    assert values[0] == pytest.approx(100.0)
    assert values[1] == pytest.approx(20 * np.log10(25.5), rel=1e-5)


def test_ssim_identity_noise_and_shape_errors():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    assert np.allclose(ssim(frames, frames), 1.0, atol=1e-5)
    noisy = np.clip(frames + rng.normal(0, 40, frames.shape), 0, 255).astype(np.uint8)
    assert (ssim(noisy, frames) < 0.9).all()
    assert ssim(frames, frames).shape == (3,)
    with pytest.raises(ValueError, match="same shape"):
        ssim(frames, frames[:2])


def test_pck_counts_only_visible_points_within_threshold():
    target = np.zeros((1, 4, 2))
    pred = np.array([[[1.0, 0], [5.0, 0], [7.0, 0], [100.0, 0]]])
    visible = np.array([[True, True, True, False]])
    assert pck(pred, target, visible, threshold=0.1, scale=64) == pytest.approx(2 / 3)
    assert np.isnan(pck(pred, target, np.zeros((1, 4), bool), 0.1, 64))
