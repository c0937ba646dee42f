"""EgoDex importer on tiny files written in the public layout, and the shared import helpers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dexac_env.actions import (
    project_keypoints,
)
from dexac_env.replay.egodex import find_episodes, import_egodex
from dexac_env.replay.import_cli import main as import_main
from dexac_env.replay.importing import (
    ImportConfig,
    center_crop_resize,
    scale_intrinsics,
    select_frames,
    split_for,
)
from dexac_env.replay.store import EpisodeStore
from tests.fixtures_public import (
    assert_action_is_expected,
    egodex_expected,
    write_egodex_episode,
)

RES = 32
CONFIG = ImportConfig(resolution=RES, fps=10)


@pytest.fixture(scope="module")
def egodex_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("egodex")
    write_egodex_episode(root, "basic_pick_place", 0)
    write_egodex_episode(
        root, "basic_pick_place", 1, confidences={"leftLittleFingerTip": np.full(12, 0.1)}
    )
    write_egodex_episode(root, "stack_cups", 0, num_frames=9, description=None)
    return root


@pytest.fixture(scope="module")
def imported(egodex_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "egodex.zarr"
    report = import_egodex(egodex_root, out, CONFIG, progress=False)
    return report, EpisodeStore.open(out)


# -- shared helpers ------------------------------------------------------------------------------


def test_select_frames():
    assert select_frames(12, 30, 10).tolist() == [0, 3, 6, 9]
    assert select_frames(10, 30, 10).tolist() == [0, 3, 6, 9]
    assert select_frames(5, 30, 30).tolist() == [0, 1, 2, 3, 4]
    assert select_frames(11, 30, 12).tolist() == [0, 2, 5, 8, 10]  # nearest frame, 2.5 apart
    with pytest.raises(ValueError, match="cannot resample up"):
        select_frames(10, 30, 60)


def test_split_is_deterministic_and_follows_fractions():
    names = [f"egodex-task-{i}" for i in range(4000)]
    splits = [split_for(n, 0, 0.1, 0.2) for n in names]
    assert splits == [split_for(n, 0, 0.1, 0.2) for n in names]
    assert abs(splits.count("test") / 4000 - 0.2) < 0.03
    assert abs(splits.count("val") / 4000 - 0.1) < 0.03
    assert splits != [split_for(n, 1, 0.1, 0.2) for n in names]  # the seed matters


def test_crop_resize_and_scaled_intrinsics_agree():
    # A 4x4 bright block centred at pixel coordinate (120.5, 40.5) of a 200x100 image.
    image = np.zeros((100, 200, 3), np.uint8)
    image[39:43, 119:123] = 255
    small = center_crop_resize(image, 25).astype(np.float64)[..., 0]
    v, u = np.mgrid[0:25, 0:25]
    centroid = np.array([(small * u).sum(), (small * v).sum()]) / small.sum()
    k = scale_intrinsics(np.array([[100.0, 0, 120.5], [0, 100.0, 40.5], [0, 0, 1]]), 200, 100, 25)
    np.testing.assert_allclose(centroid, k[:2, 2], atol=0.05)  # principal point = block centre
    assert k[0, 0] == pytest.approx(25.0)


# -- the importer --------------------------------------------------------------------------------


def test_imports_every_episode_with_stable_names(imported):
    report, store = imported
    assert report.exit_code == 0 and not report.skipped
    assert store.episode_names() == [
        "egodex-basic_pick_place-0",
        "egodex-basic_pick_place-1",
        "egodex-stack_cups-0",
    ]
    episode = store.episode("egodex-stack_cups-0")
    assert episode.attrs["task"] == "stack_cups"
    assert episode.attrs["description"] == "stack_cups"  # no llm_description: falls back to task
    first = store.episode("egodex-basic_pick_place-0").attrs
    assert first["description"] == "Pick up the cup with the left hand."
    assert first["source"] == "egodex" and first["fps"] == 10.0 and first["source_fps"] == 30.0
    assert first["split"] in ("train", "val", "test")
    train = store.episodes("train") or store.episodes()  # statistics come from the train split
    assert store.action_stats.count == sum(e.length for e in train)
    assert report.frames == 4 + 4 + 3


def test_known_pose_gives_known_action(imported):
    _, store = imported
    episode = store.episode("egodex-basic_pick_place-0")
    action = episode.read("action")
    assert episode.read("source_frame").tolist() == [0, 3, 6, 9]  # 30 fps -> 10 fps
    for row, source_index in enumerate([0, 3, 6, 9]):
        assert_action_is_expected(action[row], egodex_expected(source_index))


def test_keypoints_land_where_expected(imported):
    _, store = imported
    episode = store.episode("egodex-basic_pick_place-1")
    uv, visible = episode.read("keypoints_2d"), episode.read("keypoints_visible")
    # Hand-derived: K (f 40, c 47.5/31.5) on 96x64, crop x0 = 16, scale 0.5, camera moving +x:
    # left wrist u = (40 * (-0.3 - 0.01 s) / 0.4 + 47.5 - 16 + 0.5) * 0.5 - 0.5 = 0.5 - s / 2.
    for row, s in enumerate([0, 3, 6, 9]):
        np.testing.assert_allclose(uv[row, 0], [0.5 - s / 2, 18.0], atol=1e-4)
        np.testing.assert_allclose(uv[row, 6], [20.5 - s / 2, 18.0], atol=1e-4)  # right wrist
    assert visible[0, 0] and not visible[1:, 0].any()  # the left wrist leaves the crop
    assert not visible[:, 5].any()  # left little tip: confidence 0.1 < 0.5
    assert visible[:, 6:].all()
    np.testing.assert_allclose(
        np.asarray(episode.attrs["intrinsics"]), [[20, 0, 15.5], [0, 20, 15.5], [0, 0, 1]]
    )
    # Stored keypoints are the projection of the stored actions with the stored intrinsics.
    uv_again, visible_again = project_keypoints(
        episode.read("action"), np.asarray(episode.attrs["intrinsics"]), RES, RES
    )
    np.testing.assert_allclose(uv, uv_again, atol=1e-3)
    assert (visible_again | ~visible).all()


def test_frames_are_cropped_resized_and_resampled(imported):
    _, store = imported
    rgb = store.episode("egodex-basic_pick_place-0").read("rgb")
    assert rgb.shape == (4, RES, RES, 3) and rgb.dtype == np.uint8
    levels = 10 + (220 * np.array([0, 3, 6, 9])) // 11
    np.testing.assert_allclose(rgb.reshape(4, -1).mean(axis=1), levels, atol=3)
    assert np.abs(rgb[..., 0].astype(int) - rgb[..., 2]).max() <= 6  # the red band is cropped off


def test_resume_skips_done_episodes_and_limit(egodex_root, tmp_path):
    out = tmp_path / "store.zarr"
    first = import_egodex(egodex_root, out, ImportConfig(resolution=RES, limit=2), progress=False)
    assert first.imported == ["egodex-basic_pick_place-0", "egodex-basic_pick_place-1"]
    before = EpisodeStore.open(out).episode("egodex-basic_pick_place-0").read("action")
    second = import_egodex(egodex_root, out, CONFIG, progress=False)
    assert second.already_present == first.imported
    assert second.imported == ["egodex-stack_cups-0"]
    third = import_egodex(egodex_root, out, CONFIG, progress=False)
    assert third.imported == [] and len(third.already_present) == 3 and third.exit_code == 0
    store = EpisodeStore.open(out)
    assert len(store) == 3
    np.testing.assert_array_equal(store.episode("egodex-basic_pick_place-0").read("action"), before)


def test_resume_after_a_killed_write(egodex_root, tmp_path):
    out = tmp_path / "store.zarr"
    import_egodex(egodex_root, out, ImportConfig(resolution=RES, limit=1), progress=False)
    # What a kill in the middle of the next episode leaves: a half-written staging group.
    leftover = out / "_incomplete" / "egodex-basic_pick_place-1"
    leftover.mkdir(parents=True)
    (leftover / "zarr.json").write_text("{truncated")
    report = import_egodex(egodex_root, out, CONFIG, progress=False)
    assert report.imported == ["egodex-basic_pick_place-1", "egodex-stack_cups-0"]
    store = EpisodeStore.open(out)
    assert len(store) == 3 and store.episode("egodex-basic_pick_place-1").length == 4


def test_appending_at_another_resolution_is_refused(imported, egodex_root, capsys):
    _, store = imported
    code = import_main(["egodex", str(egodex_root), "--out", str(store.path), "--resolution", "48"])
    assert code == 2
    assert "holds 32 px frames at 10 fps; this import asks for 48 px" in capsys.readouterr().err


def test_cli_smoke_in_a_subprocess(egodex_root, tmp_path):
    out = tmp_path / "store.zarr"
    command = [sys.executable, "-m", "dexac_env.replay.import_cli", "egodex", str(egodex_root)]
    command += ["--out", str(out), "--resolution", "16", "--fps", "15", "--limit", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "imported 1 episode(s), 6 frames" in result.stdout
    assert EpisodeStore.open(out).episode("egodex-basic_pick_place-0").read("rgb").shape == (
        6,
        16,
        16,
        3,
    )


def test_each_bad_input_gets_its_message_and_the_rest_imports(tmp_path, capsys):
    root = tmp_path / "egodex"
    write_egodex_episode(root, "good", 0)
    write_egodex_episode(root, "good", 1, num_frames=6)
    write_egodex_episode(root, "bad", 0, drop_keys=("transforms/leftIndexFingerTip",))
    write_egodex_episode(root, "bad", 1, replace={"camera/intrinsic": np.zeros((3, 4))})
    write_egodex_episode(root, "bad", 2, video_bytes=b"this is not an mp4 file" * 20)
    write_egodex_episode(root, "bad", 3, num_frames=12, video_frames=9)
    write_egodex_episode(root, "bad", 4, replace={"transforms/rightHand": np.zeros((12, 3, 4))})
    _, video = write_egodex_episode(root, "bad", 5)
    video.unlink()
    out = tmp_path / "store.zarr"
    code = import_main(["egodex", str(root), "--out", str(out), "--resolution", str(RES)])
    captured = capsys.readouterr()
    assert code == 0
    assert len(EpisodeStore.open(out)) == 2
    expected = {
        "bad/0.hdf5: missing key 'transforms/leftIndexFingerTip'",
        "bad/1.hdf5: camera/intrinsic has shape (3, 4), expected (3, 3)",
        "bad/2.mp4: unreadable video",
        "bad/3.mp4: frame count mismatch: video has 9 frames, transforms have 12",
        "bad/4.hdf5: transforms/rightHand has shape (12, 3, 4), expected (N, 4, 4)",
        "bad/5.hdf5: no matching video 5.mp4",
    }
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(expected)
    for message in expected:
        assert sum(message in line for line in errors) == 1, (message, errors)
        assert message in captured.out  # the summary lists it again
    assert "imported 2 episode(s)" in captured.out and "6 skipped" in captured.out


def test_exit_code_nonzero_only_when_nothing_imported(tmp_path, capsys):
    root = tmp_path / "egodex"
    write_egodex_episode(root, "bad", 0, drop_keys=("camera/intrinsic",))
    code = import_main(["egodex", str(root), "--out", str(tmp_path / "s.zarr"), "--no-progress"])
    assert code == 1
    assert "missing key 'camera/intrinsic'" in capsys.readouterr().err
    assert (
        import_main(["egodex", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t.zarr")]) == 2
    )
    assert "not a folder" in capsys.readouterr().err


def test_find_episodes_lists_orphan_videos(tmp_path):
    root = tmp_path / "egodex"
    write_egodex_episode(root, "task", 0)
    (root / "task" / "0.hdf5").rename(root / "task" / "7.hdf5")
    names = {s.name: s for s in find_episodes(root)}
    assert set(names) == {"egodex-task-0", "egodex-task-7"}
    assert "no matching 0.hdf5" in names["egodex-task-0"].extra["problem"]
