"""The simulator's vectorised parts give the numbers of the plain versions they replace."""

from __future__ import annotations

import numpy as np
import pytest

from dexac_env.sim.env import DexACSimEnv
from dexac_env.sim.hand import (
    MIRROR,
    TABLED_BISECTION_STEPS,
    default_geometry,
    solve_ik,
    solve_ik_both,
)
from dexac_env.sim.physics import mocap_path


def _plain_bisection_ik(geometry, tips, side, iterations=22):
    """The IK as first written: every bisection step iterated, one hand at a time."""
    tips = tips @ MIRROR if side == "left" else tips
    local = np.einsum("fji,fj->fi", geometry.base_rot, tips - geometry.base_pos)
    sign = np.where(local[:, 0] < 0.0, -1.0, 1.0)
    abduction = np.clip(
        np.arctan2(local[:, 1] * sign, np.abs(local[:, 0]) + 1e-9), *geometry.abduction_limits.T
    )
    along = local[:, 0] * np.cos(abduction) + local[:, 1] * np.sin(abduction)
    down = -local[:, 2]
    distance = np.hypot(along, down)
    lengths, turns = geometry.lengths, 1.0 + geometry.coupling

    def chain(flex2):
        return (
            lengths[:, 0]
            + lengths[:, 1] * np.exp(1j * flex2)
            + lengths[:, 2] * np.exp(1j * turns * flex2)
        )

    low, high = geometry.flex2_limits[:, 0].copy(), geometry.flex2_limits[:, 1].copy()
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        too_long = np.abs(chain(mid)) > distance
        low, high = np.where(too_long, mid, low), np.where(too_long, high, mid)
    flex2 = 0.5 * (low + high)
    flex1 = np.clip(np.arctan2(down, along) - np.angle(chain(flex2)), *geometry.flex1_limits.T)
    return np.stack([abduction, flex1, flex2], axis=-1)


@pytest.mark.parametrize("iterations", [0, 3, TABLED_BISECTION_STEPS, 22])
def test_solve_ik_both_equals_the_plain_bisection_per_hand(iterations):
    geometry = default_geometry()
    rng = np.random.default_rng(0)
    for trial in range(200):
        # reachable, curled and out-of-reach targets
        scale = (0.02, 0.06, 0.15)[trial % 3]
        tips = rng.normal(0.0, scale, (2, 5, 3)) + [0.08, 0.0, -0.02]
        both = solve_ik_both(geometry, tips, iterations=iterations)
        for hand, side in enumerate(("left", "right")):
            plain = _plain_bisection_ik(geometry, tips[hand], side, iterations)
            np.testing.assert_array_equal(both[hand], plain)
            np.testing.assert_array_equal(solve_ik(geometry, tips[hand], side, iterations), plain)


def test_solve_ik_both_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(2, 5, 3\)"):
        solve_ik_both(default_geometry(), np.zeros((5, 3)))


def test_flex2_probes_ascend_and_their_distances_descend():
    probes, distance = default_geometry().flex2_probes
    size = 2**TABLED_BISECTION_STEPS + 1
    assert probes.shape == distance.shape == (5, size)
    assert np.all(np.diff(probes, axis=1) > 0) and np.all(np.diff(distance, axis=1) < 0)
    np.testing.assert_array_equal(probes[:, [0, -1]], default_geometry().flex2_limits)


def test_mocap_path_moves_from_start_to_end():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(4, 3)), rng.normal(size=(4, 4))
    end = rng.normal(size=(4, 3)), rng.normal(size=(4, 4))
    start = start[0], start[1] / np.linalg.norm(start[1], axis=-1, keepdims=True)
    pos, quat = mocap_path(start, end, 5)
    assert pos.shape == (5, 4, 3) and quat.shape == (5, 4, 4)
    np.testing.assert_allclose(pos[-1], end[0])
    np.testing.assert_allclose(pos[0], 0.8 * start[0] + 0.2 * end[0])
    np.testing.assert_allclose(np.linalg.norm(quat, axis=-1), 1.0)
    # the end rotation, taken on the start's side (q and -q are one rotation)
    unit_end = end[1] / np.linalg.norm(end[1], axis=-1, keepdims=True)
    side = np.sign(np.sum(start[1] * end[1], axis=-1, keepdims=True))
    np.testing.assert_allclose(quat[-1], side * unit_end)
    assert np.all(np.sum(quat[:-1] * quat[1:], axis=-1) > 0)  # no flip between substeps


def test_cached_step_start_is_the_current_mocap_targets():
    """A step's motion starts from the targets the last step (or reset/set_state) ended at."""
    env = DexACSimEnv(task="push", resolution=32)
    obs, _ = env.reset(seed=0)
    assert env.physics.substep_count(1.0 / env.fps) == round(1.0 / env.fps / env.physics_dt)
    snapshot = env.get_state()
    for call in (
        lambda: None,
        lambda: env.step(obs["proprio"] + 0.01),
        lambda: env.set_state(snapshot),
        lambda: env.reset(seed=1),
    ):
        call()
        for cached, fresh in zip(env._mocap, env._mocap_targets(), strict=True):
            np.testing.assert_array_equal(cached, fresh)
    env.close()
