"""Normalised delta-pose actions for learners and planners, the same for every DexAC env.

The envs take an absolute 57-D target pose (``dexac_env.actions``) whose families live on
scales four orders of magnitude apart, and whose neutral value (all zeros) is not a pose at
all. Learners want a box ``[-1, 1]^A`` where 0 means "hold still". :class:`DeltaPose` maps one
to the other: each normalised component moves one part of the pose by at most its per-step
limit (:class:`StepLimits`) from the pose commanded last, so ``a = 0`` holds the pose.

Components (``COMPONENTS``) and the sets built from them (``ACTION_SETS``):

| component | dims | effect per step, ``a`` in [-1, 1] |
| --- | --- | --- |
| ``head_pos`` / ``head_rot`` | 3 / 3 | camera moves ``a * head_pos`` m / turns ``a * head_rot`` rad (rotation vector, camera axes) |
| ``{side}_wrist_pos`` | 3 | wrist moves ``a * wrist_pos`` m in the episode frame |
| ``{side}_wrist_rot`` | 3 | wrist turns ``a * wrist_rot`` rad about its own axes |
| ``{side}_fingers`` | 15 | each fingertip coordinate moves ``a * finger`` m in the wrist frame |
| ``{side}_grasp`` | 1 | a grasp synergy ``g`` in [-1, 1] moves by ``a * grasp``: fingertips are the reset posture for ``g = 0``, the fist for ``g = 1``, the open hand for ``g = -1`` |

Wrist and head positions stay within ``workspace`` metres of where the episode started, so a
random policy cannot throw the hands out of view. The class is batched (N envs) so the single
env wrapper, the SB3 vector wrapper and the planners share one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from dexac_env.actions import (
    ACTION_DIM,
    HEAD,
    LEFT_FINGERS,
    LEFT_WRIST,
    RIGHT_FINGERS,
    RIGHT_WRIST,
    matrix_from_rot6d,
    rot6d_from_matrix,
)
from dexac_env.sim.hand import POSTURES, angles_to_tips, default_geometry

SIDES = ("left", "right")
_POSE_SLICES = {"head": HEAD, "left_wrist": LEFT_WRIST, "right_wrist": RIGHT_WRIST}
_FINGER_SLICES = {"left": LEFT_FINGERS, "right": RIGHT_FINGERS}

# component name -> number of normalised dims it takes
COMPONENTS: dict[str, int] = {
    "head_pos": 3, "head_rot": 3,
    "left_wrist_pos": 3, "right_wrist_pos": 3, "left_wrist_rot": 3, "right_wrist_rot": 3,
    "left_fingers": 15, "right_fingers": 15, "left_grasp": 1, "right_grasp": 1,
}
ACTION_SETS: dict[str, tuple[str, ...]] = {
    "full": ("head_pos", "head_rot", "left_wrist_pos", "left_wrist_rot", "right_wrist_pos",
             "right_wrist_rot", "left_fingers", "right_fingers"),
    "wrists_grasp": ("left_wrist_pos", "left_wrist_rot", "right_wrist_pos", "right_wrist_rot",
                     "left_grasp", "right_grasp"),
    "wrist_pos_grasp": ("left_wrist_pos", "right_wrist_pos", "left_grasp", "right_grasp"),
}
DEFAULT_ACTION_SET = "wrist_pos_grasp"


@dataclass(frozen=True)
class StepLimits:
    """Largest change per env step (one frame at 10 fps) of each family, for ``a = +-1``.

    head_pos, wrist_pos, finger: metres. head_rot, wrist_rot: radians. grasp: synergy units
    (the synergy spans [-1, 1]). workspace: metres a head/wrist may stray from its reset
    position. The wrist limit (3 cm/step = 0.3 m/s) is the experts' speed, well inside the
    simulator's 1 m/s cap.
    """

    head_pos: float = 0.01
    head_rot: float = 0.05
    wrist_pos: float = 0.03
    wrist_rot: float = 0.15
    finger: float = 0.01
    grasp: float = 0.25
    workspace: float = 0.35


def synergy_postures() -> dict[str, np.ndarray]:
    """Fingertips (5, 3) in the wrist frame of the fist and the open hand, per side:
    ``{"left_fist": ..., "left_open": ..., "right_fist": ..., "right_open": ...}``."""
    geometry = default_geometry()
    return {
        f"{side}_{name}": angles_to_tips(geometry, POSTURES[name], side)
        for side in SIDES for name in ("fist", "open")
    }


def action_dim(action_set: str) -> int:
    """Number of normalised dims of ``action_set``."""
    return sum(COMPONENTS[c] for c in _components(action_set))


def side_dims(action_set: str, side: str) -> np.ndarray:
    """Indices of ``action_set``'s normalised dims that move the ``side`` hand."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    dims, start = [], 0
    for component in _components(action_set):
        if component.startswith(f"{side}_"):
            dims.extend(range(start, start + COMPONENTS[component]))
        start += COMPONENTS[component]
    return np.asarray(dims, dtype=np.int64)


def _components(action_set: str) -> tuple[str, ...]:
    if action_set not in ACTION_SETS:
        raise ValueError(f"action_set must be one of {sorted(ACTION_SETS)}, got {action_set!r}")
    return ACTION_SETS[action_set]


@dataclass
class DeltaPoseState:
    """What :class:`DeltaPose` tracks per env (copy with :meth:`DeltaPose.get_state`).

    pose: (N, 57) the pose commanded last. start: (N, 57) the pose at reset (workspace centre,
    grasp posture g = 0). grasp: (N, 2) synergy value per hand (left, right).
    """

    pose: np.ndarray
    start: np.ndarray
    grasp: np.ndarray

    def select(self, indices) -> DeltaPoseState:
        idx = np.asarray(indices, dtype=np.int64)
        return DeltaPoseState(self.pose[idx].copy(), self.start[idx].copy(), self.grasp[idx].copy())


class DeltaPose:
    """Batched map from normalised actions (N, A) in [-1, 1] to absolute poses (N, 57)."""

    def __init__(self, num_envs: int = 1, action_set: str = DEFAULT_ACTION_SET,
                 limits: StepLimits | None = None):
        self.components = _components(action_set)
        self.action_set = action_set
        self.limits = limits or StepLimits()
        self.dim = action_dim(action_set)
        self.num_envs = num_envs
        self._postures = synergy_postures()
        zeros = np.zeros((num_envs, ACTION_DIM))
        self.state = DeltaPoseState(zeros, zeros.copy(), np.zeros((num_envs, 2)))
        self._has_reset = np.zeros(num_envs, dtype=bool)

    def reset(self, poses: np.ndarray, indices=None) -> None:
        """Start envs ``indices`` (default all) from ``poses`` (len(indices), 57)."""
        idx = np.arange(self.num_envs) if indices is None else np.asarray(indices, dtype=np.int64)
        poses = np.asarray(poses, dtype=np.float64).reshape(len(idx), ACTION_DIM)
        self.state.pose[idx] = poses
        self.state.start[idx] = poses
        self.state.grasp[idx] = 0.0
        self._has_reset[idx] = True

    def get_state(self) -> DeltaPoseState:
        return self.state.select(np.arange(self.num_envs))

    def set_state(self, state: DeltaPoseState) -> None:
        if state.pose.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(
                f"state holds {state.pose.shape[0]} envs, this DeltaPose has {self.num_envs}; "
                f"use DeltaPoseState.select to tile or pick envs"
            )
        self.state = state.select(np.arange(self.num_envs))
        self._has_reset[:] = True

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions (N, A) (clipped to [-1, 1]) -> next absolute poses (N, 57)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.dim):
            raise ValueError(f"actions must have shape ({self.num_envs}, {self.dim}), got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions must be finite")
        if not self._has_reset.all():
            raise RuntimeError("call reset(poses) before mapping actions")
        actions = np.clip(actions, -1.0, 1.0)
        pose = self.state.pose.copy()
        column = 0
        for component in self.components:
            width = COMPONENTS[component]
            self._apply(component, actions[:, column : column + width], pose)
            column += width
        self.state.pose = pose
        return pose.copy()

    def _apply(self, component: str, a: np.ndarray, pose: np.ndarray) -> None:
        lim = self.limits
        part, kind = component.rsplit("_", 1)
        if kind == "pos":
            dims = _POSE_SLICES["head" if part == "head" else part]
            step = lim.head_pos if part == "head" else lim.wrist_pos
            start = self.state.start[:, dims.start : dims.start + 3]
            moved = pose[:, dims.start : dims.start + 3] + step * a
            pose[:, dims.start : dims.start + 3] = np.clip(
                moved, start - lim.workspace, start + lim.workspace)
        elif kind == "rot":
            dims = _POSE_SLICES["head" if part == "head" else part]
            step = lim.head_rot if part == "head" else lim.wrist_rot
            rot = matrix_from_rot6d(pose[:, dims.start + 3 : dims.stop])  # (N, 3, 3)
            turn = Rotation.from_rotvec(step * a).as_matrix()  # (N, 3, 3), about own axes
            turning = np.any(a != 0, axis=1)  # a zero action leaves the 6D entries untouched
            pose[turning, dims.start + 3 : dims.stop] = rot6d_from_matrix(rot @ turn)[turning]
        elif kind == "fingers":
            pose[:, _FINGER_SLICES[part]] += lim.finger * a
        elif kind == "grasp":
            self._apply_grasp(part, a[:, 0], pose)
        else:  # pragma: no cover - COMPONENTS and this dispatch are written together
            raise AssertionError(component)

    def _apply_grasp(self, side: str, a: np.ndarray, pose: np.ndarray) -> None:
        h = SIDES.index(side)
        g = np.clip(self.state.grasp[:, h] + self.limits.grasp * a, -1.0, 1.0)  # (N,)
        self.state.grasp[:, h] = g
        rest = self.state.start[:, _FINGER_SLICES[side]]  # (N, 15)
        fist = self._postures[f"{side}_fist"].reshape(15)
        open_ = self._postures[f"{side}_open"].reshape(15)
        toward = np.where(g[:, None] >= 0, fist, open_)  # (N, 15)
        pose[:, _FINGER_SLICES[side]] = rest + np.abs(g)[:, None] * (toward - rest)
