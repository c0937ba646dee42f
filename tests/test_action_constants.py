"""The 57-D action layout is defined in dexac_env/actions.py and restated in
world_model/action_tokenizer.py, because world_model imports nothing from the other packages
(DESIGN.md). These tests keep the two statements in agreement."""

from __future__ import annotations

import numpy as np

from dexac_env import actions
from world_model import action_tokenizer


def test_action_dim_and_family_names_agree():
    assert action_tokenizer.ACTION_DIM == actions.ACTION_DIM == 57
    assert action_tokenizer.FAMILY_NAMES == actions.FAMILY_NAMES


def test_family_index_agrees_with_dexac_env():
    np.testing.assert_array_equal(action_tokenizer.FAMILY_INDEX, actions.FAMILY_INDEX)
    assert action_tokenizer.FAMILY_INDEX.dtype == actions.FAMILY_INDEX.dtype
    assert action_tokenizer.FAMILY_INDEX.shape == (actions.ACTION_DIM,)


def test_family_index_follows_dexac_env_slices():
    """Every dimension of a family's slices carries that family's id, and the slices cover the
    action exactly once."""
    covered = np.zeros(actions.ACTION_DIM, dtype=int)
    for family, slices in actions.FAMILY_SLICES.items():
        family_id = action_tokenizer.FAMILY_NAMES.index(family)
        for part in slices:
            assert (action_tokenizer.FAMILY_INDEX[part] == family_id).all(), (family, part)
            covered[part] += 1
    assert (covered == 1).all()


def test_keypoint_prior_restates_the_layout_and_visibility_rule():
    """world_model/keypoint_prior.py restates the pose slices, the keypoint count and the
    visibility rule's depth of dexac_env/actions.py."""
    from world_model import keypoint_prior  # noqa: PLC0415

    assert keypoint_prior.KEYPOINTS == len(actions.KEYPOINT_NAMES)
    assert keypoint_prior.MIN_DEPTH == actions.MIN_DEPTH
    assert (keypoint_prior._HEAD, keypoint_prior._LEFT_WRIST, keypoint_prior._RIGHT_WRIST) == (
        actions.HEAD.start,
        actions.LEFT_WRIST.start,
        actions.RIGHT_WRIST.start,
    )
    assert (keypoint_prior._LEFT_TIPS, keypoint_prior._RIGHT_TIPS) == (
        actions.LEFT_FINGERS.start,
        actions.RIGHT_FINGERS.start,
    )
