"""The 57-DoF layout, rotations, frames of reference and projection."""

import numpy as np
import pytest

from dexac_env import actions as A


def random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    return A.matrix_from_quat_wxyz(q)


def random_poses(rng, length=7):
    def transforms():
        return A.se3(random_rotations(rng, length), rng.normal(scale=0.5, size=(length, 3)))

    left_wrist, right_wrist = transforms(), transforms()
    return A.WorldPoses(
        camera=transforms(),
        left_wrist=left_wrist,
        right_wrist=right_wrist,
        left_tips=left_wrist[:, None, :3, 3] + rng.normal(scale=0.05, size=(length, 5, 3)),
        right_tips=right_wrist[:, None, :3, 3] + rng.normal(scale=0.05, size=(length, 5, 3)),
    )


def test_layout_names_and_families():
    assert A.ACTION_DIM == 57 and len(A.DIM_NAMES) == 57
    assert A.DIM_NAMES[0] == "head.pos.x"
    assert A.DIM_NAMES[12] == "left_wrist.rot6d.0"
    assert A.DIM_NAMES[42 + 3 + 2] == "right.index_tip.z"
    counts = {f: int(A.family_mask(f).sum()) for f in A.FAMILY_NAMES}
    assert counts == {"head": 9, "wrist": 18, "finger": 30}
    assert A.family_of(8) == "head" and A.family_of(26) == "wrist" and A.family_of(27) == "finger"
    with pytest.raises(ValueError, match="family must be one of"):
        A.family_mask("toe")


def test_rot6d_round_trip_and_gram_schmidt():
    rng = np.random.default_rng(0)
    rot = random_rotations(rng, 50)
    np.testing.assert_allclose(A.matrix_from_rot6d(A.rot6d_from_matrix(rot)), rot, atol=1e-12)
    noisy = A.rot6d_from_matrix(rot) + rng.normal(scale=0.05, size=(50, 6))
    back = A.matrix_from_rot6d(noisy)
    np.testing.assert_allclose(
        back @ np.swapaxes(back, -1, -2), np.broadcast_to(np.eye(3), back.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(back), 1.0, atol=1e-12)
    assert A.rot6d_from_matrix(np.eye(3)).tolist() == [1, 0, 0, 0, 1, 0]


def test_poses_actions_round_trip():
    rng = np.random.default_rng(1)
    poses = random_poses(rng)
    actions = A.poses_to_actions(poses)
    back = A.actions_to_poses(actions, reference=poses.camera[0])
    for field in ("camera", "left_wrist", "right_wrist", "left_tips", "right_tips"):
        np.testing.assert_allclose(getattr(back, field), getattr(poses, field), atol=1e-5)
    again = A.poses_to_actions(back, reference=poses.camera[0])
    np.testing.assert_allclose(again, actions, atol=1e-5)


def test_known_pose_gives_known_action():
    length = 2
    camera = np.stack([np.eye(4)] * length)
    camera[:, :3, 3] = [1.0, 2.0, 3.0]  # episode frame is this camera: head at the origin
    camera[1, :3, 3] = [1.0, 2.0, 3.5]
    yaw90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    left_wrist = np.stack([A.se3(yaw90, np.array([1.2, 2.0, 3.4]))] * length)
    right_wrist = np.stack([A.se3(np.eye(3), np.array([0.8, 2.0, 3.4]))] * length)
    # left thumb tip 1 cm along world +x from the left wrist: wrist frame (R^T d) = (0, -0.01, 0)
    left_tips = np.repeat(left_wrist[:, None, :3, 3], 5, axis=1).copy()
    left_tips[:, 0] += [0.01, 0.0, 0.0]
    right_tips = np.repeat(right_wrist[:, None, :3, 3], 5, axis=1).copy()
    right_tips[:, 4] += [0.0, 0.0, 0.02]
    actions = A.poses_to_actions(
        A.WorldPoses(camera, left_wrist, right_wrist, left_tips, right_tips)
    )
    np.testing.assert_allclose(actions[0, A.HEAD], [0, 0, 0, 1, 0, 0, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(actions[1, 0:3], [0, 0, 0.5], atol=1e-12)
    np.testing.assert_allclose(actions[0, 9:12], [0.2, 0.0, 0.4], atol=1e-12)
    np.testing.assert_allclose(actions[0, 12:18], [0, 1, 0, -1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(actions[0, 27:30], [0.0, -0.01, 0.0], atol=1e-12)
    np.testing.assert_allclose(actions[0, 42 + 12 : 42 + 15], [0.0, 0.0, 0.02], atol=1e-12)


def test_projection_of_a_point_in_front_of_the_camera():
    intrinsics = np.array([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    camera = np.eye(4)[None]
    points = np.array([[[0.0, 0.0, 1.0], [0.1, -0.05, 0.5]]])
    uv, depth = A.project_points(points, camera, intrinsics)
    np.testing.assert_allclose(uv[0], [[32, 32], [52, 22]], atol=1e-9)
    np.testing.assert_allclose(depth[0], [1.0, 0.5])


def test_project_keypoints_visibility():
    actions = np.zeros((1, 57))
    actions[:, A.HEAD] = [0, 0, 0, 1, 0, 0, 0, 1, 0]
    actions[:, A.LEFT_WRIST] = [0, 0, 0.5, 1, 0, 0, 0, 1, 0]  # in front of the camera
    actions[:, A.RIGHT_WRIST] = [0, 0, -0.5, 1, 0, 0, 0, 1, 0]  # behind it
    intrinsics = np.array([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]])
    uv, visible = A.project_keypoints(actions, intrinsics, 64, 64)
    assert uv.shape == (1, 12, 2) and visible.shape == (1, 12)
    assert visible[0, 0] and not visible[0, 6]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(56), "shape"),
        (np.full(57, np.nan), "finite"),
        (np.array([np.inf] + [0.0] * 56), "head.pos.x"),
        (np.array(["a"] * 57), "real numbers"),
    ],
)
def test_check_actions_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        A.check_actions(bad)
