"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.synthetic import write_random_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    write_random_store(
        path,
        episodes=3,
        length=10,
        resolution=16,
        latent_shape=(2, 2, 2),
        semantic_shape=((4, 6), (1, 5)),
    )
    return path
