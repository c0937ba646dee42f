"""Scripted experts (one per task) and random "play" motion, as closed-loop 57-D controllers.

Both read the env's world state (object poses, reached hand poses) and return the next absolute
action. Motion is made natural by smoothing every command: wrists follow a critically damped
spring with a speed limit, wrist rotations and finger angles approach their goals
exponentially, the head drifts slowly and turns a little towards what the hands work on, and
the fingers carry millimetre-scale tremor. Randomness comes only from the ``rng`` given.
"""

from __future__ import annotations

import numpy as np

from dexac_env.actions import WorldPoses, poses_to_actions
from dexac_env.sim.env import DexACSimEnv, hand_frame, look_at
from dexac_env.sim.hand import POSTURES, forward_kinematics, solve_ik
from dexac_env.sim.scene import HAND_SIDES, HEAD_REST_LOOKAT

PALM_SURFACE = 0.0125  # palmar surface of the palm box, below the wrist frame's z = 0 (m)
PUSH_WRIST_Z = 0.053  # wrist height for vertical-palm pushes: little finger ~7 mm above table
Z = np.array([0.0, 0.0, 1.0])


def _rotvec_rotation(axis_angle: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(axis_angle))
    if angle < 1e-12:
        return np.eye(3)
    k = axis_angle / angle
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def _rotation_log(rot: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # angle ~ pi: any consistent axis from the symmetric part
        axis = np.sqrt(np.maximum((np.diag(rot) + 1) / 2, 0.0))
        norm = np.linalg.norm(axis)
    return axis / norm * angle


class _Hand:
    """Smoothed command of one hand (world frame)."""

    def __init__(self, wrist: np.ndarray, angles: np.ndarray, omega: float, vmax: float):
        self.pos, self.rot = wrist[:3, 3].copy(), wrist[:3, :3].copy()
        self.vel = np.zeros(3)
        self.angles = angles.copy()
        self.goal_pos, self.goal_rot, self.goal_angles = (
            self.pos.copy(),
            self.rot.copy(),
            angles.copy(),
        )
        self.omega, self.vmax = omega, vmax

    def update(self, dt: float, rot_rate: float = 6.0, finger_rate: float = 7.0) -> None:
        acc = self.omega**2 * (self.goal_pos - self.pos) - 2 * self.omega * self.vel
        self.vel = self.vel + dt * acc
        speed = np.linalg.norm(self.vel)
        if speed > self.vmax:
            self.vel *= self.vmax / speed
        self.pos = self.pos + dt * self.vel
        delta = _rotation_log(self.rot.T @ self.goal_rot)
        self.rot = self.rot @ _rotvec_rotation(delta * (1 - np.exp(-rot_rate * dt)))
        self.angles = self.angles + (1 - np.exp(-finger_rate * dt)) * (
            self.goal_angles - self.angles
        )

    def distance(self) -> float:
        """Position error (m) plus 5 cm per radian of rotation error."""
        angle = float(np.linalg.norm(_rotation_log(self.rot.T @ self.goal_rot)))
        return float(np.linalg.norm(self.goal_pos - self.pos)) + 0.05 * angle


class _Controller:
    """Shared machinery: hand and head smoothing, action assembly."""

    def __init__(self, env: DexACSimEnv, rng: np.random.Generator):
        self.env, self.rng = env, rng
        self.dt = 1.0 / env.fps
        self.t = 0
        omega = float(rng.uniform(7.0, 9.0))
        self.hands = {
            s: _Hand(env.hands[s].wrist, env.hands[s].angles, omega, float(rng.uniform(0.3, 0.4)))
            for s in HAND_SIDES
        }
        self.rest = {s: (env.hands[s].wrist.copy(), env.hands[s].angles.copy()) for s in HAND_SIDES}
        self.eye0 = env.camera_pose[:3, 3].copy()
        self.lookat = self.eye0 + env.camera_pose[:3, 2] * (
            self.eye0[2] / max(-env.camera_pose[2, 2], 0.3)
        )
        self.lookat0 = self.lookat.copy()
        self.focus = self.lookat.copy()
        self.head_phase = rng.uniform(0, 2 * np.pi, 3)
        self.head_amp = rng.uniform(0.003, 0.008, 3)
        self.tremor_phase = rng.uniform(0, 2 * np.pi, (2, 5, 3))

    def objects(self) -> np.ndarray:
        return self.env.physics.object_poses()

    def act(self) -> np.ndarray:
        self.plan()
        for hand in self.hands.values():
            hand.update(self.dt)
        self.t += 1
        time = self.t * self.dt
        self.lookat = self.lookat + 0.25 * (
            self.lookat0 + 0.3 * (self.focus - self.lookat0) - self.lookat
        )
        eye = (
            self.eye0
            + self.head_amp * np.sin(1.7 * time + self.head_phase)
            + 0.05 * (self.lookat - self.lookat0) * [1, 1, 0]
        )
        camera = look_at(eye, self.lookat)
        wrists, tips = {}, {}
        for i, side in enumerate(HAND_SIDES):
            hand = self.hands[side]
            tremor = 0.012 * np.sin(9.0 * time + self.tremor_phase[i])
            wrists[side] = np.eye(4)
            wrists[side][:3, :3], wrists[side][:3, 3] = hand.rot, hand.pos
            local = forward_kinematics(self.env.geometry, hand.angles + tremor, side).tips
            tips[side] = local @ hand.rot.T + hand.pos
        poses = WorldPoses(
            camera[None],
            wrists["left"][None],
            wrists["right"][None],
            tips["left"][None],
            tips["right"][None],
        )
        action = poses_to_actions(poses, reference=self.env.reference_pose)[0]
        return action.astype(np.float32)

    def idle(self, side: str) -> None:
        wrist, angles = self.rest[side]
        hand = self.hands[side]
        hand.goal_pos = wrist[:3, 3] + 0.004 * np.sin(0.9 * self.t * self.dt + np.arange(3))
        hand.goal_rot, hand.goal_angles = wrist[:3, :3], angles

    def plan(self) -> None:
        raise NotImplementedError


class ScriptedExpert(_Controller):
    """Task expert: ``act()`` returns the next action (57,) float32 for ``env``'s current task."""

    def __init__(self, env: DexACSimEnv, rng: np.random.Generator):
        super().__init__(env, rng)
        self.spec = env.task_spec
        self.phase = {s: 0 for s in HAND_SIDES}
        self.phase_steps = {s: 0 for s in HAND_SIDES}
        self.push_dir: dict[str, np.ndarray] = {}
        self.hold_point: dict[str, np.ndarray] = {}
        self.grasp: tuple[np.ndarray, np.ndarray] | None = None
        self.jitter = rng.normal(0.0, 0.004, 3)
        self.posture_noise = rng.normal(0.0, 0.04, (5, 3))

    def _advance(self, side: str, done: bool, timeout: int = 14) -> None:
        self.phase_steps[side] += 1
        if done or self.phase_steps[side] >= timeout:
            self.phase[side] += 1
            self.phase_steps[side] = 0

    def plan(self) -> None:
        getattr(self, f"_plan_{self.spec.task}")()

    # ------------------------------------------------------------------ touch
    def _plan_touch(self) -> None:
        side, finger = self.spec.hand, self.spec.finger
        self.idle("left" if side == "right" else "right")
        obj_spec = self.spec.layout.objects[self.spec.target]
        pose = self.objects()[self.spec.target]
        self.focus = pose[:3].copy()
        angles = POSTURES["fist"].copy() + 0.3 * self.posture_noise
        angles[finger] = [0.35, -0.05, 0.05] if finger == 0 else [0.0, 0.3, 0.15]
        hand = self.hands[side]
        if side not in self.push_dir:  # approach direction, fixed once from the resting wrist
            toward = pose[:3] - hand.pos
            toward[2] = 0.0
            self.push_dir[side] = toward / max(np.linalg.norm(toward), 1e-6)
        toward = self.push_dir[side]
        if finger == 0:  # thumb: flexed down under a flatter palm-down hand
            angles[0] = [0.1, 1.0, 0.25]
            rot = hand_frame(toward - 0.35 * Z, Z)
        else:
            rot = hand_frame(toward - 1.0 * Z, Z)
        tip_local = forward_kinematics(self.env.geometry, angles, side).tips[finger]
        top = pose[:3] + Z * (obj_spec.half_height + 0.0095)
        hover = self.phase[side] == 0
        tip_goal = top + Z * (0.05 if hover else 0.0) + self.jitter * [1, 1, 0]
        hand.goal_pos, hand.goal_rot, hand.goal_angles = tip_goal - rot @ tip_local, rot, angles
        if hover:
            self._advance(side, hand.distance() < 0.015 and np.linalg.norm(hand.vel) < 0.1)

    # ------------------------------------------------------------------ vertical-palm pushes
    def _push_frame(self, side: str, u: np.ndarray) -> np.ndarray:
        """Palm facing ``u`` (horizontal), fingers forward, thumb up."""
        w = np.cross(Z, u)
        w = w if w[1] >= 0 else -w
        return hand_frame(w, -u)

    def _support(self, index: int, u: np.ndarray) -> float:
        obj = self.spec.layout.objects[index]
        if obj.shape != "box":
            return obj.size[0]
        w, x, y, z = self.objects()[index, 3:]
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        axes = np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]])
        return float(abs(axes[0] @ u[:2]) * obj.size[0] + abs(axes[1] @ u[:2]) * obj.size[1])

    def _palm_at(
        self, side: str, u: np.ndarray, point: np.ndarray, along: float, lift: float = 0.0
    ) -> None:
        """Place the palm plane through ``point`` (facing u), ``along`` m down the fingers."""
        rot = self._push_frame(side, u)
        wrist = point - rot @ np.array([along, 0.0, -PALM_SURFACE])
        wrist[2] = PUSH_WRIST_Z + lift
        hand = self.hands[side]
        hand.goal_pos, hand.goal_rot = wrist, rot
        hand.goal_angles = POSTURES["together"] + 0.3 * self.posture_noise

    def _push_object(
        self, side: str, index: int, goal_xy: np.ndarray, stop: bool, contact_x: float = 0.06
    ) -> None:
        pose = self.objects()[index]
        delta = np.append(goal_xy - pose[:2], 0.0)
        if side not in self.push_dir or (np.linalg.norm(delta) > 0.03 and self.phase[side] < 3):
            self.push_dir[side] = delta / max(np.linalg.norm(delta), 1e-6)
        u = self.push_dir[side]
        reach = self._support(index, u)
        hand, phase = self.hands[side], self.phase[side]
        centre = np.array([pose[0], pose[1], 0.0])
        if phase == 0:  # behind the object, raised
            self._palm_at(side, u, centre - u * (reach + 0.05), contact_x, lift=0.08)
            self._advance(side, hand.distance() < 0.02, timeout=10)
        elif phase == 1:  # down to the table
            self._palm_at(side, u, centre - u * (reach + 0.03), contact_x)
            self._advance(side, hand.distance() < 0.012, timeout=6)
        elif phase == 2 and not stop:  # keep the palm a little ahead of the object's back face
            self._palm_at(side, u, centre - u * (reach - 0.018), contact_x)
        else:  # done: back off a little and hold still
            if phase == 2:
                self.phase[side] = 3
                self.hold_point[side] = centre - u * (reach + 0.012)
            self._palm_at(side, u, self.hold_point[side], contact_x)

    def _plan_push(self) -> None:
        side = self.spec.hand
        self.idle("left" if side == "right" else "right")
        goal = np.asarray(self.spec.goal_xy)
        pose = self.objects()[self.spec.target]
        self.focus = np.array([0.5 * (pose[0] + goal[0]), 0.5 * (pose[1] + goal[1]), 0.0])
        stop = np.linalg.norm(pose[:2] - goal) < 0.012
        self._push_object(side, self.spec.target, goal, stop)

    def _plan_bimanual(self) -> None:
        a, b = self.spec.movers
        poses = self.objects()
        self.focus = np.array([*(0.5 * (poses[a, :2] + poses[b, :2])), 0.0])
        objs = self.spec.layout.objects
        gap = np.linalg.norm(poses[a, :2] - poses[b, :2]) - 0.8 * (
            objs[a].footprint_radius + objs[b].footprint_radius
        )
        stop = gap < 0.012
        self._push_object("left", a, poses[b, :2], stop)
        self._push_object("right", b, poses[a, :2], stop)

    def _plan_sweep(self) -> None:
        side = self.spec.hand
        self.idle("left" if side == "right" else "right")
        x0, x1, y0, y1 = self.spec.region
        inward = 1.0 if side == "left" else -1.0
        u = np.array([inward, 0.0, 0.0])
        outer, inner = (x0, x1) if side == "left" else (x1, x0)
        centre_y = 0.5 * (y0 + y1)
        self.focus = np.array([0.5 * (x0 + x1), centre_y, 0.0])
        hand, phase = self.hands[side], self.phase[side]
        along = 0.07 + self.jitter[0]
        if phase == 0:
            self._palm_at(
                side, u, np.array([outer - inward * 0.035, centre_y, 0.0]), along, lift=0.05
            )
            self._advance(side, hand.distance() < 0.02, timeout=10)
        elif phase == 1:
            self._palm_at(side, u, np.array([outer - inward * 0.03, centre_y, 0.0]), along)
            self._advance(side, hand.distance() < 0.012, timeout=6)
        else:
            self._palm_at(side, u, np.array([inner + inward * 0.075, centre_y, 0.0]), along)

    # ------------------------------------------------------------------ lift
    def _grasp_tips(self, side: str, index: int, pose: np.ndarray, rot: np.ndarray, margin: float):
        """Fingertip targets (wrist frame) around the object at ``pose``, and the wrist position:
        thumb behind the object, index/middle/ring in front, ``margin`` m off the surface
        (negative = squeeze)."""
        obj = self.spec.layout.objects[index]
        half = self._support(index, rot[:, 0]) if obj.shape == "box" else obj.size[0]
        mirror = 1.0 if side == "right" else -1.0
        grasp_local = np.array([0.105, 0.004 * mirror, -0.06])
        tip_r = 0.0085
        tips = forward_kinematics(self.env.geometry, POSTURES["fist"], side).tips.copy()
        tips[0] = grasp_local + [-(half + tip_r + margin), 0.008 * mirror, 0.0]
        for finger, dy in ((1, 0.014), (2, -0.004), (3, -0.02)):
            tips[finger] = grasp_local + [half + tip_r + margin, dy * mirror, 0.004]
        wrist = pose[:3] - rot @ grasp_local
        return tips, wrist

    def _plan_lift(self) -> None:
        side = self.spec.hand
        self.idle("left" if side == "right" else "right")
        pose = self.objects()[self.spec.target]
        self.focus = pose[:3].copy()
        hand, phase = self.hands[side], self.phase[side]
        if self.grasp is None:
            inward = -0.25 if side == "right" else 0.25
            self.grasp = (hand_frame([inward, 1.0, -0.1], Z), pose.copy())
        if phase == 0:  # the grasp is planned on the object pose seen before descending
            self.grasp = (self.grasp[0], pose.copy())
        rot, grasp_pose = self.grasp
        margin = 0.04 if phase <= 1 else -0.02
        tips, wrist = self._grasp_tips(side, self.spec.target, grasp_pose, rot, margin)
        if phase == 0:
            wrist = wrist + Z * 0.1
        elif phase >= 3:
            wrist = wrist + Z * 0.1
        hand.goal_pos, hand.goal_rot = wrist, rot
        hand.goal_angles = solve_ik(self.env.geometry, tips, side)
        if phase == 0:
            self._advance(side, hand.distance() < 0.015, timeout=10)
        elif phase == 1:
            self._advance(side, hand.distance() < 0.006, timeout=6)
        elif phase == 2:
            self._advance(side, np.abs(hand.angles - hand.goal_angles).max() < 0.02, timeout=5)


class PlayPolicy(_Controller):
    """Random smooth motion covering the action space: both hands reach random poses with random
    finger configurations; the head looks around a little. With ``still`` ("left" or "right")
    that hand holds its resting pose (as the task experts hold the hand the task does not use)
    while the other plays: data in which one hand moves and the other does not, so that a
    world model can learn the hands apart (docs/experiments.md E19)."""

    def __init__(self, env: DexACSimEnv, rng: np.random.Generator, still: str | None = None):
        super().__init__(env, rng)
        if still not in (None, *HAND_SIDES):
            raise ValueError(f"still must be None or one of {HAND_SIDES}, got {still!r}")
        self.still = still
        self.next_change = {s: 0 for s in HAND_SIDES}
        self.geometry = env.geometry
        limits = np.stack(
            [
                self.geometry.abduction_limits,
                self.geometry.flex1_limits,
                self.geometry.flex2_limits,
            ],
            1,
        )
        self.angle_low, self.angle_high = limits[..., 0], limits[..., 1]

    def plan(self) -> None:
        rng = self.rng
        for side in HAND_SIDES:
            if side == self.still:
                self.idle(side)
                continue
            if self.t < self.next_change[side]:
                continue
            self.next_change[side] = self.t + int(rng.integers(4, 11))
            sign = -1.0 if side == "left" else 1.0
            hand = self.hands[side]
            hand.goal_pos = np.array(
                [sign * rng.uniform(-0.05, 0.3), rng.uniform(-0.2, 0.28), rng.uniform(0.03, 0.22)]
            )
            base = hand_frame([-sign * 0.3, 1.0, -0.2], Z)
            hand.goal_rot = base @ _rotvec_rotation(rng.normal(0.0, 0.45, 3))
            mix = rng.uniform(0, 1, (5, 1))
            hand.goal_angles = self.angle_low + mix * (
                self.angle_high - self.angle_low
            ) * rng.uniform(0.6, 1.0, (5, 3))
        if self.t % 8 == 0:
            self.focus = HEAD_REST_LOOKAT + rng.normal(0.0, [0.12, 0.08, 0.0])


class HoverPolicy(ScriptedExpert):
    """Touch as a planner's samples move the hand (docs/experiments.md E23): the touch expert's
    named hand and finger, posture and approach, but its fingertip goal is moved every 3-6
    steps to a random point around the named object's top (``spread`` m sideways, 1 cm below
    to 6 cm above), so the hand hovers over, sweeps across and now and then lands on or shoves
    the object, as CEM's samples near the object do. The task experts bring the hand down on
    the object once, and the world model trained on them erases the object under a hand that
    moves as the planner's samples do (the imagined place 7 cm off where the simulator's frames
    read 2.4 cm, E23); this is data of that motion. The other hand idles, as the expert's does."""

    def __init__(self, env: DexACSimEnv, rng: np.random.Generator, spread: float = 0.03):
        super().__init__(env, rng)
        if self.spec.task != "touch":
            raise ValueError(f"HoverPolicy moves a touch task's hand, got task {self.spec.task!r}")
        if spread < 0:
            raise ValueError(f"spread must be >= 0, got {spread}")
        self.spread = spread
        self.next_change = 0
        self.offset = np.zeros(3)

    def plan(self) -> None:
        if self.t >= self.next_change:
            self.next_change = self.t + int(self.rng.integers(3, 7))
            side = self.rng.normal(0.0, self.spread, 2)
            self.offset = np.array([side[0], side[1], self.rng.uniform(-0.01, 0.06)])
        self.phase[self.spec.hand] = 1  # no fixed hover 5 cm above: the offsets give the heights
        self._plan_touch()
        hand = self.hands[self.spec.hand]
        hand.goal_pos = hand.goal_pos + self.offset
