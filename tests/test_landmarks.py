"""Static table landmarks: the head family of keypoint metrics (scene.LANDMARKS_WORLD)."""

from __future__ import annotations

import mujoco
import numpy as np

from dexac_env.sim.env import DexACSimEnv
from dexac_env.sim.scene import LANDMARK_NAMES


def test_landmarks_sit_on_the_rendered_table_edge_and_top():
    """Far landmarks lie on the table's far edge (table below, not table above), mid ones on
    the table top: the world coordinates match what is rendered."""
    env = DexACSimEnv(task="touch", resolution=256)
    _, info = env.reset(seed=0)
    seg = env.physics.render_segmentation()
    table = mujoco.mj_name2id(env.physics.model, mujoco.mjtObj.mjOBJ_GEOM, "table")
    assert info["landmarks_2d"].shape == (len(LANDMARK_NAMES), 2)
    assert info["landmarks_visible"].all()
    for name, (u, v) in zip(LANDMARK_NAMES, info["landmarks_2d"], strict=True):
        col, row = int(round(u)), int(round(v))
        if name.startswith("far"):
            assert seg[row + 3, col] == table and seg[row - 3, col] != table, name
        else:
            assert seg[row, col] == table, name
    env.close()


def test_landmarks_move_with_the_head_only():
    env = DexACSimEnv(task="push", resolution=64)
    obs, info = env.reset(seed=2)
    pose = obs["proprio"].copy()
    hands_moved = pose.copy()
    hands_moved[18:21] += np.array([0.05, 0.03, 0.02], dtype=np.float32)  # right wrist
    _, _, _, _, info_hands = env.step(hands_moved)
    np.testing.assert_allclose(info_hands["landmarks_2d"], info["landmarks_2d"], atol=1e-3)
    head_moved = hands_moved.copy()
    head_moved[0] += 0.05  # camera 5 cm to the right: static points move left in the image
    _, _, _, _, info_head = env.step(head_moved)
    du = info_head["landmarks_2d"][:, 0] - info["landmarks_2d"][:, 0]
    assert (du < -1.0).all(), du
    env.close()
