"""Damaged files give one line naming the file (issue 14): a truncated world-model checkpoint,
an MP4 that decodes only with concealed errors."""

from __future__ import annotations

import shutil

import gymnasium as gym
import pytest

import dexac_env  # noqa: F401  (registers the envs)
from dexac_env.defaults import DEFAULT_CHECKPOINT
from dexac_env.replay.egodex import import_egodex
from dexac_env.replay.importing import ImportConfig
from tests.fixtures_public import write_egodex_episode
from world_model import WorldModel


@pytest.fixture
def half_checkpoint(tmp_path):
    path = tmp_path / "half.safetensors"
    shutil.copy(DEFAULT_CHECKPOINT, path)
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)
    return path


def test_truncated_checkpoint_is_one_error_naming_the_file(half_checkpoint):
    expected = f"{half_checkpoint} is damaged or not a safetensors file"
    with pytest.raises(ValueError, match=expected) as info:
        WorldModel.from_pretrained(str(half_checkpoint))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=expected):
        gym.make("DexACWorld-v0", checkpoint=str(half_checkpoint))


def test_mp4_with_damaged_frames_is_skipped_not_imported(tmp_path):
    _, video = write_egodex_episode(tmp_path / "raw", "pick", 0, num_frames=30)
    data = bytearray(video.read_bytes())
    start = len(data) // 3  # inside the H.264 data: ffmpeg still decodes every frame, concealed
    data[start : start + 200] = bytes(b ^ 0x5A for b in data[start : start + 200])
    video.write_bytes(bytes(data))
    report = import_egodex(tmp_path / "raw", tmp_path / "out.zarr",
                           ImportConfig(resolution=16), progress=False)
    assert not report.imported
    [(_, reason)] = report.skipped
    assert "0.mp4" in reason and "decoding stops at its first error" in reason
