"""Touch's contact objective for planners, with the named object located on the real frame.

The contact-structured task head (:mod:`world_model.task_reward`) scores a commanded pose by
the named fingertip's distance to the named object, which it locates on each imagined 8 x 8
latent: 5 cm off on held-out colours, four times a touch's 1.3 cm (docs/agents.md, E10). A
planner acting in the real world sees a real frame at every replanning. :class:`LocatedContact`
locates the object there once per replanning and scores every imagined step's commanded
fingertip against that place: the fingertip the text's words name (the head's learned choice
only when they name none: it is near uniform, E13), with the head's reward form. Three sources
of the place:

- ``"pixels"``: an :class:`world_model.object_locator.ObjectLocator` on the observed frame
  and the text's colour word;
- ``"imagined"``: the same locator on every imagined frame of every branch (each branch
  scored against where its own imagined frame shows the object): the objective then depends
  on imagination, and measures whether the world model draws the object where it is;
- ``"true"``: the simulator's own object state and size. A privileged diagnostic (no policy
  may read it): the bound that a perfect locator would reach with this objective.

The objective is two-sided by default (``|d|`` rather than ``max(d, 0)``): the hands are
kinematic, and a fingertip commanded inside the object pushes it away (a touch fails once the
object moves 3 cm), so the best commanded pose is on the located surface, not inside it.

``clearance`` > 0 also keeps the rest of the hands off the object: every other hand point
(the wrists, the other nine fingertips, and three points along each wrist-fingertip line,
where the palm and fingers are) closer than ``radius + clearance`` to the located centre costs
its intrusion over the reward's length scale. Tried against the shoves that fail touches (the
palm or another finger moves the object before the fingertip arrives: 12-31 cm in two failed
episodes inspected); it did not help (8/20 against 9/20, docs/experiments.md E13), so it is off
by default. Approaching from above is what helped.

``approach="above"`` aims the fingertip at the object's top (the located centre plus the
radius along the table's upward normal) and charges twice every metre the fingertip is below
that height, so the hand comes down on the object as the scripted expert does, rather than
sweeping into it from the side or the front, where the palm and the other fingers lead and shove
it (with the simulator's own object place: 9/20 touches approaching from anywhere; three failed
episodes of those all touched from above).

``fuse="median"`` scores against the per-coordinate median of every reading of the episode
so far (in the episode frame) instead of the last one: the object stands still until it is
touched, and the locator is worst when the hand is near it (test median 1.0 cm at an
episode's first frame, 1.5 cm at frame 24; single readings 7 cm off under the hand).

``pool="median"`` (source ``"imagined"`` only) scores every branch against one place: the
per-coordinate median of the K branches' readings of that imagined step. Each branch read on
its own invites the planner to choose the branches whose imagined arm repaints the object
where the fingertip goes (the elite of a CEM step is where imagination errs in its favour);
the median keeps the place imagination shows in most branches. With ``fuse="median"`` the
place is the median of every pooled imagined reading of the episode so far.

``colour="drawn"`` (source ``"imagined"`` only) looks on the imagined frames for the colour
the world model draws the named object in, not the colour the text names: at each replanning
the object is located on the real frame, the world model's own drawing of that frame (its
decoded context) is read there (the median RGB of the 3 x 3 pixels the located centre projects
to), and the locator is asked for that colour on every imagined frame. The world model draws a
held-out colour as the nearest training hue from its first frame on (E17, E21), so the text's
colour is not on its frames to be found; E22's audit found the planner's ranking lost in
proportion to how far the imagined place is from the true one.

``hold_other`` > 0 keeps the hand the text does not name where it was at the replanning: its
wrist's displacement (m, over the reward's length scale) costs that weight. Nothing else in the
objective involves that hand, so the planner's samples move it at random. Off by default: it
was tried with ``clearance`` (above) and did not help.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dexac_env.actions import LEFT_WRIST, RIGHT_WRIST
from world_model.keypoint_prior import from_camera, image_fractions, keypoints_3d, to_camera
from world_model.object_locator import fingertip_of
from world_model.task_reward import FINGERTIPS, TaskRewardHead

SOURCES = ("pixels", "imagined", "true")
APPROACHES = ("any", "above")
FUSIONS = ("last", "median")
POOLS = ("branch", "median")
COLOURS = ("text", "drawn")


class LocatedContact:
    """Per-step reward of (K, 57) commanded poses against a place located at each replanning.

    head: a contact-structured task head (its reward form is used, and its fingertip choice
    when the text names no fingertip; not its locator); text_embedding: (frame, task text) ->
    (text_dim,) tensor (the world model's semantic branch); locator: the pixel locator
    (sources ``"pixels"`` and ``"imagined"``); log_reward: plan on the log reward (linear in the
    distance far from the object) rather than the reward. ``source``, ``two_sided``,
    ``clearance``, ``hold_other``, ``approach``, ``fuse``, ``pool`` and ``colour``: the module
    docstring.
    """

    def __init__(self, head: TaskRewardHead, text_embedding: Any, source: str = "pixels",
                 locator: Any = None, log_reward: bool = True, two_sided: bool = True,
                 clearance: float = 0.0, hold_other: float = 0.0, approach: str = "any",
                 fuse: str = "last", pool: str = "branch", colour: str = "text"):
        if colour not in COLOURS or (colour != "text" and source != "imagined"):
            raise ValueError(f"colour must be one of {COLOURS}, and 'drawn' needs the imagined "
                             f"source; got {colour!r} with source {source!r}")
        self.colour = colour
        self.drawn_colour: torch.Tensor | None = None  # (3,) RGB in [0, 1], per replanning
        if head.config.structure != "contact":
            raise ValueError(f"LocatedContact needs a contact-structured head, got "
                             f"structure {head.config.structure!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if source in ("pixels", "imagined") and locator is None:
            raise ValueError(f'source "{source}" needs a locator (--locator PATH)')
        if clearance < 0 or hold_other < 0:
            raise ValueError(f"clearance and hold_other must be >= 0, got {clearance}, {hold_other}")
        self.clearance, self.hold_other = float(clearance), float(hold_other)
        self.root_wrists: np.ndarray | None = None  # (2, 3) at the last sync
        if approach not in APPROACHES or fuse not in FUSIONS:
            raise ValueError(f"approach must be one of {APPROACHES} and fuse one of {FUSIONS}, "
                             f"got {approach!r}, {fuse!r}")
        if pool not in POOLS or (pool != "branch" and source != "imagined"):
            raise ValueError(f"pool must be one of {POOLS}, and 'median' needs the imagined "
                             f"source; got {pool!r} with source {source!r}")
        self.fuse, self.pool = fuse, pool
        self.readings: list[torch.Tensor] = []  # this episode's (centre x, y, z, radius)
        self.imagined_readings: list[torch.Tensor] = []  # pooled ones, for fuse "median"
        # "above": the table's upward normal in the episode frame (the locator's, fitted to
        # its training places; the simulator's for the "true" source); the fingertip then aims
        # at the object's top and is charged for every metre it goes below that height
        self.up: torch.Tensor | None = None
        if approach == "above" and source != "true":
            if getattr(locator, "table_up", None) is None:
                raise ValueError("approach 'above' needs a locator that records table_up")
            self.up = torch.as_tensor(locator.table_up, dtype=torch.float32)
        self.approach = approach
        self.head, self.text_embedding, self.source = head, text_embedding, source
        self.locator, self.log_reward, self.two_sided = locator, log_reward, two_sided
        self.centre: torch.Tensor | None = None  # (3,) episode frame, m
        self.radius = 0.0
        self.text = ""  # the task text of the last sync
        self.finger_weights: torch.Tensor | None = None  # (10,)
        # source "imagined": each scored step's (K, 3) per-branch places, before pooling, since
        # the last sync (read by agents.audit)
        self.imagined_places: list[np.ndarray] = []

    @torch.no_grad()
    def sync(self, frame: np.ndarray, pose: np.ndarray, text: str, sim: Any = None) -> None:
        """Locate on the real ``frame`` (H, W, 3) uint8 taken with the commanded ``pose``
        (57,); ``sim`` is the ``DexACSimEnv`` (read only by the ``"true"`` source)."""
        named = fingertip_of(text)
        if named is not None:  # the text's own words: the head's learned choice is ~uniform
            self.finger_weights = torch.nn.functional.one_hot(torch.tensor(named), 10).float()
        else:
            self.finger_weights = torch.softmax(
                self.head.finger(self.text_embedding(frame, text)), -1)
        self.imagined_places.clear()
        self.drawn_colour = None
        pose = np.asarray(pose, np.float64)
        self.root_wrists = np.stack([pose[w.start:w.start + 3] for w in (LEFT_WRIST, RIGHT_WRIST)])
        if self.source == "true":
            self.centre, self.radius = true_place(sim)
            if self.approach == "above":  # world z in the episode frame
                self.up = torch.from_numpy(sim.reference_pose[2, :3].astype(np.float32))
            return
        self.text = text
        centre, radius = self._locate(frame[None], np.asarray(pose)[None])
        self.readings.append(torch.cat([centre[0], radius]))
        reading = (self.readings[-1] if self.fuse == "last"
                   else torch.stack(self.readings).median(0).values)
        self.centre, self.radius = reading[:3], float(reading[3])

    def reset(self) -> None:
        """A new episode: forget the readings."""
        self.readings.clear()
        self.imagined_readings.clear()

    def _locate(self, frames: np.ndarray, poses: np.ndarray, imagined: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H, W, 3) uint8 frames taken with (N, 57) poses -> the located centres (N, 3)
        in the episode frame and radii (N,). ``imagined``: frames the world model drew (the
        drawn colour is looked for there when ``colour="drawn"``)."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        if imagined and self.colour == "drawn":
            if self.drawn_colour is None:
                raise RuntimeError("colour 'drawn' needs set_drawn_colour after each sync")
            centre, radius, _ = self.locator(pixels, self.drawn_colour.expand(len(frames), 3))
        else:
            centre, radius = self.locator.locate_text(pixels, [self.text] * len(frames))
        poses = torch.as_tensor(poses, dtype=torch.float32)  # (N, 57)
        return from_camera(centre[:, None], poses)[:, 0], radius

    @property
    def needs_drawn_colour(self) -> bool:
        """Whether the world model's drawing of the synced frame must be read first
        (:meth:`set_drawn_colour`)."""
        return self.colour == "drawn" and self.drawn_colour is None

    @torch.no_grad()
    def set_drawn_colour(self, frame: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Read the colour the world model draws the object in: ``frame`` (H, W, 3) uint8, its
        drawing of the synced real frame, taken with the commanded ``pose`` (57,); the median
        RGB of the 3 x 3 pixels where the place located at the sync projects. Returns it."""
        if self.centre is None:
            raise RuntimeError("call sync before set_drawn_colour")
        rgb = drawn_colour(frame, self.centre, pose, self.locator.config.camera)
        self.drawn_colour = torch.as_tensor(rgb, dtype=torch.float32)
        return rgb

    @property
    def needs_frames(self) -> bool:
        """Whether each call needs the branches' imagined frames (``frames=``)."""
        return self.source == "imagined"

    @torch.no_grad()
    def distance(self, poses: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
        """(K, 57) commanded poses -> (K,) the chosen fingertip's distance (m) to the located
        surface (negative inside), fingertips weighted by the choice. ``frames`` (K, H, W, 3):
        the branches' imagined frames (source ``"imagined"``: each branch its own place)."""
        if self.centre is None:
            raise RuntimeError("call sync before scoring")
        centre, radius = self.centre, torch.tensor(self.radius)  # (3,), ()
        if self.needs_frames:
            if frames is None or len(frames) != len(poses):
                raise ValueError("the imagined source scores each branch on its own frame: "
                                 "pass frames (K, H, W, 3)")
            centre, radius = self._locate(frames, poses, imagined=True)  # (K, 3), (K,)
            self.imagined_places.append(centre.numpy().astype(np.float64))
            if self.pool == "median":  # one place for every branch
                reading = torch.cat([centre, radius[:, None]], 1).median(0).values  # (4,)
                if self.fuse == "median":
                    self.imagined_readings.append(reading)
                    reading = torch.stack(self.imagined_readings).median(0).values
                centre, radius = reading[:3].expand(len(poses), 3), reading[3].expand(len(poses))
            centre, radius = centre[:, None], radius[:, None]
        tips = keypoints_3d(torch.as_tensor(poses, dtype=torch.float32))[:, list(FINGERTIPS)]
        if self.up is not None:  # from above: to the top, never below its height
            offset = tips - (centre + radius[..., None] * self.up)  # (K, 10, 3)
            below = (-(offset @ self.up)).clamp(min=0.0)
            per_tip = torch.linalg.vector_norm(offset, dim=-1) + 2.0 * below
        else:
            per_tip = torch.linalg.vector_norm(tips - centre, dim=-1) - radius  # (K, 10)
        return (self.finger_weights * per_tip).sum(-1).numpy().astype(np.float64)

    @torch.no_grad()
    def intrusion(self, poses: np.ndarray) -> np.ndarray:
        """(K, 57) -> (K,) summed depth (m) by which the hands' other points come within
        ``radius + clearance`` of the located centre (the named fingertip excluded, by the
        fingertip choice)."""
        points = keypoints_3d(torch.as_tensor(poses, dtype=torch.float32))  # (K, 12, 3)
        lines = []
        for wrist in (0, 6):  # three points along each wrist-fingertip line of both hands
            tips = points[:, wrist + 1:wrist + 6]  # (K, 5, 3)
            for fraction in (0.25, 0.5, 0.75):
                lines.append(points[:, wrist:wrist + 1] + fraction * (tips - points[:, wrist:wrist + 1]))
        others = torch.cat([points, *lines], 1)  # (K, 12 + 30, 3)
        keep = torch.ones(others.shape[1])
        keep[list(FINGERTIPS)] = 1.0 - self.finger_weights  # the named fingertip may touch
        depth = (self.radius + self.clearance
                 - torch.linalg.vector_norm(others - self.centre, dim=-1)).clamp(min=0.0)
        return (depth * keep).sum(-1).numpy().astype(np.float64)

    def other_hand_motion(self, poses: np.ndarray) -> np.ndarray:
        """(K, 57) -> (K,) how far (m) the hand the text does not name has moved its wrist
        since the last sync (each hand weighted by the fingertip choice's odds that it is not
        named)."""
        poses = np.asarray(poses, np.float64)
        left_named = float(self.finger_weights[:5].sum())
        moved = [np.linalg.norm(poses[:, w.start:w.start + 3] - self.root_wrists[i], axis=1)
                 for i, w in enumerate((LEFT_WRIST, RIGHT_WRIST))]
        return (1.0 - left_named) * moved[0] + left_named * moved[1]

    def __call__(self, poses: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
        d = self.distance(poses, frames)
        head = self.head
        scale, amplitude = float(head.log_scale.detach().exp()), float(head.log_amplitude.detach())
        d = np.abs(d) if self.two_sided else np.maximum(d, 0.0)
        log_reward = np.maximum(amplitude - d / scale, math.log(head.config.reward_floor))
        if self.clearance > 0:
            log_reward = log_reward - self.intrusion(poses) / scale
        if self.hold_other > 0:
            log_reward = log_reward - self.hold_other * self.other_hand_motion(poses) / scale
        return log_reward if self.log_reward else np.exp(log_reward)


def drawn_colour(frame: np.ndarray, centre: torch.Tensor, pose: np.ndarray,
                 camera: tuple[float, float, float, float]) -> np.ndarray:
    """(3,) RGB in [0, 1]: the median of the 3 x 3 pixels of ``frame`` (H, W, 3) uint8 where
    the episode-frame point ``centre`` (3,) is imaged by the pinhole ``camera`` (the locator's
    normalised intrinsics) that the commanded ``pose`` (57,) puts at the head."""
    pose_t = torch.as_tensor(np.asarray(pose), dtype=torch.float32)
    point = to_camera(torch.as_tensor(centre, dtype=torch.float32)[None, None], pose_t)[0]
    u, v = image_fractions(point, camera)[0].clamp(0.0, 1.0 - 1e-6)
    height, width = frame.shape[:2]
    row, col = int(v * height), int(u * width)
    window = frame[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].reshape(-1, 3)
    return np.median(window.astype(np.float64), axis=0) / 255.0


def true_place(sim: Any) -> tuple[torch.Tensor, float]:
    """The named object's current centre (3,) in the episode frame and its mean half extent,
    read from the simulator's state (privileged: diagnostics only)."""
    from dexac_env.actions import points_in_frame  # noqa: PLC0415

    if sim is None:
        raise ValueError('source "true" needs the simulator')
    target = sim.task_spec.target
    centre = points_in_frame(sim.physics.object_poses()[target, :3], sim.reference_pose)
    return torch.from_numpy(centre), sim.task_spec.layout.objects[target].mean_half_extent
