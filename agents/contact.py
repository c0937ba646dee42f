"""Touch's contact objective for planners, with the named object located on the real frame.

The contact-structured task head (:mod:`world_model.task_reward`) scores a commanded pose by
the named fingertip's distance to the named object, which it locates on each imagined 8 x 8
latent: 5 cm off on held-out colours, four times a touch's 1.3 cm (docs/agents.md, E10). A
planner acting in the real world sees a real frame at every replanning. :class:`LocatedContact`
locates the object there once per replanning and scores every imagined step's commanded
fingertips against that place, with the head's learned fingertip choice (from the text) and
reward form. Two sources of the place:

- ``"pixels"``: an :class:`world_model.object_locator.ObjectLocator` on the observed frame
  and the text's colour word;
- ``"true"``: the simulator's own object state and size. A privileged diagnostic (no policy
  may read it): the bound that a perfect locator would reach with this objective.

The objective is two-sided by default (``|d|`` rather than ``max(d, 0)``): the hands are
kinematic, and a fingertip commanded inside the object pushes it away (a touch fails once the
object moves 3 cm), so the best commanded pose is on the located surface, not inside it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from world_model.keypoint_prior import from_camera, keypoints_3d
from world_model.task_reward import FINGERTIPS, TaskRewardHead

SOURCES = ("pixels", "true")


class LocatedContact:
    """Per-step reward of (K, 57) commanded poses against a place located at each replanning.

    head: a contact-structured task head (its fingertip choice and reward form are used, not
    its locator); text_embedding: (frame, task text) -> (text_dim,) tensor (the world model's
    semantic branch); locator: the pixel locator (``source="pixels"``); log_reward: plan on the log
    reward (linear in the distance far from the object) rather than the reward.
    """

    def __init__(self, head: TaskRewardHead, text_embedding: Any, source: str = "pixels",
                 locator: Any = None, log_reward: bool = True, two_sided: bool = True):
        if head.config.structure != "contact":
            raise ValueError(f"LocatedContact needs a contact-structured head, got "
                             f"structure {head.config.structure!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if source == "pixels" and locator is None:
            raise ValueError('source "pixels" needs a locator (--locator PATH)')
        self.head, self.text_embedding, self.source = head, text_embedding, source
        self.locator, self.log_reward, self.two_sided = locator, log_reward, two_sided
        self.centre: torch.Tensor | None = None  # (3,) episode frame, m
        self.radius = 0.0
        self.finger_weights: torch.Tensor | None = None  # (10,)

    @torch.no_grad()
    def sync(self, frame: np.ndarray, pose: np.ndarray, text: str, sim: Any = None) -> None:
        """Locate on the real ``frame`` (H, W, 3) uint8 taken with the commanded ``pose``
        (57,); ``sim`` is the ``DexACSimEnv`` (read only by the ``"true"`` source)."""
        self.finger_weights = torch.softmax(self.head.finger(self.text_embedding(frame, text)), -1)
        if self.source == "true":
            self.centre, self.radius = true_place(sim)
            return
        centre, radius = self.locator.locate_text(torch.from_numpy(frame)[None], [text])
        pose = torch.as_tensor(pose, dtype=torch.float32)[None]  # (1, 57)
        self.centre = from_camera(centre[:, None], pose)[0, 0]
        self.radius = float(radius[0])

    @torch.no_grad()
    def distance(self, poses: np.ndarray) -> np.ndarray:
        """(K, 57) commanded poses -> (K,) the chosen fingertip's distance (m) to the located
        surface (negative inside), fingertips weighted by the head's choice."""
        if self.centre is None:
            raise RuntimeError("call sync before scoring")
        tips = keypoints_3d(torch.as_tensor(poses, dtype=torch.float32))[:, list(FINGERTIPS)]
        per_tip = torch.linalg.vector_norm(tips - self.centre, dim=-1) - self.radius  # (K, 10)
        return (self.finger_weights * per_tip).sum(-1).numpy().astype(np.float64)

    def __call__(self, poses: np.ndarray) -> np.ndarray:
        d = self.distance(poses)
        head = self.head
        scale, amplitude = float(head.log_scale.detach().exp()), float(head.log_amplitude.detach())
        d = np.abs(d) if self.two_sided else np.maximum(d, 0.0)
        log_reward = np.maximum(amplitude - d / scale, math.log(head.config.reward_floor))
        return log_reward if self.log_reward else np.exp(log_reward)


def true_place(sim: Any) -> tuple[torch.Tensor, float]:
    """The named object's current centre (3,) in the episode frame and its mean half extent,
    read from the simulator's state (privileged: diagnostics only)."""
    from dexac_env.actions import points_in_frame  # noqa: PLC0415

    if sim is None:
        raise ValueError('source "true" needs the simulator')
    target = sim.task_spec.target
    centre = points_in_frame(sim.physics.object_poses()[target, :3], sim.reference_pose)
    return torch.from_numpy(centre), sim.task_spec.layout.objects[target].mean_half_extent
