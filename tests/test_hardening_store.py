"""Several writers into one episode store (issue 14): each stages under its own name, a commit
never destroys a committed episode, and the store stays a plain Zarr hierarchy."""

from __future__ import annotations

import multiprocessing
import os
import warnings

import numpy as np
import pytest
import zarr

from dexac_env.replay.store import EpisodeStore, StoreError
from tests.test_store import ATTRS, episode_arrays

NAMES = [f"ep{i}" for i in range(4)]


def _write_all(path: str, seed: int, results) -> None:
    store = EpisodeStore.open(path, mode="a")
    for name in NAMES:
        try:
            store.write_episode(name, **episode_arrays(length=6, seed=seed), attrs=ATTRS)
            results.put((name, seed))
        except StoreError:
            pass  # the other writer committed this name first: a clear, expected refusal


def test_two_processes_write_the_same_names_at_once(tmp_path):
    path = str(tmp_path / "shared.zarr")
    EpisodeStore.create(path)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    writers = [context.Process(target=_write_all, args=(path, seed, results)) for seed in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0  # no raw OSError from a shared staging folder
    winners = dict(results.get(timeout=5) for _ in NAMES)
    store = EpisodeStore.open(path)
    assert store.episode_names() == NAMES
    for name, seed in winners.items():  # each episode is whole, and is its winner's
        expected = episode_arrays(length=6, seed=seed)["rgb"]
        np.testing.assert_array_equal(store.episode(name).read("rgb"), expected)
    assert store.summary()["incomplete"] == []


def test_a_late_commit_never_destroys_the_committed_episode(tmp_path, monkeypatch):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    store.write_episode("ep0", **episode_arrays(seed=1), attrs=ATTRS)
    # a second writer checked "absent" before the first one committed, then commits
    monkeypatch.setattr(EpisodeStore, "has_episode", lambda self, name: False)
    with pytest.raises(StoreError, match="'ep0' already exists .*another writer"):
        store.write_episode("ep0", **episode_arrays(seed=2), attrs=ATTRS)
    monkeypatch.undo()
    kept = EpisodeStore.open(tmp_path / "s.zarr").episode("ep0").read("rgb")
    np.testing.assert_array_equal(kept, episode_arrays(seed=1)["rgb"])


def test_only_dead_writers_leftovers_are_discarded(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    staging = tmp_path / "s.zarr" / "_incomplete"
    alive = staging / f"ep0~{os.getppid()}-abcd1234"  # another writer, still at work
    dead = staging / f"ep0~{2**22 + 17}-abcd1234"  # above Linux's pid_max: a killed writer
    for folder in (alive, dead):
        (folder / "rgb").mkdir(parents=True)
    store.write_episode("ep0", **episode_arrays(seed=1), attrs=ATTRS)
    assert (alive / "rgb").is_dir() and not dead.exists()


def test_a_written_store_walks_as_plain_zarr_without_warnings(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    store.write_episode("ep0", **episode_arrays(length=4), attrs=ATTRS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        members = dict(zarr.open_group(str(tmp_path / "s.zarr"), mode="r").members(max_depth=None))
    assert "episodes/ep0/rgb" in members
