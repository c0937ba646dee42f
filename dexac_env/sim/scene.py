"""Scene description and MJCF generation: table, rigid objects, markers, two capsule hands, camera.

World frame (MuJoCo's): x to the right of the person, y away from the person, z up; the table
top is the plane z = 0. Everything here is plain data + XML text; nothing imports mujoco.

Every hand part (palm + 15 finger segments per hand) is a free body welded to a mocap target
that our own forward kinematics poses each physics substep: the hands follow the action,
collide with objects (not with the table or each other) and push, sweep and pinch them
through MuJoCo contacts with real part velocities. The egocentric camera is a mocap body
(MuJoCo camera frame: looks down -z, y up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dexac_env.sim.hand import NUM_FINGERS, SEGMENTS_PER_FINGER, HandGeometry

HAND_SIDES = ("left", "right")
SKIN_RGBA = {"left": (0.90, 0.72, 0.60, 1.0), "right": (0.55, 0.37, 0.26, 1.0)}
SHAPES = ("box", "cylinder", "sphere")

# Object colours. The test split uses colours never seen in train/val (held-out appearance).
TRAIN_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.12),
    "green": (0.15, 0.65, 0.2),
    "blue": (0.15, 0.3, 0.85),
    "yellow": (0.95, 0.8, 0.1),
    "cyan": (0.1, 0.75, 0.8),
    "black": (0.08, 0.08, 0.09),
}
TEST_COLORS: dict[str, tuple[float, float, float]] = {
    "orange": (0.98, 0.5, 0.05),
    "purple": (0.5, 0.18, 0.7),
    "pink": (0.95, 0.45, 0.7),
}
ALL_COLORS = {**TRAIN_COLORS, **TEST_COLORS}
# "hues": the training colour names, each object drawn in a random shade of its name's hue band
# (random_shade) instead of the one fixed RGB, so that a model trained on such scenes learns
# colour as a free attribute rather than six fixed values (docs/experiments.md E17).
COLOR_SPLITS = ("train", "test", "all", "hues")
# Hue bands (degrees, start -> end going up, may wrap through 0) of the chromatic training names.
# They leave out every hue within 15 degrees of orange (29) and the whole purple-pink-magenta
# arc (260-346, purple 277 and pink 330 inside it), so the test split's colours stay held out.
HUE_BANDS: dict[str, tuple[float, float]] = {
    "red": (346.0, 13.0),
    "yellow": (45.0, 75.0),
    "green": (75.0, 160.0),
    "cyan": (160.0, 200.0),
    "blue": (200.0, 260.0),
}
HELD_OUT_HUE_MARGIN = 15.0

TABLE_HALF = (0.6, 0.45)  # table top half extents (x, y), centred at (0, TABLE_CENTER_Y)
TABLE_CENTER_Y = 0.12
HEAD_REST_POS = np.array([0.0, -0.27, 0.36])
HEAD_REST_LOOKAT = np.array([0.0, 0.15, 0.0])
DEFAULT_FOVY = 70.0

# Static scene landmarks for the head (camera) family of keypoint metrics: corners of the
# table's checker texture, fixed in the world, so their image motion is pure head motion.
# The texture ("wood", builtin checker, texrepeat 5 x 4) has 10 x 8 checks over the table top:
# 0.12 m in x, 0.1125 m in y; corners lie at x = -0.6 + 0.12 i, y = TABLE_CENTER_Y - 0.45 +
# 0.1125 j (checked by drawing them on 512 px renders). Two on the far edge (high contrast with
# the background), two mid-table, spread left/right, rarely covered by the resting hands.
LANDMARK_NAMES = ("far_left", "far_right", "mid_left", "mid_right")
LANDMARKS_WORLD = np.array(
    [[-0.24, 0.57, 0.0], [0.24, 0.57, 0.0], [-0.24, 0.12, 0.0], [0.24, 0.12, 0.0]]
)  # (4, 3) metres, world frame (z = table top)


@dataclass(frozen=True)
class ObjectSpec:
    """A rigid object resting on the table. size: box half extents / (radius, half height, -) /
    (radius, -, -); pos: centre (m); yaw about z (rad); mass (kg)."""

    name: str
    shape: str
    size: tuple[float, float, float]
    color: str
    pos: tuple[float, float, float]
    yaw: float
    mass: float
    rgb: tuple[float, float, float] | None = None
    """The drawn colour; None = the palette's RGB of ``color``."""

    @property
    def rgba(self) -> tuple[float, float, float, float]:
        return (*(self.rgb if self.rgb is not None else ALL_COLORS[self.color]), 1.0)

    @property
    def half_height(self) -> float:
        return (
            self.size[2]
            if self.shape == "box"
            else self.size[1]
            if self.shape == "cylinder"
            else self.size[0]
        )

    @property
    def footprint_radius(self) -> float:
        """Radius of the smallest vertical cylinder holding the object."""
        return float(np.hypot(self.size[0], self.size[1])) if self.shape == "box" else self.size[0]

    @property
    def mean_half_extent(self) -> float:
        """The radius of a sphere standing in for the object: its half extents along x, y and
        z, averaged (a planner's contact target; the true touch test is the exact surface)."""
        if self.shape == "box":
            return float(np.mean(self.size))
        if self.shape == "cylinder":
            return float((2 * self.size[0] + self.size[1]) / 3)
        return float(self.size[0])


@dataclass(frozen=True)
class Marker:
    """A flat visual patch on the table (no collision): kind "disk" (size = radius) or "mat"
    (size = half extents x, y)."""

    name: str
    kind: str
    pos: tuple[float, float]
    size: tuple[float, ...]
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class SceneLayout:
    objects: tuple[ObjectSpec, ...]
    markers: tuple[Marker, ...] = field(default_factory=tuple)


def palette(color_split: str) -> dict[str, tuple[float, float, float]]:
    """The colour names a split draws from ("hues" draws the training names, then a shade)."""
    if color_split not in COLOR_SPLITS:
        raise ValueError(f"color_split must be one of {COLOR_SPLITS}, got {color_split!r}")
    return {"train": TRAIN_COLORS, "test": TEST_COLORS, "all": ALL_COLORS, "hues": TRAIN_COLORS}[
        color_split
    ]


def hue_of(rgb: tuple[float, float, float]) -> float:
    """Hue in degrees [0, 360) (colorsys; the standard library's HSV)."""
    import colorsys

    return 360.0 * colorsys.rgb_to_hsv(*rgb)[0]


def random_shade(rng: np.random.Generator, name: str) -> tuple[float, float, float]:
    """A random RGB that a training colour name still describes: a hue from the name's band
    (HUE_BANDS), saturation 0.5-0.95, value 0.5-0.98; "black" is a dark, weakly saturated
    colour of any hue (value 0.04-0.2). Never within HELD_OUT_HUE_MARGIN of a test colour's hue."""
    import colorsys

    if name == "black":
        h, s, v = rng.uniform(0, 1), rng.uniform(0.0, 0.4), rng.uniform(0.04, 0.2)
    elif name in HUE_BANDS:
        start, end = HUE_BANDS[name]
        span = (end - start) % 360.0
        h = ((start + rng.uniform(0.0, span)) % 360.0) / 360.0
        s, v = rng.uniform(0.5, 0.95), rng.uniform(0.5, 0.98)
    else:
        raise ValueError(f"random_shade draws training colour names only, got {name!r}")
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def sample_object(
    rng: np.random.Generator,
    name: str,
    color: str,
    xy: tuple[float, float],
    shape: str | None = None,
    scale: float = 1.0,
) -> ObjectSpec:
    """Random shape, size, mass and yaw for an object resting at ``xy``."""
    shape = shape or str(rng.choice(SHAPES))
    if shape == "box":
        size = tuple(float(v) for v in rng.uniform(0.018, 0.032, 3) * scale)
        half_height = size[2]
    elif shape == "cylinder":
        radius, half = rng.uniform(0.018, 0.028) * scale, rng.uniform(0.018, 0.035) * scale
        size, half_height = (float(radius), float(half), 0.0), float(half)
    else:
        radius = float(rng.uniform(0.02, 0.03) * scale)
        size, half_height = (radius, 0.0, 0.0), radius
    return ObjectSpec(
        name=name,
        shape=shape,
        size=size,
        color=color,
        pos=(float(xy[0]), float(xy[1]), half_height),
        yaw=float(rng.uniform(-np.pi, np.pi)),
        mass=float(rng.uniform(0.04, 0.15)),
    )


def place_apart(
    rng: np.random.Generator,
    count: int,
    existing: list[tuple[float, float]],
    x_range: tuple[float, float] = (-0.24, 0.24),
    y_range: tuple[float, float] = (0.0, 0.26),
    min_gap: float = 0.09,
) -> list[tuple[float, float]]:
    """``count`` random table positions at least ``min_gap`` from each other and ``existing``."""
    placed: list[tuple[float, float]] = []
    for _ in range(count):
        for _attempt in range(200):
            xy = (float(rng.uniform(*x_range)), float(rng.uniform(*y_range)))
            if all(np.hypot(xy[0] - p[0], xy[1] - p[1]) >= min_gap for p in existing + placed):
                break
        placed.append(xy)
    return placed


def _fmt(values) -> str:
    return " ".join(f"{float(v):.5g}" for v in values)


def _object_xml(obj: ObjectSpec) -> str:
    rgba = obj.rgba
    quat = (np.cos(obj.yaw / 2), 0.0, 0.0, np.sin(obj.yaw / 2))
    size = {"box": obj.size, "cylinder": obj.size[:2], "sphere": obj.size[:1]}[obj.shape]
    return (
        f'<body name="{obj.name}" pos="{_fmt(obj.pos)}" quat="{_fmt(quat)}"><freejoint/>'
        f'<geom name="{obj.name}_geom" type="{obj.shape}" size="{_fmt(size)}" mass="{obj.mass:.4g}"'
        f' rgba="{_fmt(rgba)}" contype="1" conaffinity="3" condim="4" friction="0.45 0.01 0.001"'
        f' solref="0.01 1" material="object"/></body>'
    )


def _marker_xml(marker: Marker) -> str:
    if marker.kind == "disk":
        geom = f'type="cylinder" size="{marker.size[0]:.4g} 0.0008"'
    else:
        geom = f'type="box" size="{marker.size[0]:.4g} {marker.size[1]:.4g} 0.0008"'
    return (
        f'<geom name="{marker.name}" {geom} pos="{marker.pos[0]:.4g} {marker.pos[1]:.4g} 0.0008"'
        f' rgba="{_fmt(marker.rgba)}" contype="0" conaffinity="0"/>'
    )


def _hand_xml(side: str, geometry: HandGeometry) -> tuple[str, str]:
    """Bodies and weld constraints of one hand.

    Every hand part is a free body (gravity compensated) welded to a mocap target that our
    kinematics poses: the parts follow the action closely but have real velocities, so
    friction against objects works (a pinch can lift), and pressing into an object deflects
    the part a little instead of applying unbounded force.
    """
    mirror = -1.0 if side == "left" else 1.0
    skin = _fmt(SKIN_RGBA[side])
    collide = (
        'contype="2" conaffinity="0" condim="4" friction="1.5 0.02 0.002" solref="0.01 1"'
        ' density="400"'
    )
    cx, cy, cz = geometry.palm_center
    hx, hy, hz = geometry.palm_half_size
    palm = [
        f'<geom name="{side}_palm" type="box" pos="{cx} {mirror * cy:.4g} {cz}" size="{hx} {hy} {hz}"'
        f' rgba="{skin}" {collide}/>',
        f'<geom name="{side}_thenar" type="ellipsoid" pos="0.035 {mirror * 0.03:.4g} -0.006"'
        f' size="0.035 0.018 0.014" euler="0 0 {mirror * 0.5:.3g}" rgba="{skin}" {collide}/>',
        f'<geom name="{side}_knuckles" type="capsule" fromto="0.086 {mirror * 0.03:.4g} 0 0.086'
        f' {mirror * -0.037:.4g} 0" size="0.0125" rgba="{skin}" {collide}/>',
        f'<geom name="{side}_forearm" type="capsule" fromto="-0.005 0 0 -0.26 0 -0.01" size="0.029"'
        f' rgba="{skin}" contype="0" conaffinity="0" density="20"/>',
    ]
    parts = [(f"{side}_palm_body", "".join(palm))]
    for finger in range(NUM_FINGERS):
        for seg in range(SEGMENTS_PER_FINGER):
            name = f"{side}_f{finger}_s{seg}"
            length = geometry.lengths[finger, seg]
            radius = geometry.radii[finger, seg]
            geom = (
                f'<geom name="{name}" type="capsule" fromto="0 0 0 {length:.4g} 0 0"'
                f' size="{radius:.4g}" rgba="{skin}" {collide}/>'
            )
            parts.append((name, geom))
    bodies = "".join(
        f'<body name="{name}_target" mocap="true"/><body name="{name}" gravcomp="1"><freejoint/>{geoms}</body>'
        for name, geoms in parts
    )
    welds = "".join(
        f'<weld body1="{name}_target" body2="{name}" relpose="0 0 0 1 0 0 0" solref="0.008 1"'
        ' solimp="0.95 0.99 0.001"/>'
        for name, _ in parts
    )
    return bodies, welds


def build_xml(
    layout: SceneLayout, geometry: HandGeometry, fovy: float, physics_dt: float, render_size: int
) -> str:
    """The full MJCF text of a scene."""
    offscreen = max(render_size, 64)
    objects = "".join(_object_xml(o) for o in layout.objects)
    markers = "".join(_marker_xml(m) for m in layout.markers)
    tx, ty = TABLE_HALF
    hands = [_hand_xml(side, geometry) for side in HAND_SIDES]
    return f"""<mujoco model="dexac_sim">
  <compiler angle="radian"/>
  <option timestep="{physics_dt}" integrator="implicitfast" cone="elliptic" impratio="4"/>
  <visual>
    <quality offsamples="0" shadowsize="512" numslices="8" numstacks="4"/>
    <global offwidth="{max(offscreen, 640)}" offheight="{max(offscreen, 480)}"/>
    <headlight ambient="0.32 0.32 0.32" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
    <map znear="0.02" zfar="10"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.78 0.8 0.84" rgb2="0.32 0.34 0.38"
             width="64" height="64"/>
    <texture name="wood" type="2d" builtin="checker" rgb1="0.63 0.5 0.37" rgb2="0.57 0.45 0.33"
             width="128" height="128" mark="random" random="0.04" markrgb="0.45 0.35 0.26"/>
    <material name="table" texture="wood" texrepeat="5 4" specular="0.1" shininess="0.2"/>
    <material name="object" specular="0.3" shininess="0.4"/>
  </asset>
  <worldbody>
    <light name="sun" directional="true" pos="0.4 -0.4 1.6" dir="-0.25 0.3 -1" castshadow="true"
           diffuse="0.55 0.55 0.52" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" rgba="0.33 0.33 0.36 1"
          contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="0 {TABLE_CENTER_Y} -0.03" size="{tx} {ty} 0.03"
          material="table" contype="1" conaffinity="1" condim="4" friction="0.45 0.01 0.001"/>
    {markers}
    <body name="head" mocap="true" pos="{_fmt(HEAD_REST_POS)}">
      <camera name="ego" pos="0 0 0" fovy="{fovy}"/>
    </body>
    {hands[0][0]}
    {hands[1][0]}
    {objects}
  </worldbody>
  <equality>{hands[0][1]}{hands[1][1]}</equality>
</mujoco>"""
