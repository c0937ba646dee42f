"""The Zarr episode store: writes, atomicity, statistics, windows, schema checks, CLI."""

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dexac_env.cli import main as dexac_main
from dexac_env.replay.store import EpisodeStore, StoreError


def episode_arrays(length=20, seed=0, resolution=16):
    rng = np.random.default_rng(seed)
    return dict(
        rgb=rng.integers(0, 255, (length, resolution, resolution, 3), dtype=np.uint8),
        action=rng.normal(size=(length, 57)).astype(np.float32),
        keypoints_2d=rng.uniform(0, resolution, (length, 12, 2)).astype(np.float32),
        keypoints_visible=rng.random((length, 12)) > 0.2,
    )


ATTRS = dict(
    task="push",
    description="push the red box",
    fps=10,
    source="sim",
    split="train",
    intrinsics=np.eye(3),
)


@pytest.fixture
def store(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    for i in range(3):
        split = ("train", "train", "test")[i]
        store.write_episode(
            f"ep{i}",
            **episode_arrays(seed=i),
            attrs={**ATTRS, "split": split},
            extra={"reward": np.arange(20, dtype=np.float32)},
        )
    return store


def test_round_trip_and_windows(store):
    data = episode_arrays(seed=1)
    window = store.window("ep1", 3, 16)
    np.testing.assert_array_equal(window["rgb"], data["rgb"][3:19])
    np.testing.assert_array_equal(window["action"], data["action"][3:19])
    np.testing.assert_array_equal(window["reward"], np.arange(3, 19))
    episode = store.episode("ep1")
    assert episode.length == 20 and episode.attrs["task"] == "push"
    assert episode.attrs["intrinsics"] == np.eye(3).tolist()
    assert episode.task_text == "push the red box"
    with pytest.raises(StoreError, match=r"out of range .* 20 frames \(valid starts: 0\.\.4\)"):
        store.window("ep1", 5, 16)
    with pytest.raises(StoreError, match="no episode"):
        store.window("nope", 0, 1)


def test_action_stats_streaming_equals_numpy(store):
    stats = store.compute_action_stats(split="train")
    actions = np.concatenate([episode_arrays(seed=i)["action"] for i in (0, 1)]).astype(np.float64)
    np.testing.assert_allclose(stats.mean, actions.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats.std, actions.std(0), atol=1e-6)
    np.testing.assert_allclose(stats.max, actions.max(0))
    assert stats.count == 40
    reopened = EpisodeStore.open(store.path)
    np.testing.assert_allclose(reopened.action_stats.std, stats.std)


def test_validation_errors(store):
    bad = episode_arrays()
    bad["action"] = bad["action"][:, :56]
    with pytest.raises(ValueError, match=r"action must have shape \(20, 57\)"):
        store.write_episode("x", **bad, attrs=ATTRS)
    with pytest.raises(ValueError, match="missing"):
        store.write_episode("x", **episode_arrays(), attrs={"task": "push"})
    with pytest.raises(StoreError, match="already exists"):
        store.write_episode("ep0", **episode_arrays(), attrs=ATTRS)
    with pytest.raises(StoreError, match="read-only"):
        EpisodeStore.open(store.path).write_episode("y", **episode_arrays(), attrs=ATTRS)


def test_schema_version_and_non_store_errors(tmp_path, store, capsys):
    with pytest.raises(StoreError, match="not a DexAC episode store"):
        EpisodeStore.open(tmp_path)
    meta_path = store.path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["schema_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema version 99"):
        EpisodeStore.open(store.path)
    assert dexac_main(["data", "info", str(store.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "schema version 99" in err  # one line, no traceback


def test_data_info_cli(store, capsys):
    assert dexac_main(["data", "info", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "episodes     3" in out and "'test': 1" in out and "finger" in out


WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from dexac_env.replay import store as store_module
    from tests.test_store import ATTRS, episode_arrays

    slow = sys.argv[2] == "slow"
    original = store_module._write_array

    def slow_write(group, key, value):
        original(group, key, value)
        if slow and key == "action":
            print("HALFWAY", flush=True)
            time.sleep(60)

    store_module._write_array = slow_write
    store = store_module.EpisodeStore.create(sys.argv[1], exist_ok=True)
    for i in range(3):
        if not store.has_episode(f"ep{i}"):
            store.write_episode(f"ep{i}", **episode_arrays(seed=i), attrs=ATTRS)
            slow = slow and i < 1
    """
)


def test_killed_write_is_never_seen_and_rerun_resumes(tmp_path):
    path = tmp_path / "atomic.zarr"
    cmd = [sys.executable, "-c", WRITER, str(path)]
    proc = subprocess.Popen(
        cmd + ["slow"], stdout=subprocess.PIPE, text=True, cwd=str(_repo_root())
    )
    assert proc.stdout.readline().strip() == "HALFWAY"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = EpisodeStore.open(path)
    assert store.episode_names() == []  # the half-written ep0 is invisible
    assert store.summary()["incomplete"] == ["ep0"]
    subprocess.run(cmd + ["fast"], check=True, cwd=str(_repo_root()), timeout=120)
    store = EpisodeStore.open(path)
    assert store.episode_names() == ["ep0", "ep1", "ep2"]
    assert store.summary()["incomplete"] == []
    np.testing.assert_array_equal(store.episode("ep0").read("rgb"), episode_arrays(seed=0)["rgb"])


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_write_array_adds_cached_latents(store):
    latent = np.ones((20, 4, 2, 2), np.float32)
    store.write_array("ep0", "latent", latent)
    np.testing.assert_array_equal(
        EpisodeStore.open(store.path).episode("ep0").read("latent", 2, 4), latent[2:4]
    )


def test_task_text_falls_back_to_the_task_name(store):
    store.write_episode("bare", **episode_arrays(), attrs={**ATTRS, "description": ""})
    assert store.episode("bare").task_text == "push"
