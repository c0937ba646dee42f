"""cache_latents.py --config: encoders from a world-model training config (the paper-scale path),
checked on the tiny config on CPU: shapes, the same latents as train_wm's model and as the
--wm-size path given the same weights, and one-line exit-2 errors for bad configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from training import cache_latents
from training.components import run_main, save_component
from training.config import WMRunConfig, load_config
from training.datasets import open_store
from training.synthetic import write_random_store
from training.train_wm import build_world_model

ROOT = Path(__file__).resolve().parents[1]
LENGTH = 5


def _config(path: Path, tokenizer: str | None = None, semantic: str | None = None, **model):
    values = {
        "model": {
            "size": "tiny",
            "tokenizer_checkpoint": tokenizer,
            "semantic_checkpoint": semantic,
            **model,
        },
        "trainer": {"seed": 3},
    }
    path.write_text(yaml.safe_dump(values))
    return path


def _cache(store: Path, *args: str) -> int:
    return cache_latents.main(["--store", str(store), "--device", "cpu", *args])


def _cached(store: Path) -> dict[str, dict[str, np.ndarray]]:
    keys = ("latent", "semantic_image", "semantic_text")
    return {e.name: {k: e.read(k) for k in keys} for e in open_store(store).episodes()}


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "s.zarr"
    write_random_store(path, episodes=2, length=LENGTH, resolution=64)
    return path


def test_config_caches_the_latents_of_train_wm_model(store, tmp_path):
    config = _config(tmp_path / "wm.yaml")
    assert _cache(store, "--config", str(config)) == 0
    cached = _cached(store)
    for arrays in cached.values():
        assert arrays["latent"].shape == (LENGTH, 8, 8, 8) and arrays["latent"].dtype == np.float32
        assert arrays["semantic_image"].shape == (LENGTH, 64, 128)
        assert arrays["semantic_image"].dtype == np.float16
        assert arrays["semantic_text"].shape == (1, 1, 384)
    # without checkpoints the encoders are the random-init ones train_wm trains with
    run = load_config(WMRunConfig, config)
    torch.manual_seed(run.trainer.seed)
    model = build_world_model(run, np.zeros(57), np.ones(57)).eval()
    episode = open_store(store).episodes()[0]
    with torch.no_grad():
        expected = model.tokenizer.encode(torch.from_numpy(episode.read("rgb"))[None])[0]
    np.testing.assert_allclose(cached[episode.name]["latent"], expected.numpy(), atol=1e-5)


def test_config_equals_wm_size_path_given_the_same_weights(store, tmp_path):
    from world_model import WorldModelConfig
    from world_model.ssl_vit import SSLViT
    from world_model.tokenizer import VideoTokenizer

    tiny = WorldModelConfig.from_size("tiny")
    torch.manual_seed(11)  # weights unlike any the config's seed would draw
    tok = save_component(
        tmp_path / "tok.safetensors",
        VideoTokenizer(tiny.tokenizer),
        "dexac-tokenizer",
        tiny.tokenizer.to_dict(),
    )
    ssl = save_component(
        tmp_path / "ssl.safetensors",
        SSLViT(tiny.semantic.ssl_vit),
        "dexac-ssl-vit",
        tiny.semantic.ssl_vit.to_dict(),
    )
    config = _config(tmp_path / "wm.yaml", str(tok), str(ssl))
    assert _cache(store, "--config", str(config)) == 0
    from_config = _cached(store)
    wm_size = ["--wm-size", "tiny", "--tokenizer", str(tok), "--semantic", str(ssl)]
    assert _cache(store, *wm_size, "--overwrite") == 0
    for name, arrays in _cached(store).items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, from_config[name][key], err_msg=f"{name} {key}")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--config", "missing.yaml"], "does not exist"),
        (["--config", "bad.yaml"], "unknown config key 'model.sise'"),
        (["--config", "wm.yaml", "--set", "model.size=huge"], "model:"),
        (  # the paper config, its Wan directory not there
            [
                "--config",
                str(ROOT / "configs/wm/paper_2b_cosmos.yaml"),
                "--set",
                "model.overrides.tokenizer.pretrained_dir=no_wan",
            ],
            "pretrained_dir",
        ),
        (["--config", "dino.yaml"], "dinov3 weights are read from a local directory"),
        (["--config", "wm.yaml"], "frames, the config's tokenizer wants 64x64"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "s.zarr"
    write_random_store(store, episodes=1, length=2, resolution=32)  # not the tiny 64 px
    (tmp_path / "bad.yaml").write_text("model:\n  sise: tiny\n")
    _config(tmp_path / "wm.yaml")
    _config(
        tmp_path / "dino.yaml",
        overrides={"semantic": {"image_encoder": "dinov3", "image_encoder_dir": "no_dino"}},
    )
    assert run_main(cache_latents.main, ["--store", str(store), "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "latent" not in open_store(store).episodes()[0].keys()


@pytest.mark.parametrize(
    "extra",
    [
        ["--config", "wm.yaml", "--wm-size", "tiny"],
        ["--config", "wm.yaml", "--tokenizer", "tok.safetensors"],
        ["--wm-size", "tiny"],  # no --tokenizer
        ["--tokenizer", "tok.safetensors", "--set", "model.size=tiny"],
    ],
)
def test_conflicting_arguments_exit_2(tmp_path, extra):
    with pytest.raises(SystemExit) as exit_info:
        cache_latents.main(["--store", str(tmp_path / "s.zarr"), *extra])
    assert exit_info.value.code == 2
