"""Training packs: the same windows, in the same order, as the store they were made from
(``store_path``: the small cached store of tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dexac_env.replay.store import EpisodeStore, StoreError
from training.datasets import LatentWindowDataset
from training.latent_pack import PackedWindowDataset, main, read_pack_stats, write_pack


def _assert_same_items(a, b) -> None:
    assert len(a) == len(b) and a.index == b.index
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]), err_msg=key)


@pytest.mark.parametrize("semantic_frame", ["rollout", "last_context", "first_context"])
def test_full_pack_gives_the_store_windows(store_path, tmp_path, semantic_frame):
    pack = write_pack(store_path, "train", tmp_path / "p.npz")
    args = ("train", 2, 3)
    kwargs = dict(semantic=True, semantic_frame=semantic_frame, stride=2)
    _assert_same_items(
        LatentWindowDataset(store_path, *args, **kwargs), PackedWindowDataset(pack, *args, **kwargs)
    )
    stats = EpisodeStore.open(store_path).action_stats
    np.testing.assert_array_equal(read_pack_stats(pack).mean, stats.mean)


def test_reset_frame_pack_serves_first_context_only(store_path, tmp_path):
    pack = tmp_path / "p.npz"
    assert main(["--store", str(store_path), "--out", str(pack), "--semantic-frames", "1"]) == 0
    kwargs = dict(semantic=True, semantic_frame="first_context")
    _assert_same_items(
        LatentWindowDataset(store_path, "train", 2, 2, **kwargs),
        PackedWindowDataset(pack, "train", 2, 2, **kwargs),
    )
    rollout = PackedWindowDataset(pack, "train", 2, 2, semantic=True, semantic_frame="last_context")
    with pytest.raises(StoreError, match="first_context"):
        rollout[3]
    with pytest.raises(StoreError, match="split 'train'"):
        PackedWindowDataset(pack, "val", 2, 2)


def test_float16_pack_rounds_latents_only(store_path, tmp_path):
    pack = write_pack(store_path, "train", tmp_path / "h.npz", latent_dtype="float16")
    full = LatentWindowDataset(store_path, "train", 2, 2)
    half = PackedWindowDataset(pack, "train", 2, 2)
    np.testing.assert_allclose(half[4]["target_latents"], full[4]["target_latents"], rtol=1e-3)
    np.testing.assert_array_equal(half[4]["actions"], full[4]["actions"])
    with pytest.raises(SystemExit):  # argparse's usage error, exit status 2
        main(["--store", str(store_path), "--out", str(tmp_path / "x.zarr")])
    assert main(["--store", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "y.npz")]) == 2


def test_also_stores_join_the_training_windows(store_path, tmp_path):
    """``data.also_stores``: a second store's (here its pack's) windows follow the first's."""
    from types import SimpleNamespace

    from training.config import WindowDataConfig
    from training.train_wm import open_windows

    pack = write_pack(store_path, "train", tmp_path / "p.npz")
    latent = LatentWindowDataset(store_path, "train", 2, 2)
    shape = latent[0]["target_latents"].shape  # (chunk, C, h, w)
    wm = SimpleNamespace(
        context_frames=2, chunk_frames=2, temporal_compression=1,
        semantic=SimpleNamespace(enabled=False),
        tokenizer=SimpleNamespace(latent_channels=shape[1], resolution=8 * shape[-1]),
    )
    one = open_windows(WindowDataConfig(store=str(store_path)), wm)
    both = open_windows(WindowDataConfig(store=str(store_path), also_stores=(str(pack),)), wm)
    assert len(one) == len(latent) and len(both) == 2 * len(latent)
    np.testing.assert_array_equal(
        both[len(latent) + 3]["target_latents"], PackedWindowDataset(pack, "train", 2, 2)[3]["target_latents"]
    )
    assert both[len(latent) + 3]["_index"] == len(latent) + 3  # the joined set's, not the part's
