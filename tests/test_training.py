"""Fast tests of the training machinery: configs, datasets, the batch order, the trainer loop
with a tiny stand-in model (plain PyTorch), resuming and its config checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dexac_env.replay.store import StoreError
from training.config import (
    ConfigError,
    TokenizerRunConfig,
    TrainerConfig,
    WMRunConfig,
    load_config,
    to_dict,
)
from training.datasets import ClipDataset, LatentWindowDataset, ShardedBatchSampler
from training.synthetic import write_random_store
from training.trainer import Trainer, config_difference

ROOT = Path(__file__).resolve().parents[1]


class StandIn(nn.Module):
    """Predicts the target latents linearly from the context latents and the actions."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * 8 + 3 * 57, 2 * 8)

    def loss(self, batch):
        assert not any(k.startswith("_") for k in batch)  # bookkeeping stays out of the loss
        inputs = torch.cat([batch["context_latents"].flatten(1), batch["actions"].flatten(1)], 1)
        noise = 0.01 * torch.randn(1)  # draws from the global RNG, like a flow objective
        error = self.linear(inputs) + noise - batch["target_latents"].flatten(1)
        loss = error.pow(2).mean()
        return loss, {"mse": float(loss.detach())}


def _trainer(store_path: Path, out_dir: Path, **changes) -> Trainer:
    torch.manual_seed(0)
    config = TrainerConfig(
        **{
            "steps": 8,
            "batch_size": 4,
            "lr": 1e-2,
            "warmup_steps": 0,
            "out_dir": str(out_dir),
            "checkpoint_every": 4,
            "log_samples": True,
            "progress_bar": False,
            **changes,
        }
    )
    dataset = LatentWindowDataset(store_path, "train", 2, 2)
    return Trainer(StandIn(), dataset, config, {"trainer": to_dict(config)})


def _metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


# -- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, cls",
    [
        ("configs/wm/tiny.yaml", WMRunConfig),
        ("configs/wm/tiny_mlp_global.yaml", WMRunConfig),
        ("configs/tokenizer/tiny_vae.yaml", TokenizerRunConfig),
        ("configs/tokenizer/tiny_ssl_vit.yaml", TokenizerRunConfig),
    ],
)
def test_shipped_configs_load(path, cls):
    config = load_config(cls, ROOT / path)
    assert config.trainer.steps > 0


def test_unknown_key_and_wrong_type_are_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.stepz'.*'steps'"):
        load_config(WMRunConfig, bad)
    with pytest.raises(ConfigError, match=r"unknown config key 'modle'"):
        load_config(WMRunConfig, None, ["modle.size=tiny"])
    with pytest.raises(ConfigError, match=r"'trainer.steps' expects int"):
        load_config(WMRunConfig, None, ["trainer.steps=many"])
    config = load_config(WMRunConfig, None, ["trainer.lr=0.5", "trainer.betas=[0.8, 0.9]"])
    assert config.trainer.lr == 0.5 and config.trainer.betas == (0.8, 0.9)
    with pytest.raises(Exception, match="frozen|cannot assign"):
        config.trainer.lr = 1.0  # type: ignore[misc]


# -- data ------------------------------------------------------------------------------------


def test_window_alignment_and_semantic(store_path):
    from dexac_env.replay.store import EpisodeStore

    dataset = LatentWindowDataset(store_path, "train", 2, 3, semantic=True)
    assert len(dataset) == 3 * (10 - 5 + 1)
    name, start = dataset.index[7]
    item = dataset[7]
    episode = EpisodeStore.open(store_path).episode(name)
    latent, action = episode.read("latent"), episode.read("action")
    np.testing.assert_array_equal(item["context_latents"], latent[start : start + 2])
    np.testing.assert_array_equal(item["target_latents"], latent[start + 2 : start + 5])
    # row 0: pose of the last context frame; rows 1..3: the predicted frames' poses
    np.testing.assert_array_equal(item["actions"], action[start + 1 : start + 5])
    np.testing.assert_array_equal(item["reward"], episode.read("reward")[start + 2 : start + 5])
    assert item["semantic_image"].shape == (4, 6) and item["semantic_text"].shape == (1, 5)
    last = LatentWindowDataset(
        store_path, "train", 2, 3, semantic=True, semantic_frame="last_context"
    )
    features = episode.read("semantic_image")
    np.testing.assert_allclose(last[7]["semantic_image"], features[start + 1], atol=0)
    # "rollout": a reset frame at or before the last context frame, the same on every read
    for index in range(len(dataset)):
        name, start = dataset.index[index]
        feats = EpisodeStore.open(store_path).episode(name).read("semantic_image")
        image = dataset[index]["semantic_image"].numpy()
        matches = [
            f for f in range(1, start + 2) if np.array_equal(feats[f].astype(np.float32), image)
        ]
        assert matches, f"window {index} got semantic features of no frame in 1..{start + 1}"
        np.testing.assert_array_equal(dataset[index]["semantic_image"], image)
    clips = ClipDataset(store_path, "train", clip_frames=2, stride=3)
    assert clips[0]["frames"].shape == (2, 16, 16, 3) and clips[0]["frames"].dtype == torch.uint8


def test_store_errors_are_clear(tmp_path, store_path):
    with pytest.raises(StoreError, match="does not exist; generate one"):
        LatentWindowDataset(tmp_path / "missing.zarr", "train", 2, 2)
    plain = tmp_path / "plain.zarr"
    write_random_store(plain, episodes=1, length=6, resolution=16)
    with pytest.raises(StoreError, match="no cached \\['latent'\\].*cache_latents.py"):
        LatentWindowDataset(plain, "train", 2, 2)
    with pytest.raises(StoreError, match="the model expects \\(8, 8, 8\\)"):
        LatentWindowDataset(store_path, "train", 2, 2, latent_shape=(8, 8, 8))
    with pytest.raises(StoreError, match="no episodes in split 'test'"):
        LatentWindowDataset(store_path, "test", 2, 2)


def test_sampler_shards_are_disjoint_and_epochs_are_permutations():
    n, batch, world = 23, 3, 2
    ranks = [ShardedBatchSampler(n, batch, r, world, seed=5) for r in range(world)]
    per_epoch = n // (batch * world)
    for step in range(3 * per_epoch):
        shards = [set(s.batch(step)) for s in ranks]
        assert len(shards[0]) == len(shards[1]) == batch and not shards[0] & shards[1]
    epoch0 = [i for step in range(per_epoch) for r in ranks for i in r.batch(step)]
    assert len(epoch0) == len(set(epoch0)) == per_epoch * batch * world  # no repeats
    epoch1 = [i for step in range(per_epoch, 2 * per_epoch) for i in ranks[0].global_batch(step)]
    assert epoch1 != epoch0[: len(epoch1)]  # a new order every epoch
    # the order is a pure function of (seed, step): a sampler started at step 5 continues it
    full = list(ShardedBatchSampler(n, batch, 1, world, seed=5, stop=9))
    assert list(ShardedBatchSampler(n, batch, 1, world, seed=5, start=5, stop=9)) == full[5:]
    assert full != list(ShardedBatchSampler(n, batch, 1, world, seed=6, stop=9))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedBatchSampler(5, 3, 0, 2)


# -- the trainer -----------------------------------------------------------------------------


def test_trainer_trains_logs_and_checkpoints(store_path, tmp_path):
    out = tmp_path / "run"
    summary = _trainer(store_path, out, keep_checkpoints=1).fit()
    records = _metrics(out)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert records[-1]["loss"] < records[0]["loss"]
    assert {"loss", "mse", "lr", "samples_per_s", "epoch", "samples"} <= set(records[0])
    assert summary["engine"] == "torch" and summary["samples_per_s"] > 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 8
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_00000008"]
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        _trainer(store_path, out).fit()


def test_resume_continues_exactly(store_path, tmp_path):
    reference = tmp_path / "reference"
    _trainer(store_path, reference, keep_checkpoints=3).fit()
    # a run that "died" after step 6 with its newest checkpoint at step 4
    crashed = tmp_path / "crashed"
    shutil.copytree(reference, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step_00000008")
    (crashed / "checkpoints" / "latest").write_text("step_00000004")
    lines = (crashed / "metrics.jsonl").read_text().splitlines()[:6]
    (crashed / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 7, "lo')  # cut line
    summary = _trainer(store_path, crashed).fit(resume=True)
    assert summary["start_step"] == 4
    expected, resumed = _metrics(reference), _metrics(crashed)
    assert [r["step"] for r in resumed] == list(range(1, 9))
    assert [r["samples"] for r in resumed] == [r["samples"] for r in expected]
    np.testing.assert_allclose(
        [r["loss"] for r in resumed], [r["loss"] for r in expected], rtol=1e-6
    )


def test_resume_with_another_config_is_refused(store_path, tmp_path):
    out = tmp_path / "run"
    _trainer(store_path, out, steps=4).fit()
    with pytest.raises(ConfigError, match="another config \\(differs in trainer.lr\\)"):
        _trainer(store_path, out, steps=4, lr=0.5).fit(resume=True)
    # logging settings may change on resume
    assert config_difference({"trainer": {"log_every": 1}}, {"trainer": {"log_every": 5}}) == []
