"""``DexACSim-v0``: the MuJoCo two-hand egocentric simulator as a Gymnasium environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dexac_env.actions import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    LEFT_FINGERS,
    LEFT_WRIST,
    NUM_KEYPOINTS,
    RIGHT_FINGERS,
    RIGHT_WRIST,
    WorldPoses,
    action_space,
    actions_to_poses,
    check_actions,
    points_in_frame,
    poses_to_actions,
    project_visible,
    se3,
)
from dexac_env.sim.hand import (
    MAX_WRIST_SPEED,
    POSTURES,
    FingerChain,
    default_geometry,
    forward_kinematics,
    reachable_wrist,
    solve_ik,
    solve_ik_both,
)
from dexac_env.sim.physics import SimPhysics
from dexac_env.sim.scene import (
    COLOR_SPLITS,
    DEFAULT_FOVY,
    HAND_SIDES,
    HEAD_REST_LOOKAT,
    HEAD_REST_POS,
    LANDMARKS_WORLD,
)
from dexac_env.sim.tasks import TASK_NAMES, TaskSpec, TaskState, evaluate, sample_task

FINGER_SLICES = {"left": LEFT_FINGERS, "right": RIGHT_FINGERS}
WRIST_SLICES = {"left": LEFT_WRIST, "right": RIGHT_WRIST}
MAX_OBJECTS = 5  # the most objects a task layout holds (tasks.py; tested)


def pad_rows(rows: np.ndarray, count: int) -> np.ndarray:
    """(N, D) -> (count, D), the rows after N zero (not NaN: NaN != NaN breaks the env
    checkers' determinism test)."""
    padded = np.zeros((count, rows.shape[1]))
    padded[: len(rows)] = rows
    return padded


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) pinhole camera-to-world pose (x right, y down, z forward) at ``eye`` facing ``target``."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return se3(np.stack([right, down, forward], axis=1), eye)


def hand_frame(fingers: np.ndarray, dorsal: np.ndarray) -> np.ndarray:
    """(3, 3) wrist rotation: x along ``fingers``, z towards ``dorsal`` (made orthogonal)."""
    x = np.asarray(fingers, dtype=np.float64)
    x = x / np.linalg.norm(x)
    z = np.asarray(dorsal, dtype=np.float64) - np.dot(dorsal, x) * x
    z = z / np.linalg.norm(z)
    return np.stack([x, np.cross(z, x), z], axis=1)


def _keypoints(wrists: np.ndarray, tips: np.ndarray) -> np.ndarray:
    """Wrists (2, 4, 4) and fingertips (2, 5, 3), left then right -> (12, 3) in KEYPOINT_NAMES
    order."""
    return np.concatenate([wrists[0, None, :3, 3], tips[0], wrists[1, None, :3, 3], tips[1]])


@dataclass
class HandState:
    """Achieved pose of one hand: wrist (4, 4) world, joint angles (5, 3), tips (5, 3) wrist frame."""

    wrist: np.ndarray
    angles: np.ndarray
    tips: np.ndarray


class DexACSimEnv(gym.Env):
    """
    ## Description
    Two human-like capsule hands manipulate rigid objects on a table, seen from a head-mounted
    camera. Hands and camera are kinematic (driven by the action), objects obey MuJoCo physics
    and are moved only through contact with the hands. Tasks: ``touch`` (named fingertip on an
    object), ``push`` (object onto a marker), ``lift`` (pick an object up), ``sweep`` (clear a
    mat), ``bimanual`` (push two objects together with both hands).

    ## Action Space
    ``dexac_env.actions.action_space()``, the one action space of every env: ``Box(57,)``
    float32, the absolute 57-DoF pose the next frame should show, in the layout and frames of
    ``dexac_env.actions`` (head and wrists in the episode frame = the first camera pose;
    fingertips in their wrist frame), bounded by plausibility limits (positions within 2 m,
    6D entries in [-1, 1], fingertips within 0.3 m of their wrist). Values outside the box are
    clipped; finger joint angles are solved from the fingertip targets within joint limits
    (unreachable targets give the closest reachable pose); the head carries no body that
    collides, so any head pose is physical. A wrist moves at most ``MAX_WRIST_SPEED`` (1 m/s) towards
    its target and stays ``WRIST_MIN_Z`` above the table (``hand.reachable_wrist``), so any action
    in the box keeps the scene physical. Wrong shape, NaN/inf or non-numeric actions raise
    ValueError.

    ## Observation Space
    ``Dict(image=Box(0, 255, (H, W, 3), uint8), proprio=action_space())``: the egocentric RGB
    frame and the pose actually reached (same layout and bounds as the action).

    ## Rewards
    Dense per task, in [0, 1], and 1 exactly when the success test holds (see ``tasks.py``).

    ## Starting State
    ``reset`` draws a task instance (objects: shape, size, colour, mass, pose; goal markers), a
    slightly perturbed head pose and resting hands, all from ``self.np_random``.

    ## Episode End
    Terminates on success only if ``terminate_on_success``; time limits are left to
    ``max_episode_steps`` in the registration.

    ## Arguments
    ``task`` (one of TASK_NAMES), ``resolution`` (square image side, 16-1024), ``render_mode``
    (None or "rgb_array"), ``fps`` (control rate; physics runs at ``physics_dt``), ``fovy``
    (camera vertical field of view, degrees), ``color_split`` ("train", "test" = held-out object
    colours, "all", "hues" = the train scene with every object a random shade of its colour
    name), ``terminate_on_success``. ``reset(options={"color_split": ...})`` overrides
    the colour split for one episode.

    ## Info
    ``keypoints_2d`` (12, 2) float32 pixels, ``keypoints_visible`` (12,) bool (in front of the
    camera and inside the image), ``keypoints_3d`` (12, 3) float32 in the episode frame
    (KEYPOINT_NAMES order, the reached fingertips), ``landmarks_2d`` (4, 2) float32 and
    ``landmarks_visible`` (4,) bool: the static table landmarks ``scene.LANDMARK_NAMES``, whose
    image motion is pure head motion (the head family of keypoint metrics), ``object_poses``
    (MAX_OBJECTS, 7) world xyz + wxyz, the first ``object_count`` rows real and the rest zero (one
    shape for every layout, so vector envs can stack infos), ``object_names``, ``physics_reset``
    (True when the solver failed this step and the objects went back to their state before it),
    ``success``, ``task``, ``task_description``, ``intrinsics`` (3, 3).

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "push",
        resolution: int = 64,
        render_mode: str | None = None,
        fps: int = 10,
        fovy: float = DEFAULT_FOVY,
        physics_dt: float = 0.004,
        color_split: str = "train",
        terminate_on_success: bool = False,
    ):
        if task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, got {task!r}")
        if not isinstance(resolution, int | np.integer) or not 16 <= resolution <= 1024:
            raise ValueError(f"resolution must be an int in [16, 1024], got {resolution!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not isinstance(fps, int | np.integer) or not 1 <= fps <= 60:
            raise ValueError(f"fps must be an int in [1, 60], got {fps!r}")
        if not 20.0 <= float(fovy) <= 150.0:
            raise ValueError(f"fovy must be in [20, 150] degrees, got {fovy!r}")
        if not 0.0005 <= float(physics_dt) <= 1.0 / fps:
            raise ValueError(f"physics_dt must be in [0.0005, 1/fps], got {physics_dt!r}")
        if color_split not in COLOR_SPLITS:
            raise ValueError(f"color_split must be one of {COLOR_SPLITS}, got {color_split!r}")
        self.task, self.resolution, self.render_mode = task, int(resolution), render_mode
        self.fps, self.fovy, self.physics_dt = int(fps), float(fovy), float(physics_dt)
        self.color_split, self.terminate_on_success = color_split, bool(terminate_on_success)
        self.metadata = {**self.metadata, "render_fps": self.fps}
        self.geometry = default_geometry()
        self.action_space = action_space()
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (self.resolution, self.resolution, 3), np.uint8),
                "proprio": action_space(),
            }
        )
        focal = 0.5 * self.resolution / np.tan(np.deg2rad(self.fovy) / 2)
        self.intrinsics = np.array(
            [[focal, 0, self.resolution / 2], [0, focal, self.resolution / 2], [0, 0, 1]]
        )
        self.physics: SimPhysics | None = None
        self.task_spec: TaskSpec | None = None
        self.reference_pose = np.eye(4)  # world pose of the episode frame (first camera pose)
        self.camera_pose = np.eye(4)
        self.hands: dict[str, HandState] = {}
        self.object_start = np.zeros((0, 3))
        self.steps = 0
        self._image: np.ndarray | None = None
        # mocap (pos, quat) of the current camera and hands: where the next step's motion starts
        self._mocap: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        color_split = options.pop("color_split", self.color_split)
        if options:
            raise ValueError(
                f"unknown reset options {sorted(options)}; expected only 'color_split'"
            )
        rng = self.np_random
        spec = sample_task(self.task, rng, color_split)
        self._load_scene(spec)
        eye = HEAD_REST_POS + rng.normal(0.0, [0.015, 0.015, 0.01])
        self.camera_pose = look_at(eye, HEAD_REST_LOOKAT + rng.normal(0.0, [0.03, 0.03, 0.0]))
        self.reference_pose = self.camera_pose.copy()
        for side in HAND_SIDES:
            sign = -1.0 if side == "left" else 1.0
            wrist_pos = np.array([sign * 0.2, -0.2, 0.07]) + rng.normal(0.0, 0.01, 3)
            rot = hand_frame([-sign * 0.3, 1.0, -0.15], [0.0, 0.0, 1.0])
            angles = POSTURES["relaxed"] + rng.normal(0.0, 0.03, (5, 3))
            tips = forward_kinematics(self.geometry, angles, side).tips
            angles = solve_ik(self.geometry, tips, side)
            self.hands[side] = HandState(
                se3(rot, wrist_pos), angles, forward_kinematics(self.geometry, angles, side).tips
            )
        self._mocap = self._mocap_targets()
        self.physics.set_mocap(*self._mocap)
        self.physics.settle(0.3)
        self.object_start = self.physics.object_poses()[:, :3]
        self.steps = 0
        return self._observe()

    def step(self, action):
        action = check_actions(action, "action")
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if self.physics is None:
            raise RuntimeError("call reset() before step()")
        action = np.clip(action.astype(np.float64), ACTION_LOW, ACTION_HIGH)
        # 1. episode-frame action -> world poses
        poses = actions_to_poses(action[None], reference=self.reference_pose)
        start = self._mocap
        self.camera_pose = poses.camera[0]
        # 2. fingers: analytic IK from the wrist-frame fingertip targets (both hands in one
        # pass); the wrist as far as MAX_WRIST_SPEED allows, above the table
        all_angles = solve_ik_both(
            self.geometry, np.stack([action[FINGER_SLICES[s]].reshape(5, 3) for s in HAND_SIDES])
        )
        chains = {}
        for side, angles, wrist in zip(
            HAND_SIDES, all_angles, (poses.left_wrist[0], poses.right_wrist[0]), strict=True
        ):
            wrist = reachable_wrist(self.hands[side].wrist, wrist, MAX_WRIST_SPEED / self.fps)
            chains[side] = forward_kinematics(self.geometry, angles, side)
            self.hands[side] = HandState(wrist, angles, chains[side].tips)
        # 3. physics while the kinematic bodies move to the new pose; back to the state before
        # the step (objects at rest) if the solver failed anyway
        before, warnings = self.physics.get_state(), self.physics.bad_acceleration_count()
        end = self._mocap = self._mocap_targets(chains)
        self.physics.advance(start, end, 1.0 / self.fps)
        physics_reset = self.physics.unstable(warnings)
        if physics_reset:
            self.physics.recover(before, end)
        self.steps += 1
        observation, info = self._observe()
        info["physics_reset"] = physics_reset
        reward = float(info.pop("reward"))
        terminated = bool(self.terminate_on_success and info["success"])
        return observation, reward, terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return None if self._image is None else self._image.copy()

    def close(self) -> None:
        if self.physics is not None:
            self.physics.close()
            self.physics = None

    # ------------------------------------------------------------------ state for planners
    def get_state(self) -> dict[str, Any]:
        """A snapshot to branch from (deep copies; the task spec is immutable)."""
        if self.physics is None:
            raise RuntimeError("call reset() before get_state()")
        return {
            "task_spec": self.task_spec,
            "physics": self.physics.get_state(),
            "reference_pose": self.reference_pose.copy(),
            "camera_pose": self.camera_pose.copy(),
            "hands": {
                s: HandState(h.wrist.copy(), h.angles.copy(), h.tips.copy())
                for s, h in self.hands.items()
            },
            "object_start": self.object_start.copy(),
            "steps": self.steps,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a ``get_state`` snapshot (rebuilds the scene if it came from another episode)."""
        missing = {
            "task_spec",
            "physics",
            "reference_pose",
            "camera_pose",
            "hands",
            "object_start",
            "steps",
        } - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        spec = state["task_spec"]
        if spec.task != self.task:
            raise ValueError(f"state is for task {spec.task!r}, this env runs {self.task!r}")
        if self.physics is None or self.task_spec is None or spec.layout != self.task_spec.layout:
            self._load_scene(spec)
        self.task_spec = spec
        self.physics.set_state(np.asarray(state["physics"], dtype=np.float64))
        self.reference_pose = state["reference_pose"].copy()
        self.camera_pose = state["camera_pose"].copy()
        self.hands = {
            s: HandState(h.wrist.copy(), h.angles.copy(), h.tips.copy())
            for s, h in state["hands"].items()
        }
        self.object_start = state["object_start"].copy()
        self.steps = int(state["steps"])
        self._mocap = self._mocap_targets()
        self._observe()

    # ------------------------------------------------------------------ helpers
    def _load_scene(self, spec: TaskSpec) -> None:
        previous = self.physics
        self.task_spec = spec
        self.physics = SimPhysics(
            spec.layout,
            self.geometry,
            self.resolution,
            self.fovy,
            self.physics_dt,
            previous=previous,
        )
        if previous is not None:
            previous.close()

    def _mocap_targets(self, chains: dict[str, FingerChain] | None = None):
        """Mocap (pos, quat) of the current camera and hands; ``chains`` when the caller has
        the hands' forward kinematics already."""
        if chains is None:
            chains = {
                s: forward_kinematics(self.geometry, self.hands[s].angles, s) for s in HAND_SIDES
            }
        wrists = {s: self.hands[s].wrist for s in HAND_SIDES}
        return SimPhysics.mocap_targets(self.camera_pose, wrists, chains)

    def reached(self) -> tuple[np.ndarray, np.ndarray]:
        """Simulated hands: wrists (2, 4, 4) and fingertips (2, 5, 3) in the world (left, right).

        They follow the commanded pose within about a millimetre in free space; in contact
        they are deflected a little, as a real hand would be."""
        return self.physics.hand_poses()

    def proprio(self) -> np.ndarray:
        """(57,) float32: the reached pose in the action layout (episode frame)."""
        return self._proprio(*self.reached())

    def world_tips(self) -> np.ndarray:
        """(2, 5, 3) reached fingertip positions in the world (left, right)."""
        return self.reached()[1]

    def keypoints_world(self) -> np.ndarray:
        """(12, 3) world keypoints in KEYPOINT_NAMES order."""
        return _keypoints(*self.reached())

    def task_state(self) -> TaskState:
        return self._task_state(self.physics.object_poses(), *self.reached())

    # The observation reads the simulated hands and objects once and derives everything from
    # that one reading (the public accessors above read them afresh).
    def _proprio(self, wrists: np.ndarray, tips: np.ndarray) -> np.ndarray:
        poses = WorldPoses(self.camera_pose[None], wrists[:1], wrists[1:], tips[:1], tips[1:])
        pose = poses_to_actions(poses, reference=self.reference_pose)[0]
        return np.clip(pose, ACTION_LOW, ACTION_HIGH).astype(np.float32)

    def _task_state(self, poses: np.ndarray, wrists: np.ndarray, tips: np.ndarray) -> TaskState:
        return TaskState(poses[:, :3], poses[:, 3:], self.object_start, tips, wrists[:, :3, 3])

    def _observe(self):
        image = self.physics.render()
        self._image = image
        wrists, tips = self.reached()
        poses = self.physics.object_poses()
        keypoints = _keypoints(wrists, tips)
        points = np.concatenate([keypoints, LANDMARKS_WORLD])[None]  # (1, 12 + L, 3)
        uv, visible = project_visible(
            points, self.camera_pose[None], self.intrinsics, self.resolution, self.resolution
        )
        uv, visible = uv[0], visible[0]
        reward, success = evaluate(self.task_spec, self._task_state(poses, wrists, tips))
        info = {
            "keypoints_2d": uv[:NUM_KEYPOINTS],
            "keypoints_visible": visible[:NUM_KEYPOINTS],
            "landmarks_2d": uv[NUM_KEYPOINTS:],
            "landmarks_visible": visible[NUM_KEYPOINTS:],
            "keypoints_3d": points_in_frame(keypoints, self.reference_pose),
            "object_poses": pad_rows(poses, MAX_OBJECTS),
            "object_count": len(poses),
            "object_names": [o.name for o in self.task_spec.layout.objects],
            "physics_reset": False,
            "success": bool(success),
            "reward": float(reward),
            "task": self.task,
            "task_description": self.task_spec.description,
            "intrinsics": self.intrinsics.copy(),
        }
        assert info["keypoints_2d"].shape == (NUM_KEYPOINTS, 2)
        return {"image": image, "proprio": self._proprio(wrists, tips)}, info
