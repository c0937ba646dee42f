"""EgoVerse importer on tiny Zarr v3 episode stores written in the public layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dexac_env.actions import (
    project_keypoints,
)
from dexac_env.replay.egoverse import find_episodes, import_egoverse
from dexac_env.replay.import_cli import main as import_main
from dexac_env.replay.importing import ImportConfig
from dexac_env.replay.store import EpisodeStore
from tests.fixtures_public import (
    EGOVERSE_LEFT_WRIST,
    EGOVERSE_RIGHT_WRIST,
    assert_action_is_expected,
    egoverse_expected,
    write_egoverse_episode,
)

RES = 32
CONFIG = ImportConfig(resolution=RES, fps=10)
HASH_A = "2025-03-04-10-20-30-123456"
HASH_B = "2025-03-04-11-00-00-000001"
SPANS = [
    {"text": "pick up the red cup", "start_idx": 0, "end_idx": 5},
    {"text": "put it on the blue cup", "start_idx": 5, "end_idx": 10},
]


@pytest.fixture(scope="module")
def egoverse_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("egoverse")
    write_egoverse_episode(root / "scene_1", HASH_A, total_frames=10, annotations=SPANS)
    write_egoverse_episode(root / "scene_2", HASH_B, total_frames=7, chunk=4)
    return root


@pytest.fixture(scope="module")
def imported(egoverse_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "egoverse.zarr"
    report = import_egoverse(egoverse_root, out, CONFIG, progress=False)
    return report, EpisodeStore.open(out)


def test_imports_with_names_text_and_spans(imported):
    report, store = imported
    assert report.exit_code == 0 and not report.skipped
    assert store.episode_names() == [f"egoverse-{HASH_A}", f"egoverse-{HASH_B}"]
    attrs = store.episode(f"egoverse-{HASH_A}").attrs
    assert attrs["task"] == "cup_stacking" and attrs["source"] == "egoverse"
    assert attrs["description"] == "Stack the red cup on the blue cup."
    spans = json.loads(attrs["annotations"])
    # Stored frames are source frames 0, 3, 6, 9: [0, 5) -> stored [0, 2), [5, 10) -> [2, 4).
    assert [(s["text"], s["start_idx"], s["end_idx"]) for s in spans] == [
        ("pick up the red cup", 0, 2),
        ("put it on the blue cup", 2, 4),
    ]
    assert json.loads(store.episode(f"egoverse-{HASH_B}").attrs["annotations"]) == []


def test_slices_to_total_frames(imported):
    _, store = imported
    # 10 frames padded to 16 and 7 padded to 8: only real frames are kept (0, 3, 6, 9 / 0, 3, 6).
    assert store.episode(f"egoverse-{HASH_A}").read("source_frame").tolist() == [0, 3, 6, 9]
    assert store.episode(f"egoverse-{HASH_B}").read("source_frame").tolist() == [0, 3, 6]


def test_known_pose_gives_known_action(imported):
    _, store = imported
    action = store.episode(f"egoverse-{HASH_A}").read("action")
    for row, source_index in enumerate([0, 3, 6, 9]):
        assert_action_is_expected(action[row], egoverse_expected(source_index))


def test_keypoints_land_where_expected(imported):
    _, store = imported
    episode = store.episode(f"egoverse-{HASH_A}")
    uv, visible = episode.read("keypoints_2d"), episode.read("keypoints_visible")
    # K (f 32, c 39.5/23.5) on 80x48; crop x0 = 16, side 48, scale 2/3; camera moves 1 cm per
    # source frame forward, so depth = z - 0.01 s.
    scale = RES / 48
    for row, s in enumerate([0, 3, 6, 9]):
        for point, (x, y, z) in ((0, EGOVERSE_LEFT_WRIST), (6, EGOVERSE_RIGHT_WRIST)):
            depth = z - 0.01 * s
            u = (32 * x / depth + 39.5 - 16 + 0.5) * scale - 0.5
            v = (32 * y / depth + 23.5 + 0.5) * scale - 0.5
            np.testing.assert_allclose(uv[row, point], [u, v], atol=1e-3)
    assert visible.all()
    k = np.asarray(episode.attrs["intrinsics"])
    np.testing.assert_allclose(
        k, [[32 * scale, 0, 24 * scale - 0.5], [0, 32 * scale, 24 * scale - 0.5], [0, 0, 1]]
    )
    uv_again, _ = project_keypoints(episode.read("action"), k, RES, RES)
    np.testing.assert_allclose(uv, uv_again, atol=1e-3)


def test_frames_decoded_cropped_resized(imported):
    _, store = imported
    rgb = store.episode(f"egoverse-{HASH_A}").read("rgb")
    assert rgb.shape == (4, RES, RES, 3) and rgb.dtype == np.uint8
    levels = 10 + (220 * np.array([0, 3, 6, 9])) // 9
    np.testing.assert_allclose(rgb.reshape(4, -1).mean(axis=1), levels, atol=3)
    assert np.abs(rgb[..., 2].astype(int) - rgb[..., 0]).max() <= 3  # blue side bands cropped off


def test_resume_skips_done_episodes(egoverse_root, tmp_path):
    out = tmp_path / "store.zarr"
    first = import_egoverse(
        egoverse_root, out, ImportConfig(resolution=RES, limit=1), progress=False
    )
    assert first.imported == [f"egoverse-{HASH_A}"]
    second = import_egoverse(egoverse_root, out, CONFIG, progress=False)
    assert second.already_present == [f"egoverse-{HASH_A}"] and second.imported == [
        f"egoverse-{HASH_B}"
    ]
    assert len(EpisodeStore.open(out)) == 2


def test_each_bad_input_gets_its_message_and_the_rest_imports(tmp_path, capsys):
    root = tmp_path / "egoverse"
    write_egoverse_episode(root, "2025-01-01-00-00-00-000000")
    write_egoverse_episode(
        root, "2025-01-01-00-00-01-000000", drop_keys=("left.obs_keypoints", "right.obs_wrist_pose")
    )
    write_egoverse_episode(
        root, "2025-01-01-00-00-02-000000", replace={"obs_head_pose": np.zeros((10, 6))}
    )
    write_egoverse_episode(root, "2025-01-01-00-00-03-000000", bad_jpeg_at=3)
    write_egoverse_episode(
        root, "2025-01-01-00-00-04-000000", attrs={"intrinsics": {"left_1": np.eye(3).tolist()}}
    )
    write_egoverse_episode(root, "2025-01-01-00-00-05-000000", attrs={"total_frames": 20})
    write_egoverse_episode(root, "2025-01-01-00-00-06-000000", drop_keys=("images.front_1",))
    (root / "2025-01-01-00-00-07-000000.zarr").mkdir()
    out = tmp_path / "store.zarr"
    code = import_main(["egoverse", str(root), "--out", str(out), "--resolution", str(RES)])
    captured = capsys.readouterr()
    assert code == 0 and len(EpisodeStore.open(out)) == 1
    expected = {
        "01-000000.zarr: no hand tracking: missing right.obs_wrist_pose, left.obs_keypoints",
        "02-000000.zarr: obs_head_pose has shape (16, 6), expected (T, 7)",
        "03-000000.zarr: images.front_1[3] is not a readable JPEG",
        "04-000000.zarr: no intrinsics key containing 'front'",
        "05-000000.zarr: obs_head_pose has 16 rows, fewer than total_frames 20",
        "06-000000.zarr: missing key 'images.front_1'",
        "07-000000.zarr: not a readable Zarr group",
    }
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(expected), errors
    for message in expected:
        assert sum(message in line for line in errors) == 1, (message, errors)
        assert message in captured.out
    assert "7 skipped" in captured.out


def test_exit_code_nonzero_when_nothing_imported(tmp_path, capsys):
    root = tmp_path / "egoverse"
    write_egoverse_episode(root, "2025-01-01-00-00-01-000000", drop_keys=("left.obs_wrist_pose",))
    assert (
        import_main(["egoverse", str(root), "--out", str(tmp_path / "s.zarr"), "--no-progress"])
        == 1
    )
    assert "no hand tracking" in capsys.readouterr().err


def test_find_episodes_does_not_descend_into_stores(egoverse_root):
    names = [s.name for s in find_episodes(egoverse_root)]
    assert names == [f"egoverse-{HASH_A}", f"egoverse-{HASH_B}"]
    single = find_episodes(egoverse_root / "scene_1" / f"{HASH_A}.zarr")
    assert [s.name for s in single] == [f"egoverse-{HASH_A}"]
