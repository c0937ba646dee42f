"""Synthetic data generation (episode store) and the ``dexac sim`` commands."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dexac_env.sim.generate import GenerateConfig, generate, plan_episode


def _config(out, **kwargs) -> GenerateConfig:
    base = {"out": str(out), "tasks": ("push", "lift"), "episodes": 3, "resolution": 24,
            "frames": 4, "workers": 1, "seed": 5, "test_fraction": 0.34}
    return GenerateConfig(**{**base, **kwargs})


def test_plans_are_deterministic_and_split():
    config = GenerateConfig(out="unused", episodes=200, seed=0)
    plans = [plan_episode(config, i) for i in range(200)]
    assert plans == [plan_episode(config, i) for i in range(200)]
    splits = {p.split for p in plans}
    assert splits == {"train", "val", "test"}
    assert {p.mode for p in plans} == {"expert", "play"}
    assert plan_episode(GenerateConfig(out="u", seed=1), 0) != plans[0]


def test_generate_writes_resumes_and_ignores_worker_count(tmp_path):
    from dexac_env.replay.store import EpisodeStore
    from dexac_env.sim.scene import TEST_COLORS

    one = generate(_config(tmp_path / "a.zarr"), progress=False)
    assert one["written"] == 3 and one["skipped"] == 0
    again = generate(_config(tmp_path / "a.zarr"), progress=False)
    assert again["written"] == 0 and again["skipped"] == 3
    generate(_config(tmp_path / "b.zarr", workers=2), progress=False)

    a, b = EpisodeStore.open(tmp_path / "a.zarr"), EpisodeStore.open(tmp_path / "b.zarr")
    assert a.episode_names() == b.episode_names() and len(a.episode_names()) == 3
    for name in a.episode_names():
        ea, eb = a.episode(name), b.episode(name)
        for key in (
            "rgb",
            "action",
            "keypoints_2d",
            "keypoints_visible",
            "keypoints_3d",
            "reward",
            "success",
        ):
            np.testing.assert_array_equal(ea.read(key), eb.read(key))
        assert ea.read("rgb").shape == (4, 24, 24, 3)
        assert ea.read("action").shape == (4, 57)
        assert ea.attrs["source"] == "sim" and ea.attrs["description"]
        np.testing.assert_allclose(ea.read("action")[0, :9], [0, 0, 0, 1, 0, 0, 0, 1, 0], atol=1e-5)
    assert a.action_stats is not None
    test_eps = [e for e in a.episodes() if e.attrs["split"] == "test"]
    assert test_eps and all(e.attrs["color_split"] == "test" for e in test_eps)
    assert TEST_COLORS  # test episodes draw their task objects from these held-out colours


def _dies_on_two(x: int) -> int:
    """A worker job that kills its process on 2 (module level: spawned workers import it)."""
    import os

    if x == 2:
        os._exit(1)
    return x


def test_a_dead_worker_breaks_the_pool_instead_of_hanging():
    """multiprocessing.Pool.imap waits forever for a worker that died; the executor raises."""
    import threading
    from concurrent.futures.process import BrokenProcessPool

    from dexac_env.sim.generate import _results

    assert list(_results([0, 1], 2, job=_dies_on_two)) == [0, 1]
    outcome: list = []

    def run() -> None:  # in a daemon thread, so that a hang fails the test, not the suite
        try:
            outcome.append(list(_results([0, 1, 2, 3], 2, job=_dies_on_two)))
        except BaseException as err:  # noqa: BLE001 - the error is the result under test
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert outcome, "the pool hung on a dead worker"
    assert isinstance(outcome[0], BrokenProcessPool)


def test_generate_restarts_the_pool_for_the_episodes_left(tmp_path, monkeypatch):
    """A worker death mid-run re-renders only the episodes not yet written (identical to an
    unbroken run); too many deaths stop with how to continue."""
    from concurrent.futures.process import BrokenProcessPool

    import dexac_env.sim.generate as gen
    from dexac_env.replay.store import EpisodeStore

    calls = []

    def flaky(jobs, workers):
        calls.append(len(jobs))
        if len(calls) == 1:  # the first episode comes back, then a worker dies
            yield gen._render_job(jobs[0])
            raise BrokenProcessPool("a worker died")
        yield from map(gen._render_job, jobs)

    monkeypatch.setattr(gen, "_results", flaky)
    with pytest.warns(UserWarning, match="restarting the pool for the 2 episodes left"):
        summary = generate(_config(tmp_path / "a.zarr"), progress=False)
    assert calls == [3, 2] and summary["written"] == 3
    monkeypatch.undo()
    generate(_config(tmp_path / "b.zarr"), progress=False)
    a, b = EpisodeStore.open(tmp_path / "a.zarr"), EpisodeStore.open(tmp_path / "b.zarr")
    assert a.episode_names() == b.episode_names()
    for name in a.episode_names():
        np.testing.assert_array_equal(a.episode(name).read("rgb"), b.episode(name).read("rgb"))

    def dead(jobs, workers):
        raise BrokenProcessPool("a worker died")
        yield  # a generator, as _results is

    monkeypatch.setattr(gen, "_results", dead)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="0 of 3 episodes.*again"):
        generate(_config(tmp_path / "c.zarr"), progress=False)


def test_generate_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError):
        _config(tmp_path / "x.zarr", tasks=("juggle",))
    with pytest.raises(ValueError):
        _config(tmp_path / "x.zarr", frames=1)


# ``dexac sim ...`` through dexac_env.sim.cli alone, in a fresh interpreter
SIM_CLI = "import sys; from dexac_env.cli import main; sys.exit(main(sys.argv[1:]))"  # `dexac`


def _sim_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SIM_CLI, "sim", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_video_and_generate_smoke(tmp_path):
    out = tmp_path / "push.gif"
    done = _sim_cli("video", "--task", "push", "--out", str(out), "--frames", "3",
                    "--resolution", "32")
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    done = _sim_cli("generate", "--task", "touch", "--episodes", "1", "--frames", "3",
                    "--resolution", "16", "--workers", "1", "--no-progress",
                    "--out", str(tmp_path / "s.zarr"))
    assert done.returncode == 0, done.stderr
    assert '"written": 1' in done.stdout
    bad = _sim_cli("generate", "--task", "juggle", "--out", str(tmp_path / "t.zarr"), timeout=60)
    assert bad.returncode == 2 and "unknown task" in bad.stderr


def test_named_object_start_finds_the_named_object_in_the_stored_first_frame():
    """A reset with the stored episode's seed recovers the scene: the named object's centre
    projects onto pixels of the named colour in the stored first frame."""
    import torch

    from dexac_env.defaults import open_store
    from dexac_env.sim.generate import named_object_start
    from dexac_env.sim.scene import ALL_COLORS
    from world_model.keypoint_prior import to_camera

    episodes = [e for e in open_store(None).episodes() if e.attrs.get("task") == "touch"]
    assert episodes
    for episode in episodes:
        centre = named_object_start(episode.attrs)
        pose = torch.from_numpy(episode.read("action", 0, 1).astype(np.float32))
        x, y, z = to_camera(torch.from_numpy(centre)[None, None], pose)[0, 0].tolist()
        k = episode.attrs["intrinsics"]
        u, v = int(k[0][0] * x / z + k[0][2]), int(k[1][1] * y / z + k[1][2])
        frame = episode.read("rgb", 0, 1)[0].astype(np.float64) / 255
        colour = next(c for c in ALL_COLORS if f" {c} " in episode.task_text)
        patch = frame[max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2].reshape(-1, 3)
        nearest = min(ALL_COLORS, key=lambda c: np.linalg.norm(patch - ALL_COLORS[c], axis=1).min())
        assert nearest == colour, (episode.name, colour, nearest, patch)
    with pytest.raises(ValueError, match="not a simulator episode"):
        named_object_start({"task": "touch"})


def test_hues_data_set_shades_train_episodes_and_keeps_the_test_split(tmp_path):
    """train_colors="hues": train/val episodes are recorded as the "hues" split and differ in
    colour from the plain data set's same episode, test episodes are the plain data set's;
    a stored hues episode resets to its own scene."""
    from dexac_env.replay.store import EpisodeStore
    from dexac_env.sim.generate import _reset_to

    kwargs = {"tasks": ("touch",), "episodes": 3, "test_fraction": 0.34}
    generate(_config(tmp_path / "plain.zarr", **kwargs), progress=False)
    generate(_config(tmp_path / "hues.zarr", train_colors="hues", **kwargs), progress=False)
    plain, hues = EpisodeStore.open(tmp_path / "plain.zarr"), EpisodeStore.open(tmp_path / "hues.zarr")
    splits = {e.attrs["split"] for e in hues.episodes()}
    assert "test" in splits and splits - {"test"}
    for episode in hues.episodes():
        twin = plain.episode(episode.name)
        assert episode.attrs["description"] == twin.attrs["description"]
        if episode.attrs["split"] == "test":
            assert episode.attrs["color_split"] == "test"
            np.testing.assert_array_equal(episode.read("rgb"), twin.read("rgb"))
        else:
            assert episode.attrs["color_split"] == "hues"
            assert not np.array_equal(episode.read("rgb")[0], twin.read("rgb")[0])
            env = _reset_to(episode.attrs)
            assert all(o.rgb is not None for o in env.task_spec.layout.objects)
    with pytest.raises(ValueError, match="train_colors"):
        _config(tmp_path / "x.zarr", train_colors="pink")


def test_one_hand_play_marks_play_episodes_and_keeps_every_other_draw():
    """One-hand play only adds a still hand to play episodes: a store generated without it keeps
    every plan, and the other draws (split, mode, seeds) do not move."""
    plain = GenerateConfig(out="unused", episodes=120, seed=0)
    one_hand = GenerateConfig(out="unused", episodes=120, seed=0, one_hand_play=1.0)
    plans = [plan_episode(plain, i) for i in range(120)]
    assert all(p.still_hand is None for p in plans)
    marked = [plan_episode(one_hand, i) for i in range(120)]
    for p, m in zip(plans, marked, strict=True):
        assert (p.split, p.mode, p.env_seed, p.policy_seed) == (
            m.split, m.mode, m.env_seed, m.policy_seed
        )
        assert (m.still_hand in ("left", "right")) == (m.mode == "play")
    assert {m.still_hand for m in marked if m.mode == "play"} == {"left", "right"}
    with pytest.raises(ValueError):
        GenerateConfig(out="unused", one_hand_play=1.5)


def test_hover_fraction_turns_only_touch_expert_episodes_and_keeps_every_other_draw():
    """Hover episodes replace touch expert episodes only; the split, seeds and the other
    episodes' modes do not move (a store generated without it keeps every plan)."""
    plain = GenerateConfig(out="unused", episodes=100, seed=0)
    hover = GenerateConfig(out="unused", episodes=100, seed=0, hover_fraction=1.0)
    for i in range(100):
        p, h = plan_episode(plain, i), plan_episode(hover, i)
        assert (p.split, p.env_seed, p.policy_seed, p.task) == (h.split, h.env_seed, h.policy_seed, h.task)
        turned = p.mode == "expert" and p.task == "touch"
        assert h.mode == ("hover" if turned else p.mode)
    assert any(plan_episode(hover, i).mode == "hover" for i in range(100))
    with pytest.raises(ValueError):
        GenerateConfig(out="unused", hover_fraction=-0.1)


def test_a_generated_hover_store_records_its_mode_and_differs_from_the_expert(tmp_path):
    """generate() renders hover episodes with HoverPolicy: the same scenes as the expert's
    (the first frame), other motion after it, the mode in the attributes and the summary."""
    from dexac_env.replay.store import EpisodeStore

    kwargs = {"tasks": ("touch",), "episodes": 2, "test_fraction": 0.0, "val_fraction": 0.0,
              "play_fraction": 0.0, "frames": 8}
    generate(_config(tmp_path / "expert.zarr", **kwargs), progress=False)
    summary = generate(_config(tmp_path / "hover.zarr", hover_fraction=1.0, **kwargs),
                       progress=False)
    assert summary["modes"] == {"expert": 0, "play": 0, "hover": 2}
    expert, hover = EpisodeStore.open(tmp_path / "expert.zarr"), EpisodeStore.open(tmp_path / "hover.zarr")
    for episode in hover.episodes():
        twin = expert.episode(episode.name)
        assert episode.attrs["mode"] == "hover" and twin.attrs["mode"] == "expert"
        rgb, twin_rgb = episode.read("rgb"), twin.read("rgb")
        np.testing.assert_array_equal(rgb[0], twin_rgb[0])
        assert not np.array_equal(rgb[-1], twin_rgb[-1])
