"""Smoke runs of the training entry points with the real tiny WorldModel on a small random store:
tokenizer + ssl-vit training -> latent caching -> world-model training -> export (in process),
a two-rank DeepSpeed ZeRO-2 run, and a SIGKILLed run resumed (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from training import cache_latents, train_tokenizer, train_wm
from training.config import ConfigError
from training.datasets import ShardedBatchSampler
from training.synthetic import write_random_store

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _wm_args(store: Path, work: Path, out: str, steps: int, *extra: str) -> list[str]:
    return [
        "--config", str(ROOT / "configs/wm/tiny.yaml"),
        "--set", f"data.store={store}",
        "--set", f"model.tokenizer_checkpoint={work / 'tok.safetensors'}",
        "--set", f"model.semantic_checkpoint={work / 'ssl.safetensors'}",
        "--set", f"trainer.steps={steps}", "--set", "trainer.batch_size=2",
        "--set", "trainer.num_workers=0", "--set", "trainer.log_samples=true",
        "--set", "trainer.warmup_steps=1", "--set", "trainer.progress_bar=false",
        "--set", f"trainer.out_dir={work / out}", *extra,
    ]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """Tokenizer and ssl-vit trained for 2 steps each, latents + semantics cached, WM trained."""
    work = tmp_path_factory.mktemp("pipeline")
    store = work / "sim.zarr"
    write_random_store(store, episodes=3, length=10, resolution=64)
    common = ["--set", f"data.store={store}", "--set", "trainer.steps=2",
              "--set", "trainer.batch_size=2", "--set", "trainer.num_workers=0",
              "--set", "trainer.progress_bar=false"]
    assert train_tokenizer.main([
        "--config", str(ROOT / "configs/tokenizer/tiny_vae.yaml"), *common,
        "--set", f"trainer.out_dir={work / 'run_vae'}", "--set", f"output={work / 'tok.safetensors'}",
        "--set", "model.latent_stats_frames=8",
    ]) == 0
    assert train_tokenizer.main([
        "--config", str(ROOT / "configs/tokenizer/tiny_ssl_vit.yaml"), *common,
        "--set", f"trainer.out_dir={work / 'run_ssl'}", "--set", f"output={work / 'ssl.safetensors'}",
    ]) == 0
    assert cache_latents.main([
        "--store", str(store), "--tokenizer", str(work / "tok.safetensors"),
        "--semantic", str(work / "ssl.safetensors"),
    ]) == 0
    assert train_wm.main(_wm_args(store, work, "run_wm", 2)) == 0
    return work


def test_single_process_pipeline_and_export_loads_in_facade(pipeline):
    from world_model import WorldModel

    model = WorldModel.from_pretrained(str(pipeline / "run_wm" / "model.safetensors"))
    assert model.config.conditioning.variant == "dexac"
    tokenizer = load_file(str(pipeline / "tok.safetensors"))
    state = model.tokenizer.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tokenizer.items())  # the trained VAE
    assert float(tokenizer["latent_std"].min()) > 0 and not torch.all(tokenizer["latent_std"] == 1)
    records = _metrics(pipeline / "run_wm")
    assert [r["step"] for r in records] == [1, 2] and "flow_loss" in records[0]
    assert "reward_loss" in records[0]  # the reward head trains with the world model
    # the export is the trained weights: one DiT tensor equals the checkpoint's
    checkpoint = torch.load(pipeline / "run_wm/checkpoints/step_00000002/state.pt", weights_only=True)
    name = next(k for k in checkpoint["model"] if k.startswith("dit."))
    assert torch.equal(model.state_dict()[name], checkpoint["model"][name])


def test_tokenizer_fine_tune_starts_from_its_file_and_a_wm_keeps_the_named_tokenizer(pipeline):
    """``model.init_checkpoint`` starts the VAE from a file (the hue and worst-pixel options on);
    a world model initialised from an export keeps the tokenizer its config names."""
    from world_model import WorldModel

    work = pipeline
    store = work / "sim.zarr"
    tuned = work / "tok_tuned.safetensors"
    base = ["--config", str(ROOT / "configs/tokenizer/tiny_vae.yaml"), "--set", f"data.store={store}",
            "--set", "trainer.batch_size=2", "--set", "trainer.num_workers=0",
            "--set", "trainer.progress_bar=false", "--set", "model.latent_stats_frames=8",
            "--set", f"output={tuned}"]
    assert train_tokenizer.main([
        *base, "--set", "trainer.steps=1", "--set", "trainer.lr=0.0",
        "--set", f"trainer.out_dir={work / 'run_vae_tuned'}",
        "--set", f"model.init_checkpoint={work / 'tok.safetensors'}",
        "--set", "model.hue_augment=1.0", "--set", "model.hard_pixel_weight=1.0",
    ]) == 0
    start, after = load_file(str(work / "tok.safetensors")), load_file(str(tuned))
    # lr 0: the weights are the file's (a fresh init would differ); the latent stats refitted
    assert all(torch.equal(start[k], after[k]) for k in start if not k.startswith("latent_"))
    with pytest.raises(ConfigError, match="vae only"):
        train_tokenizer.main(["--config", str(ROOT / "configs/tokenizer/tiny_ssl_vit.yaml"),
                              "--set", "model.hue_augment=0.5"])
    # the tokenizer named in a WM config wins over the init file's copy
    perturbed = {k: (v + 0.01 if v.is_floating_point() and not k.startswith("latent_") else v)
                 for k, v in after.items()}
    with safe_open(str(tuned), "pt") as handle:
        metadata = handle.metadata()
    other = work / "tok_other.safetensors"
    save_file(perturbed, str(other), metadata=metadata)
    assert train_wm.main([*_wm_args(store, work, "run_wm_named_tok", 1),
                          "--set", f"model.init_checkpoint={work / 'run_wm' / 'model.safetensors'}",
                          "--set", f"model.tokenizer_checkpoint={other}"]) == 0
    model = WorldModel.from_pretrained(str(work / "run_wm_named_tok" / "model.safetensors"))
    state = model.tokenizer.state_dict()
    assert all(torch.equal(state[k], v) for k, v in perturbed.items())


def test_export_sets_the_default_sampler_steps_and_keeps_the_weights(pipeline):
    from training.export import main as export_main
    from world_model import WorldModel

    out = pipeline / "two_step.safetensors"
    assert export_main([str(pipeline / "run_wm"), "--sampler-steps", "2", "--output", str(out)]) == 0
    exported = WorldModel.from_pretrained(str(out))
    reference = WorldModel.from_pretrained(str(pipeline / "run_wm" / "model.safetensors"))
    assert exported.config.sampler.num_steps == 2 != reference.config.sampler.num_steps
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in exported.state_dict().items())
    with pytest.raises(ValueError, match="num_steps"):
        export_main([str(pipeline / "run_wm"), "--sampler-steps", "0", "--output", str(out)])


def test_own_rollout_training_reads_longer_windows_and_logs_the_imagined_share(pipeline):
    """``rollout.chunks``: the windows hold the imagined chunks too (fewer windows fit an
    episode), and every step logs the share of windows scored on the imagined context."""
    store = pipeline / "sim.zarr"
    args = _wm_args(store, pipeline, "run_wm_own", 2, "--set", "rollout.chunks=1",
                    "--set", "rollout.probability=1.0")
    assert train_wm.main(args) == 0
    records = _metrics(pipeline / "run_wm_own")
    assert [r["own_context_share"] for r in records] == [1.0, 1.0]
    # context 2 + two chunks of 4 fill an episode of 10 frames: one window per episode
    assert {i for r in records for rank in r["samples"] for i in rank} <= {0, 1, 2}
    with pytest.raises(ConfigError, match="rollout.probability"):
        train_wm.main(_wm_args(store, pipeline, "run_wm_bad", 1, "--set", "rollout.chunks=1",
                               "--set", "rollout.probability=2"))


def test_two_rank_deepspeed_zero2(pipeline):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    result = _run([
        deepspeed, "--num_gpus", "2", "--master_port", str(port), "training/train_wm.py",
        *_wm_args(pipeline / "sim.zarr", pipeline, "run_ds", 3,
                  "--deepspeed_config", "configs/deepspeed/zero2_fp32.json"),
    ])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = pipeline / "run_ds"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["engine"] == "deepspeed" and summary["world_size"] == 2
    records = _metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        rank0, rank1 = record["samples"]
        assert len(rank0) == len(rank1) == 2 and not set(rank0) & set(rank1)
    from world_model import WorldModel

    assert WorldModel.from_pretrained(str(run / "model.safetensors")) is not None


def test_sigkill_then_resume_loses_and_repeats_nothing(pipeline):
    store = pipeline / "sim.zarr"
    script = [sys.executable, "training/train_wm.py"]
    args = _wm_args(store, pipeline, "run_kill", 5, "--set", "trainer.checkpoint_every=2")
    # the entry point with the trainer's fault-injection hook: SIGKILL right after step 3
    crash = ("import functools, sys; from training import train_wm, trainer; "
             "train_wm.Trainer = functools.partial(trainer.Trainer, "
             "on_step_end=trainer.sigkill_after(3)); sys.exit(train_wm.main(sys.argv[1:]))")
    killed = _run([sys.executable, "-c", crash, *args])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = pipeline / "run_kill"
    assert [r["step"] for r in _metrics(run)] == [1, 2, 3]
    assert not (run / "model.safetensors").exists()
    resumed = _run(script + args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["start_step"] == 2
    records = _metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    # every step used exactly the samples of the uninterrupted order
    dataset_size = 3 * (10 - 6 + 1)
    order = ShardedBatchSampler(dataset_size, 2, seed=0, stop=5)
    assert [r["samples"][0] for r in records] == list(order)
    # and the loss curve is that of an uninterrupted run (same samples, same noise)
    assert train_wm.main(_wm_args(store, pipeline, "run_ref", 5,
                                  "--set", "trainer.checkpoint_every=2")) == 0
    reference = _metrics(pipeline / "run_ref")
    np.testing.assert_allclose([r["loss"] for r in records], [r["loss"] for r in reference],
                               rtol=1e-4)
