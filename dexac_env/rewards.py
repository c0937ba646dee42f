"""Pluggable rewards for the imagined environment (``DexACWorld-v0``) and its batched core.

A reward maps one batched step to one number per environment. It receives a
:class:`RewardInput` and returns a float array of shape ``(N,)``. Built-in rewards, chosen by
name with ``reward=...``:

- ``"learned"``: the world model's reward head on the newly predicted latent frames, summed
  over the frames the step covers.
- ``"goal_image"``: minus the root-mean-square distance, in normalised latent units, between
  the newest latent frame and the latent of a goal frame taken from the same episode (its last
  frame). 0 means "looks exactly like the goal".
- ``"pose_tracking"``: minus the mean squared per-dimension z-score between the commanded
  pose and the demonstration's pose for the same frame (the stored ``action``; past the
  demonstration's end its last pose). 0 means "exactly on the demonstration".
- ``"task_head:PATH"`` / ``"task_head_log:PATH"``: a task reward head trained by
  ``training/train_task_reward.py`` (``world_model.task_reward``) on the newest predicted latent
  frame, the commanded pose and the task text: its predicted simulator reward, or the
  logarithm of it (for planners: linear in the distance to the object on touch and push, so
  it still ranks poses far from it).
- any callable ``fn(RewardInput) -> array-like (N,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from world_model.action_tokenizer import STD_FLOOR

REWARD_NAMES = ("learned", "goal_image", "pose_tracking", "task_head:PATH", "task_head_log:PATH")


def action_scale(store: Any) -> np.ndarray:
    """(57,) per-dimension action scale of an episode store for ``RewardInput.action_std``: its
    action standard deviation (computed if the store has none recorded), floored at
    ``STD_FLOOR`` like the model's action normaliser, so a dimension that never moves divides
    nothing by zero."""
    stats = store.action_stats or store.compute_action_stats(None)
    return np.maximum(stats.std, STD_FLOOR)


@dataclass
class RewardInput:
    """Everything a reward may look at after one batched step of N environments.

    latents: (N, T, C, h, w) float32 normalised latent frames predicted by this step.
    pose: (N, 57) float64 commanded pose of the newest frame (dexac_env.actions units).
    frame_index: (N,) int64 index, within each source episode, of the newest frame.
    demo_actions: N arrays (L_i, 57), the stored action of each source episode.
    goal_latent: (N, C, h, w) latent of each episode's goal frame, or None if not needed.
    action_std: (57,) per-dimension action scale used to normalise pose errors.
    model: the world model (for learned heads).
    semantic: the model's semantic features of the N envs (``.text`` (N, 1, D): the task
        text's embedding), or None where the env has none.
    """

    latents: torch.Tensor
    pose: np.ndarray
    frame_index: np.ndarray
    demo_actions: list[np.ndarray]
    goal_latent: torch.Tensor | None
    action_std: np.ndarray
    model: Any
    semantic: Any = None


class Reward:
    """Base class: ``needs_goal`` asks the core to encode each episode's goal frame at reset."""

    name = "custom"
    needs_goal = False

    def __call__(self, step: RewardInput) -> np.ndarray:
        raise NotImplementedError


class LearnedReward(Reward):
    name = "learned"

    def __call__(self, step: RewardInput) -> np.ndarray:
        with torch.no_grad():
            reward, _ = step.model.reward(step.latents)  # (N, T)
        return reward.sum(dim=1).double().cpu().numpy()


class GoalImageReward(Reward):
    name = "goal_image"
    needs_goal = True

    def __call__(self, step: RewardInput) -> np.ndarray:
        if step.goal_latent is None:
            raise RuntimeError("goal_image reward called without goal latents")  # core bug
        diff = step.latents[:, -1] - step.goal_latent.to(step.latents.device)  # (N, C, h, w)
        return -diff.pow(2).flatten(1).mean(dim=1).sqrt().double().cpu().numpy()


class PoseTrackingReward(Reward):
    name = "pose_tracking"

    def __call__(self, step: RewardInput) -> np.ndarray:
        demo = np.stack(
            [d[min(int(i), len(d) - 1)] for d, i in zip(step.demo_actions, step.frame_index, strict=True)]
        )  # (N, 57)
        z = (step.pose - demo) / step.action_std
        return -np.mean(z**2, axis=1)


class TaskHeadReward(Reward):
    """A task reward head (``world_model.task_reward``) read from ``path``; ``log`` scores
    with its log-reward output instead of its reward."""

    def __init__(self, path: str, log: bool = False):
        from world_model.task_reward import load_task_reward  # noqa: PLC0415

        self.head = load_task_reward(path)
        self.log = bool(log)
        self.name = ("task_head_log:" if log else "task_head:") + str(path)

    def __call__(self, step: RewardInput) -> np.ndarray:
        if step.semantic is None:
            raise ValueError("the task_head reward needs the task text's embedding: a world model "
                             "with a semantic branch, in DexACWorld-v0")
        device = step.latents.device
        self.head.to(device)
        with torch.no_grad():
            reward, log_reward, _ = self.head(
                step.latents[:, -1], torch.as_tensor(step.pose, dtype=torch.float32, device=device),
                step.semantic.text[:, 0].to(device, torch.float32))
        return (log_reward if self.log else reward).double().cpu().numpy()


class CallableReward(Reward):
    """Wraps a user function ``fn(RewardInput) -> (N,)``; its output is checked."""

    def __init__(self, fn: Callable[[RewardInput], Any], needs_goal: bool = False):
        self.fn = fn
        self.name = getattr(fn, "__name__", "custom")
        self.needs_goal = needs_goal

    def __call__(self, step: RewardInput) -> np.ndarray:
        return self.fn(step)


def make_reward(spec: str | Reward | Callable[[RewardInput], Any]) -> Reward:
    """A :class:`Reward` from a name in ``REWARD_NAMES``, a Reward, or a callable."""
    if isinstance(spec, Reward):
        return spec
    if isinstance(spec, str):
        builtins = {"learned": LearnedReward, "goal_image": GoalImageReward,
                    "pose_tracking": PoseTrackingReward}
        for prefix, log in (("task_head:", False), ("task_head_log:", True)):
            if spec.startswith(prefix) and len(spec) > len(prefix):
                return TaskHeadReward(spec[len(prefix):], log=log)
        if spec not in builtins:
            raise ValueError(f"reward must be one of {REWARD_NAMES} or a callable, got {spec!r}")
        return builtins[spec]()
    if callable(spec):
        return CallableReward(spec)
    raise ValueError(f"reward must be one of {REWARD_NAMES} or a callable, got {type(spec).__name__}")


def check_reward_output(value: Any, num_envs: int, name: str) -> np.ndarray:
    """Validate a reward's output: finite floats of shape (num_envs,)."""
    out = np.asarray(value, dtype=np.float64)
    if out.shape != (num_envs,):
        raise ValueError(f"reward {name!r} must return shape ({num_envs},), got {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"reward {name!r} returned non-finite values {out}")
    return out
