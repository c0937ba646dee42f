"""Capsule hand model: geometry, forward kinematics and analytic fingertip IK (numpy only).

Wrist frame (both hands): origin at the wrist, +x along the fingers (wrist -> middle knuckle),
+z out of the back of the hand (dorsal), +y = z x x. For the right hand the thumb sits on +y;
the left hand is the mirror image (thumb on -y), so every left-hand quantity is the right-hand
one reflected by ``MIRROR = diag(1, -1, 1)``.

Each finger (thumb first, FINGER_NAMES order) is a chain of three capsule segments:
``base -> Rz(abduction) Ry(flex1) -> L1 -> Ry(flex2) -> L2 -> Ry(coupling * flex2) -> L3 -> tip``,
with Ry rotating +x towards -z (palmar flexion). The distal joint is coupled to the middle joint
as in real fingers, which leaves three angles for a three-dimensional fingertip target: the IK
is analytic (abduction from the lateral offset, flex2 from the base-to-tip distance by
bisection, its first steps read off a table, flex1 from the direction), clipped to the joint
limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dexac_env.actions import FINGER_NAMES

MIRROR = np.diag([1.0, -1.0, 1.0])
NUM_FINGERS = len(FINGER_NAMES)
SEGMENTS_PER_FINGER = 3
# The IK bisection's first steps can only probe fixed points (HandGeometry.flex2_probes): they
# are one table lookup, the remaining steps iterate. 2^12 + 1 probes per finger.
TABLED_BISECTION_STEPS = 12


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(angle: np.ndarray) -> np.ndarray:
    """(...,) angles -> (..., 3, 3) rotations about y (positive flexes +x towards -z)."""
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.zeros(angle.shape + (3, 3))  # filled in place: np.stack dominated the IK/FK time
    rot[..., 0, 0], rot[..., 0, 2] = c, s
    rot[..., 1, 1] = 1.0
    rot[..., 2, 0], rot[..., 2, 2] = -s, c
    return rot


def _rot_z(angle: np.ndarray) -> np.ndarray:
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.zeros(angle.shape + (3, 3))
    rot[..., 0, 0], rot[..., 0, 1] = c, -s
    rot[..., 1, 0], rot[..., 1, 1] = s, c
    rot[..., 2, 2] = 1.0
    return rot


@dataclass(frozen=True)
class HandGeometry:
    """Right-hand geometry in metres/radians; rows follow FINGER_NAMES (thumb first)."""

    base_pos: np.ndarray  # (5, 3) knuckle (thumb: CMC) positions in the wrist frame
    base_rot: np.ndarray  # (5, 3, 3) knuckle frames in the wrist frame
    lengths: np.ndarray  # (5, 3) segment lengths
    radii: np.ndarray  # (5, 3) capsule radii
    coupling: np.ndarray  # (5,) distal angle = coupling * middle angle
    abduction_limits: np.ndarray  # (5, 2)
    flex1_limits: np.ndarray  # (5, 2)
    flex2_limits: np.ndarray  # (5, 2)
    palm_half_size: tuple[float, float, float] = (0.042, 0.041, 0.012)
    palm_center: tuple[float, float, float] = (0.046, -0.004, 0.0)

    @property
    def segment_turns(self) -> np.ndarray:
        """(5, 3) how far each segment is turned from the first per radian of flex2: 0, 1 and
        1 + coupling (the coupled distal joint)."""
        return np.stack(
            [np.zeros(len(self.coupling)), np.ones(len(self.coupling)), 1.0 + self.coupling], -1
        )

    @cached_property
    def flex2_probes(self) -> tuple[np.ndarray, np.ndarray]:
        """What the IK bisection can probe in its first K = TABLED_BISECTION_STEPS steps:
        flex2 (5, 2^K + 1) ascending, the limits and every midpoint, each computed as the
        bisection computes it (0.5 * (low + high)); and the base-to-tip distance at each
        (5, 2^K + 1), strictly descending."""
        flex2 = self.flex2_limits.astype(np.float64)  # (5, 2)
        for _ in range(TABLED_BISECTION_STEPS):
            finer = np.empty((len(flex2), 2 * flex2.shape[1] - 1))
            finer[:, ::2], finer[:, 1::2] = flex2, 0.5 * (flex2[:, :-1] + flex2[:, 1:])
            flex2 = finer
        distance = np.abs(_chain_vector(self.lengths, 1j * self.segment_turns, flex2.T)).T
        if not np.all(np.diff(distance, axis=1) < 0):
            raise ValueError(
                "the IK needs each finger's base-to-tip distance to shrink monotonically as"
                " flex2 grows within flex2_limits; change lengths, coupling or flex2_limits"
            )
        return flex2, distance

    @property
    def reach(self) -> np.ndarray:
        """(5,) base-to-tip distance of the straight finger."""
        return self.lengths.sum(axis=1)


def default_geometry() -> HandGeometry:
    """An adult hand (index finger ~9 cm, palm ~8.5 x 8 cm)."""
    thumb_rot = _rot_z(0.85) @ _rot_y(0.1) @ _rot_x(-1.0)
    base_rot = np.stack([thumb_rot] + [_rot_z(yaw) for yaw in (0.07, 0.0, -0.07, -0.15)])
    return HandGeometry(
        base_pos=np.array(
            [
                [0.020, 0.026, -0.010],
                [0.086, 0.026, 0.0],
                [0.090, 0.004, 0.0],
                [0.086, -0.016, 0.0],
                [0.078, -0.034, 0.0],
            ]
        ),
        base_rot=base_rot,
        lengths=np.array(
            [
                [0.046, 0.033, 0.027],
                [0.045, 0.026, 0.021],
                [0.050, 0.030, 0.022],
                [0.046, 0.028, 0.021],
                [0.037, 0.021, 0.019],
            ]
        ),
        radii=np.array(
            [
                [0.0115, 0.0105, 0.0095],
                [0.0095, 0.0088, 0.0080],
                [0.0098, 0.0090, 0.0082],
                [0.0092, 0.0085, 0.0078],
                [0.0082, 0.0076, 0.0070],
            ]
        ),
        coupling=np.array([0.8, 0.7, 0.7, 0.7, 0.7]),
        abduction_limits=np.array(
            [[-0.45, 0.6], [-0.3, 0.3], [-0.25, 0.25], [-0.3, 0.3], [-0.35, 0.35]]
        ),
        flex1_limits=np.array([[-0.35, 1.1]] + [[-0.35, 1.6]] * 4),
        flex2_limits=np.array([[0.0, 1.3]] + [[0.0, 1.75]] * 4),
    )


@dataclass(frozen=True)
class FingerChain:
    """Forward kinematics of one hand in its wrist frame.

    seg_pos: (5, 3, 3) start point of every segment; seg_rot: (5, 3, 3, 3) segment frames
    (capsule along local +x); tips: (5, 3) fingertip positions (end of the distal segment).
    """

    seg_pos: np.ndarray
    seg_rot: np.ndarray
    tips: np.ndarray


def forward_kinematics(geometry: HandGeometry, angles: np.ndarray, side: str) -> FingerChain:
    """Joint angles (5, 3) = (abduction, flex1, flex2) -> segment poses in the wrist frame."""
    angles = np.asarray(angles, dtype=np.float64)
    rot1 = geometry.base_rot @ _rot_z(angles[:, 0]) @ _rot_y(angles[:, 1])  # (5, 3, 3)
    rot2 = rot1 @ _rot_y(angles[:, 2])
    rot3 = rot2 @ _rot_y(geometry.coupling * angles[:, 2])
    seg_rot = np.stack([rot1, rot2, rot3], axis=1)  # (5, 3, 3, 3)
    steps = seg_rot[..., :, 0] * geometry.lengths[..., None]  # (5, 3, 3) segment vectors
    seg_pos = geometry.base_pos[:, None, :] + np.concatenate(
        [np.zeros((NUM_FINGERS, 1, 3)), np.cumsum(steps, axis=1)[:, :2]], axis=1
    )
    tips = geometry.base_pos + steps.sum(axis=1)
    if side == "left":
        seg_pos = seg_pos @ MIRROR
        seg_rot = MIRROR @ seg_rot @ MIRROR
        tips = tips @ MIRROR
    return FingerChain(seg_pos=seg_pos, seg_rot=seg_rot, tips=tips)


def _chain_vector(lengths: np.ndarray, spin: np.ndarray, flex2: np.ndarray) -> np.ndarray:
    """In-plane base-to-tip vector (as complex numbers) with flex1 = 0, (..., 5) -> (..., 5)
    complex: ``L1 + L2 exp(i flex2) + L3 exp(i (1 + coupling) flex2)``, the three segment
    terms summed in that order; ``lengths`` (5, 3) and ``spin`` = 1j * segment_turns (5, 3)."""
    return (lengths * np.exp(spin * flex2[..., None])).sum(axis=-1)


def solve_ik(
    geometry: HandGeometry, tips: np.ndarray, side: str, iterations: int = 22
) -> np.ndarray:
    """Fingertip targets (5, 3) in the wrist frame -> joint angles (5, 3) within limits.

    Targets out of reach give the closest pose the limits allow (checked by forward kinematics).
    """
    tips = np.asarray(tips, dtype=np.float64)
    if tips.shape != (NUM_FINGERS, 3):
        raise ValueError(f"fingertip targets must have shape (5, 3), got {tips.shape}")
    return _solve_right_ik(geometry, tips @ MIRROR if side == "left" else tips, iterations)


def solve_ik_both(geometry: HandGeometry, tips: np.ndarray, iterations: int = 22) -> np.ndarray:
    """Fingertip targets (2, 5, 3), left then right, each in its wrist frame -> joint angles
    (2, 5, 3): :func:`solve_ik` of both hands in one vectorised pass (the same numbers)."""
    tips = np.asarray(tips, dtype=np.float64)
    if tips.shape != (2, NUM_FINGERS, 3):
        raise ValueError(f"fingertip targets must have shape (2, 5, 3), got {tips.shape}")
    return _solve_right_ik(geometry, np.stack([tips[0] @ MIRROR, tips[1]]), iterations)


def _solve_right_ik(geometry: HandGeometry, tips: np.ndarray, iterations: int) -> np.ndarray:
    """Right-hand (or mirrored left-hand) fingertip targets (..., 5, 3) -> angles (..., 5, 3)."""
    # 1. target in each knuckle frame
    local = np.einsum("fji,...fj->...fi", geometry.base_rot, tips - geometry.base_pos)
    # 2. abduction: the finger plane contains the target (tips may curl behind the knuckle)
    sign = np.where(local[..., 0] < 0.0, -1.0, 1.0)
    abduction = np.arctan2(local[..., 1] * sign, np.abs(local[..., 0]) + 1e-9)
    abduction = np.clip(abduction, *geometry.abduction_limits.T)
    along = local[..., 0] * np.cos(abduction) + local[..., 1] * np.sin(abduction)
    down = -local[..., 2]
    distance = np.hypot(along, down)  # (..., 5)
    # 3. flex2 from the distance (it shrinks monotonically as the finger curls): bisection.
    # Its first steps only probe fixed points, so they are one lookup: the bracket is the pair
    # of neighbouring probes the distance falls between (the numbers the steps would give).
    tabled = min(iterations, TABLED_BISECTION_STEPS)
    stride = 2 ** (TABLED_BISECTION_STEPS - tabled)
    probes, probe_distance = (table[:, ::stride] for table in geometry.flex2_probes)
    longer = (probe_distance[:, 1:-1] > distance[..., None]).sum(axis=-1)  # (..., 5) probes
    fingers = np.arange(NUM_FINGERS)
    low, high = probes[fingers, longer], probes[fingers, longer + 1]
    lengths, spin = geometry.lengths, 1j * geometry.segment_turns
    for _ in range(iterations - tabled):
        mid = 0.5 * (low + high)
        too_long = np.abs(_chain_vector(lengths, spin, mid)) > distance
        low = np.where(too_long, mid, low)
        high = np.where(too_long, high, mid)
    flex2 = 0.5 * (low + high)
    # 4. flex1 turns the chain onto the target direction
    flex1 = np.arctan2(down, along) - np.angle(_chain_vector(lengths, spin, flex2))
    flex1 = np.clip(flex1, *geometry.flex1_limits.T)
    return np.stack([abduction, flex1, flex2], axis=-1)


def angles_to_tips(geometry: HandGeometry, angles: np.ndarray, side: str) -> np.ndarray:
    """Joint angles (5, 3) -> fingertip positions (5, 3) in the wrist frame."""
    return forward_kinematics(geometry, angles, side).tips


# Named postures (abduction, flex1, flex2) per finger, used by experts and play motion.
POSTURES: dict[str, np.ndarray] = {
    "relaxed": np.array(
        [
            [0.1, 0.35, 0.35],
            [0.05, 0.35, 0.45],
            [0.0, 0.35, 0.5],
            [-0.05, 0.4, 0.55],
            [-0.1, 0.45, 0.6],
        ]
    ),
    "flat": np.array(
        [
            [0.25, 0.05, 0.1],
            [0.08, 0.05, 0.08],
            [0.0, 0.05, 0.08],
            [-0.08, 0.05, 0.08],
            [-0.15, 0.05, 0.1],
        ]
    ),
    "point": np.array(
        [[-0.2, 0.7, 0.9], [0.0, 0.45, 0.15], [0.0, 1.35, 1.5], [0.0, 1.35, 1.5], [0.0, 1.35, 1.5]]
    ),
    "open": np.array(
        [
            [0.45, 0.05, 0.15],
            [0.15, 0.1, 0.15],
            [0.0, 0.1, 0.15],
            [-0.15, 0.1, 0.15],
            [-0.3, 0.1, 0.15],
        ]
    ),
    # fingers parallel and closed up, thumb along the index: a flat pushing surface
    "together": np.array(
        [
            [-0.45, 0.2, 0.2],
            [-0.07, 0.05, 0.08],
            [0.0, 0.05, 0.08],
            [0.07, 0.05, 0.08],
            [0.15, 0.05, 0.1],
        ]
    ),
    "fist": np.array(
        [[-0.3, 0.9, 1.1], [0.0, 1.45, 1.6], [0.0, 1.45, 1.6], [0.0, 1.45, 1.6], [0.0, 1.45, 1.6]]
    ),
}


# The simulator keeps the hands physical under any action in its space: a wrist moves at most
# MAX_WRIST_SPEED (m/s) and stays WRIST_MIN_Z above the table top (world z = 0, scene.py). The
# scripted experts and play policy move at <= 0.4 m/s with wrists >= 0.038 m, so neither limit
# changes them. Fingers may still dip into the table as the experts' do (the hands do not
# collide with it); what blew the solver up was a whole hand thrown through the objects.
MAX_WRIST_SPEED = 1.0
WRIST_MIN_Z = 0.03


def reachable_wrist(previous: np.ndarray, target: np.ndarray, max_step: float) -> np.ndarray:
    """The world wrist pose (4, 4) a hand takes this step when sent to ``target`` (4, 4) from
    ``previous`` (4, 4): at most ``max_step`` metres along the line to the target, then raised
    to ``WRIST_MIN_Z`` if below it. The rotation is the target's."""
    wrist = np.array(target, dtype=np.float64)
    delta = wrist[:3, 3] - previous[:3, 3]
    distance = float(np.linalg.norm(delta))
    if distance > max_step:
        wrist[:3, 3] = previous[:3, 3] + delta * (max_step / distance)
    wrist[2, 3] = max(wrist[2, 3], WRIST_MIN_Z)
    return wrist
