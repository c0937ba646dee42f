"""Tasks: scene sampling, one-line language description, reward and success test.

Every task draws its layout from the env's ``np_random``; task-relevant objects take colours
from the requested palette (``"test"`` = colours never used in train/val scenes), distractors
from the rest. Rewards are dense, in [0, 1], and equal 1 exactly when the task is solved.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dexac_env.actions import FINGER_NAMES
from dexac_env.sim.scene import (
    ALL_COLORS,
    Marker,
    ObjectSpec,
    SceneLayout,
    palette,
    place_apart,
    random_shade,
    sample_object,
)

TASK_NAMES = ("touch", "push", "lift", "sweep", "bimanual")
SHAPE_NOUNS = {"box": "block", "cylinder": "cylinder", "sphere": "ball"}
TOUCH_RADIUS = 0.013  # fingertip axis end within this of the surface = touching (tip radius ~8 mm)
PUSH_TOLERANCE = 0.035
LIFT_HEIGHT = 0.05
BIMANUAL_GAP = 0.03


@dataclass(frozen=True)
class TaskSpec:
    """One sampled task instance. ``hand`` is "left", "right" or "both"; ``target`` indexes
    ``layout.objects``; the remaining fields are used by the tasks that need them."""

    task: str
    description: str
    layout: SceneLayout
    hand: str
    target: int
    finger: int = 1
    goal_xy: tuple[float, float] = (0.0, 0.0)
    region: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x_min, x_max, y_min, y_max
    movers: tuple[int, ...] = ()


@dataclass(frozen=True)
class TaskState:
    """What the success tests read. obj_pos (N, 3), obj_quat (N, 4) wxyz, obj_start (N, 3),
    tips (2, 5, 3) world fingertips (left, right), wrists (2, 3) world wrist positions."""

    obj_pos: np.ndarray
    obj_quat: np.ndarray
    obj_start: np.ndarray
    tips: np.ndarray
    wrists: np.ndarray


def noun(obj: ObjectSpec) -> str:
    return f"{obj.color} {SHAPE_NOUNS[obj.shape]}"


def _colors(rng: np.random.Generator, color_split: str, n_task: int, n_total: int) -> list[str]:
    task_colors = list(rng.permutation(list(palette(color_split)))[:n_task])
    rest = [
        c
        for c in (palette("train") if color_split == "train" else ALL_COLORS)
        if c not in task_colors
    ]
    return task_colors + list(rng.permutation(rest)[: n_total - n_task])


def _distractors(rng, colors, occupied, start_index, y_range=(0.2, 0.32)) -> list[ObjectSpec]:
    spots = place_apart(
        rng, len(colors), occupied, x_range=(-0.26, 0.26), y_range=y_range, min_gap=0.09
    )
    return [
        sample_object(rng, f"obj{start_index + i}", c, xy)
        for i, (c, xy) in enumerate(zip(colors, spots, strict=True))
    ]


def surface_distance(
    obj: ObjectSpec, pos: np.ndarray, quat: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Distance (m) from world points (..., 3) to the object's surface (negative inside)."""
    w, x, y, z = quat
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    local = (np.asarray(points) - pos) @ rot  # R^T (p - c)
    if obj.shape == "sphere":
        return np.linalg.norm(local, axis=-1) - obj.size[0]
    if obj.shape == "cylinder":
        half = np.array([obj.size[0], obj.size[1]])
        q = np.stack([np.linalg.norm(local[..., :2], axis=-1), np.abs(local[..., 2])], -1) - half
    else:
        q = np.abs(local) - np.array(obj.size)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    return outside + np.minimum(q.max(axis=-1), 0.0)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def sample_task(name: str, rng: np.random.Generator, color_split: str = "train") -> TaskSpec:
    """A task instance. ``color_split="hues"`` samples the "train" scene (same names, same
    text), then draws every object in a random shade of its colour name (``random_shade``)."""
    if name not in TASK_NAMES:
        raise ValueError(f"task must be one of {TASK_NAMES}, got {name!r}")
    if color_split != "hues":
        return _SAMPLERS[name](rng, color_split)
    spec = _SAMPLERS[name](rng, "train")
    objects = tuple(replace(o, rgb=random_shade(rng, o.color)) for o in spec.layout.objects)
    return replace(spec, layout=replace(spec.layout, objects=objects))


def _side_of(x: float) -> str:
    return "right" if x >= 0.0 else "left"


def _sample_touch(rng, color_split) -> TaskSpec:
    n = int(rng.integers(2, 6))
    colors = _colors(rng, color_split, 1, n)
    xy = place_apart(rng, 1, [], x_range=(-0.2, 0.2), y_range=(0.0, 0.14))
    target = sample_object(rng, "obj0", colors[0], xy[0])
    objects = [target] + _distractors(rng, colors[1:], xy, 1, y_range=(0.0, 0.3))
    side, finger = _side_of(xy[0][0]), int(rng.integers(0, 5))
    text = f"Touch the {noun(target)} with your {side} {FINGER_NAMES[finger]} finger."
    return TaskSpec("touch", text, SceneLayout(tuple(objects)), side, 0, finger=finger)


def _sample_push(rng, color_split) -> TaskSpec:
    n = int(rng.integers(2, 5))
    colors = _colors(rng, color_split, 1, n)
    x0 = float(rng.uniform(0.06, 0.2)) * (1 if rng.random() < 0.5 else -1)
    start = (x0, float(rng.uniform(0.02, 0.12)))
    side = _side_of(x0)
    # The hand pushes towards the body midline, possibly forward; the marker is 8-12 cm away.
    angle, dist = float(rng.uniform(-0.35, 0.55)), float(rng.uniform(0.08, 0.12))
    inward = -1.0 if side == "right" else 1.0
    goal = (start[0] + inward * dist * np.cos(angle), start[1] + dist * np.sin(angle))
    target = sample_object(
        rng, "obj0", colors[0], start, shape=str(rng.choice(["box", "cylinder"]))
    )
    marker = Marker("goal", "disk", goal, (0.035,), (0.97, 0.97, 0.95, 1.0))
    objects = [target] + _distractors(rng, colors[1:], [start, goal], 1, y_range=(0.22, 0.32))
    text = f"Push the {noun(target)} onto the white marker with your {side} hand."
    return TaskSpec("push", text, SceneLayout(tuple(objects), (marker,)), side, 0, goal_xy=goal)


def _sample_lift(rng, color_split) -> TaskSpec:
    n = int(rng.integers(1, 4))
    colors = _colors(rng, color_split, 1, n)
    x0 = float(rng.uniform(0.05, 0.18)) * (1 if rng.random() < 0.5 else -1)
    start = (x0, float(rng.uniform(0.0, 0.12)))
    shape = str(rng.choice(["box", "cylinder", "sphere"]))
    target = sample_object(rng, "obj0", colors[0], start, shape=shape, scale=0.85)
    objects = [target] + _distractors(rng, colors[1:], [start], 1, y_range=(0.2, 0.32))
    side = _side_of(x0)
    text = f"Pick up the {noun(target)} with your {side} hand."
    return TaskSpec("lift", text, SceneLayout(tuple(objects)), side, 0)


def _sample_sweep(rng, color_split) -> TaskSpec:
    side = "left" if rng.random() < 0.5 else "right"
    sign = -1.0 if side == "left" else 1.0
    center = (sign * float(rng.uniform(0.08, 0.13)), float(rng.uniform(0.04, 0.1)))
    half = (0.065, 0.075)
    region = (center[0] - half[0], center[0] + half[0], center[1] - half[1], center[1] + half[1])
    n_mat = int(rng.integers(1, 3))
    n = n_mat + int(rng.integers(0, 3))
    colors = _colors(rng, color_split, n_mat, n)
    ys = np.linspace(center[1] - 0.035, center[1] + 0.035, n_mat) if n_mat > 1 else [center[1]]
    movers = []
    for i in range(n_mat):
        xy = (center[0] + float(rng.uniform(-0.02, 0.02)), float(ys[i] + rng.uniform(-0.01, 0.01)))
        movers.append(sample_object(rng, f"obj{i}", colors[i], xy, shape="box", scale=0.75))
    occupied = [o.pos[:2] for o in movers] + [(center[0] + sign * 0.15, center[1])]
    objects = movers + _distractors(rng, colors[n_mat:], occupied, n_mat, y_range=(0.24, 0.34))
    mat = Marker("mat", "mat", center, half, (0.25, 0.27, 0.3, 1.0))
    text = f"Sweep everything off the dark mat with your {side} hand."
    return TaskSpec(
        "sweep",
        text,
        SceneLayout(tuple(objects), (mat,)),
        side,
        0,
        region=region,
        movers=tuple(range(n_mat)),
    )


def _sample_bimanual(rng, color_split) -> TaskSpec:
    n = int(rng.integers(2, 5))
    colors = _colors(rng, color_split, 2, n)
    y = float(rng.uniform(0.02, 0.12))
    left = sample_object(rng, "obj0", colors[0], (-float(rng.uniform(0.09, 0.14)), y), shape="box")
    right = sample_object(
        rng,
        "obj1",
        colors[1],
        (float(rng.uniform(0.09, 0.14)), y + float(rng.uniform(-0.02, 0.02))),
        shape=str(rng.choice(["box", "cylinder"])),
    )
    objects = [left, right] + _distractors(
        rng, colors[2:], [left.pos[:2], right.pos[:2]], 2, y_range=(0.22, 0.32)
    )
    text = f"Push the {noun(left)} and the {noun(right)} together with both hands."
    return TaskSpec("bimanual", text, SceneLayout(tuple(objects)), "both", 0, movers=(0, 1))


_SAMPLERS = {
    "touch": _sample_touch,
    "push": _sample_push,
    "lift": _sample_lift,
    "sweep": _sample_sweep,
    "bimanual": _sample_bimanual,
}


# ---------------------------------------------------------------------------------------------
# Reward and success
# ---------------------------------------------------------------------------------------------


def evaluate(spec: TaskSpec, state: TaskState) -> tuple[float, bool]:
    """(reward in [0, 1], success) of a task state."""
    objects = spec.layout.objects
    target = spec.target
    if spec.task == "touch":
        tip = state.tips[0 if spec.hand == "left" else 1, spec.finger]
        dist = float(
            surface_distance(objects[target], state.obj_pos[target], state.obj_quat[target], tip)
        )
        moved = float(np.linalg.norm(state.obj_pos[target, :2] - state.obj_start[target, :2]))
        success = dist <= TOUCH_RADIUS and moved < 0.03  # a touch, not a shove
        return (1.0 if success else 0.9 * float(np.exp(-max(dist, 0.0) / 0.05))), success
    if spec.task == "push":
        dist = float(np.linalg.norm(state.obj_pos[target, :2] - np.asarray(spec.goal_xy)))
        success = dist <= PUSH_TOLERANCE and state.obj_pos[target, 2] < 0.1
        return (1.0 if success else 0.9 * float(np.exp(-dist / 0.06))), success
    if spec.task == "lift":
        rise = float(state.obj_pos[target, 2] - state.obj_start[target, 2])
        success = rise >= LIFT_HEIGHT
        hand = state.wrists[0 if spec.hand == "left" else 1]
        approach = float(np.exp(-np.linalg.norm(hand - state.obj_pos[target]) / 0.1))
        return (
            1.0 if success else 0.2 * approach + 0.7 * float(np.clip(rise / LIFT_HEIGHT, 0, 1))
        ), success
    if spec.task == "sweep":
        x0, x1, y0, y1 = spec.region
        xy = state.obj_pos[list(spec.movers), :2]
        inside = (xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1)
        success = not bool(inside.any())
        return (1.0 if success else 0.9 * float(np.mean(~inside))), success
    if spec.task == "bimanual":
        a, b = spec.movers
        centre = float(np.linalg.norm(state.obj_pos[a, :2] - state.obj_pos[b, :2]))
        gap = centre - objects[a].footprint_radius * 0.8 - objects[b].footprint_radius * 0.8
        success = gap <= BIMANUAL_GAP
        return (1.0 if success else 0.9 * float(np.exp(-max(gap, 0.0) / 0.06))), success
    raise ValueError(f"unknown task {spec.task!r}")
