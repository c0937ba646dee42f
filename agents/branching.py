"""Scorers for the planners: action sequences rolled out in imagination or in cloned simulators.

Both score ``(K, horizon, A)`` normalised sequences (:mod:`agents.actions`) from a root state
and return the summed reward of each:

- :class:`WorldBranch`: the world model. The root is an imagined state (``get_state`` of a
  ``DexACWorld-v0`` env) or real frames (``sync_frames``: the simulator's last frames are
  encoded into the context, so MPC in imagination acts in the real env). The root is tiled K
  ways (``select_state``) and all K branches advance in one sampler call per step, with the
  same noise (common random numbers: branches differ only by their actions). Objective: the
  env's reward (``"learned"`` head, ``"goal_image"`` distance to a goal frame's latent).
- :class:`SimBranch`: the simulator itself, restored with ``DexACSimEnv.get_state`` /
  ``set_state`` before every sequence, scored with the task's true reward: the oracle model.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch

from agents.actions import DeltaPose, DeltaPoseState, StepLimits
from agents.envs import AgentEnvConfig
from agents.wrappers import agent_observation
from dexac_env.actions import project_keypoints
from dexac_env.world_core import CoreState, select_state


def state_from_frames(core: Any, frames: list[np.ndarray], poses: np.ndarray, texts: list[str],
                      seeds: list[int], goals: list[np.ndarray] | None = None) -> CoreState:
    """A :class:`CoreState` of ``len(frames)`` envs that starts imagination from real frames.

    frames: per env, (context_pixel_frames, H, W, 3) uint8, oldest first. poses: (N, 57)
    commanded pose of the newest frame. texts: task descriptions (semantic branch). seeds: the
    sampler generator seed per env. goals: per env an (H, W, 3) goal frame, for ``goal_image``.
    The episode names stay those the core was reset on (rewards that read demonstrations, such
    as ``pose_tracking``, are meaningless from real frames).
    """
    n, model = len(frames), core.model
    if core.reward_fn.needs_goal and goals is None:
        raise ValueError(f"the {core.reward_fn.name!r} objective needs goal frames")
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack(frames)).to(core.device)  # (N, T, H, W, 3)
        context = model.encode(pixels)  # (N, context_frames, C, h, w)
        semantic = [model.encode_semantic(pixels[i, -1:], [texts[i]]) for i in range(n)]
        goal = None if goals is None else model.encode(
            torch.from_numpy(np.stack(goals))[:, None].to(core.device))[:, -1]  # (N, C, h, w)
    if context.shape[1:] != core.context.shape[1:]:
        raise ValueError(f"{len(frames[0])} frames encode to {tuple(context.shape[1:])}, the core "
                         f"needs {tuple(core.context.shape[1:])}")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]  # CPU, as the core's
    # Start from the core's own state (valid episode names, any vector-env fields), then
    # replace what the real frames define.
    base = select_state(core.get_state(), [i % core.num_envs for i in range(n)])
    updates = {
        "context": context, "pose": np.asarray(poses, np.float64).reshape(n, -1).copy(),
        "frame_index": np.full(n, core.context_pixel_frames - 1, dtype=np.int64),
        "generator_states": [g.get_state() for g in generators],
    }
    if "semantic_rows" in {f.name for f in fields(base)}:
        updates |= {"semantic_rows": semantic, "goal_latent": goal}
    else:  # CoreState before dexac_env's refactor kept them in ``extra``
        updates["extra"] = {**base.extra, "semantic_rows": semantic, "goal": goal}
    return replace(base, **updates)


def world_vector_env(config: AgentEnvConfig, num_envs: int, reward: str | None = None) -> Any:
    """A latent-observation ``DexACWorldVectorEnv`` for branching (no decoding, no time limit)."""
    from dexac_env.vector_env import DexACWorldVectorEnv  # noqa: PLC0415

    kwargs = config.world_kwargs() | {"obs_mode": "latent"}
    if reward is not None:
        kwargs["reward"] = reward
    venv = DexACWorldVectorEnv(num_envs=num_envs, max_episode_steps=None, **kwargs)
    venv.reset(seed=0)
    return venv


def keypoints_out_of_view(poses: np.ndarray, intrinsics: np.ndarray, width: int,
                          height: int) -> np.ndarray:
    """(K, 57) episode-frame poses -> (K,) how many of the 12 hand keypoints a camera with
    these (3, 3) intrinsics and image size would not see (the view penalty's count)."""
    _, visible = project_keypoints(np.asarray(poses, np.float64), intrinsics, width, height)
    return (~visible).sum(axis=1).astype(np.float64)


class WorldBranch:
    """Scores sequences in imagination; ``population`` fixes the batch (the planner's K).

    ``support_penalty`` > 0 subtracts, per step, that weight times how far the commanded pose
    leaves the world model's training data: the sum over the 57 dimensions of
    ``max(0, |z| - support_z)``, ``z`` the pose z-scored with the model's own action
    statistics. Imagination is only trustworthy where the model was trained; a planner that
    maximises an imagined reward otherwise finds poses (hands out of view) whose imagined
    frames fool the reward head (docs/agents.md). ``view_penalty`` > 0 subtracts, per step,
    that weight times the number of the 12 hand keypoints that the commanded pose puts
    outside the image (the camera's ``intrinsics`` given to :meth:`sync_frames`): what the
    camera cannot see, the model cannot show. ``contact`` (an
    :class:`agents.contact.LocatedContact`, synced by the policy at each replanning) scores
    each step's commanded pose against the object located on the real frame, in place of the
    env's reward.
    """

    def __init__(self, config: AgentEnvConfig, population: int, objective: str = "learned",
                 limits: StepLimits | None = None, support_penalty: float = 0.0,
                 support_z: float = 3.0, view_penalty: float = 0.0, contact: Any = None):
        if support_penalty < 0 or support_z <= 0 or view_penalty < 0:
            raise ValueError(f"support_penalty and view_penalty must be >= 0 and support_z > 0, "
                             f"got {support_penalty}, {view_penalty}, {support_z}")
        self.venv = world_vector_env(config, population, reward=objective)
        self.core = self.venv.core
        self.support_penalty, self.support_z = support_penalty, support_z
        self.view_penalty = view_penalty
        self.contact = contact  # agents.contact.LocatedContact: replaces the env's reward
        self.camera: tuple[np.ndarray, int, int] | None = None  # intrinsics, width, height
        self.population = population
        self.delta = DeltaPose(population, config.action_set, limits)
        self.root: CoreState | None = None
        self.root_delta: DeltaPoseState | None = None

    def sync_state(self, state: CoreState, delta: DeltaPoseState) -> None:
        """Branch from an imagined state of one env (``select_state`` it first if batched)."""
        if len(state.episodes) != 1 or delta.pose.shape[0] != 1:
            raise ValueError("sync_state takes the state of one env")
        self.root, self.root_delta = state, delta

    def sync_frames(self, frames: np.ndarray, delta: DeltaPoseState, text: str, seed: int,
                    goal: np.ndarray | None = None,
                    intrinsics: np.ndarray | None = None) -> None:
        """Branch from real frames (context_pixel_frames, H, W, 3) uint8, oldest first;
        ``intrinsics`` (3, 3) of the camera that took them (for ``view_penalty``)."""
        if intrinsics is not None:
            self.camera = (np.asarray(intrinsics), frames.shape[2], frames.shape[1])
        elif self.view_penalty > 0:
            raise ValueError("view_penalty needs the camera intrinsics in sync_frames")
        state = state_from_frames(self.core, [frames], delta.pose, [text], [seed],
                                  None if goal is None else [goal])
        self.sync_state(state, delta)

    def _branch_from_root(self) -> None:
        """Tile the synced root into the ``population`` branches (core and delta tracking)."""
        if self.root is None:
            raise RuntimeError("call sync_state or sync_frames first")
        self.core.set_state(select_state(self.root, [0] * self.population))
        self.delta.set_state(self.root_delta.select([0] * self.population))

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        k, horizon, _ = sequences.shape
        if k != self.population:
            raise ValueError(f"expected {self.population} sequences, got {k}")
        self._branch_from_root()
        if self.contact is not None and self.contact.needs_drawn_colour:
            with torch.no_grad():  # the world model's drawing of the synced real frame
                frame = self.core.model.decode(self.root.context[:, -1:])[0, -1].cpu().numpy()
            self.contact.set_drawn_colour(frame, self.root_delta.pose[0])
        total = np.zeros(k)
        for h in range(horizon):
            poses = self.delta(sequences[:, h])  # (K, 57) commanded poses
            reward, _ = self.core.step(poses)
            if self.contact is None:
                total += reward
            else:  # the imagined source reads each branch's own decoded frame
                total += self.contact(poses, self.core.frames() if self.contact.needs_frames
                                      else None)
            total -= self.penalty(poses)
        return total

    def penalty(self, poses: np.ndarray) -> np.ndarray:
        """(K, 57) commanded poses -> (K,) the support and view penalties of one step (what the
        objective subtracts from the reward; zero when both weights are)."""
        cost = np.zeros(len(poses))
        if self.support_penalty > 0:
            cost += self.support_penalty * self.outside_support(poses)
        if self.view_penalty > 0:
            cost += self.view_penalty * self.out_of_view(poses)
        return cost

    def policy_sequences(self, act: Any, horizon: int) -> np.ndarray:
        """(population, horizon, A) actions of a policy rolled out in imagination from the
        synced state, one branch per row: ``act`` maps a batch of agent observations
        (``{"image": (K, 3, H, W), "proprio": (K, 57)}``, decoded imagined frames and commanded
        poses, as the world env gives a learner) to (K, A) actions. A stochastic ``act``
        gives K different proposals for the planner (``_Planner.plan(..., proposals)``)."""
        self._branch_from_root()
        k = self.population
        sequences = np.zeros((k, horizon, self.delta.dim))
        for h in range(horizon):
            obs = agent_observation(self.core.frames(), self.delta.state.pose)
            actions = np.asarray(act(obs), dtype=np.float64).reshape(k, self.delta.dim)
            sequences[:, h] = np.clip(actions, -1.0, 1.0)
            self.core.step(self.delta(sequences[:, h]))
        return sequences

    def out_of_view(self, poses: np.ndarray) -> np.ndarray:
        """(K, 57) episode-frame poses -> (K,) hand keypoints the camera would not see."""
        if self.camera is None:
            raise ValueError("out_of_view needs the camera intrinsics (sync_frames)")
        return keypoints_out_of_view(poses, *self.camera)

    def outside_support(self, poses: np.ndarray) -> np.ndarray:
        """(K, 57) poses -> (K,) summed z-score excess beyond ``support_z`` (0 inside)."""
        model = self.core.model
        z = (np.asarray(poses, np.float64) - model.action_mean) / model.action_std
        return np.clip(np.abs(z) - self.support_z, 0.0, None).sum(axis=1)


class SimBranch:
    """Scores sequences in a private simulator restored to the real one's state.

    By default with the task's true reward (the oracle model). With ``objective`` (a world
    reward, e.g. ``"task_head_log:PATH"``) and ``model``, the simulator's frames are encoded
    by the world model and scored by that reward instead, with the same ``view_penalty`` as
    :class:`WorldBranch`: the planner then sees true dynamics through the learned objective,
    which separates what the objective costs from what imagination costs. ``keep_frames``:
    keep each call's rendered frames in ``last_frames`` (K, horizon, H, W, 3) uint8, what a
    perfect world model would have drawn (read by :mod:`agents.audit`).
    """

    def __init__(self, config: AgentEnvConfig, limits: StepLimits | None = None,
                 objective: str | None = None, model: Any = None, view_penalty: float = 0.0,
                 keep_frames: bool = False):
        from dexac_env.sim.env import DexACSimEnv  # noqa: PLC0415

        if objective is not None and model is None:
            raise ValueError("a learned objective in the simulator needs the world model")
        self.sim = DexACSimEnv(task=config.task, color_split=config.color_split)
        self.sim.reset(seed=0)
        self.delta = DeltaPose(1, config.action_set, limits)
        self.root: dict[str, Any] | None = None
        self.root_delta: DeltaPoseState | None = None
        self.model, self.view_penalty = model, view_penalty
        self.reward_fn = None
        self.last_success = np.zeros(0, dtype=bool)  # per sequence of the last call: touched
        self.keep_frames = keep_frames
        self.last_frames: np.ndarray | None = None  # (K, horizon, H, W, 3), with keep_frames
        if objective is not None:
            from dexac_env.rewards import make_reward  # noqa: PLC0415

            self.reward_fn = make_reward(objective)

    def sync(self, sim_state: dict[str, Any], delta: DeltaPoseState) -> None:
        self.root, self.root_delta = sim_state, delta

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        if self.root is None:
            raise RuntimeError("call sync before scoring")
        returns = np.zeros(len(sequences))
        self.last_success = np.zeros(len(sequences), dtype=bool)
        frames, poses = [], []  # kept only for a learned objective
        for k, sequence in enumerate(sequences):
            self.sim.set_state(self.root)
            self.delta.set_state(self.root_delta)
            for action in sequence:
                pose = self.delta(action[None])[0].astype(np.float32)
                obs, reward, _, _, info = self.sim.step(pose)
                returns[k] += reward
                self.last_success[k] |= bool(info.get("success", False))
                if self.reward_fn is not None or self.keep_frames:
                    frames.append(obs["image"])
                    poses.append(pose)
        if self.keep_frames:
            self.last_frames = np.stack(frames).reshape(*sequences.shape[:2], *frames[0].shape)
        if self.reward_fn is None:
            return returns
        return self._learned_returns(np.stack(frames), np.stack(poses), sequences.shape[:2], info)

    def _learned_returns(self, frames: np.ndarray, poses: np.ndarray, shape: tuple[int, int],
                         info: dict[str, Any]) -> np.ndarray:
        from dexac_env.rewards import RewardInput  # noqa: PLC0415

        model = self.model
        with torch.no_grad():
            pixels = torch.from_numpy(frames)[:, None].to(model.device)  # (K H, 1, H, W, 3)
            latents = model.encode(pixels)  # (K H, 1, C, h, w)
            semantic = model.encode_semantic(pixels[:1, 0], [info["task_description"]])
            text = semantic.text.expand(len(frames), -1, -1)
        reward = self.reward_fn(RewardInput(
            latents=latents, pose=poses.astype(np.float64), frame_index=np.zeros(len(frames), np.int64),
            demo_actions=[], goal_latent=None, action_std=np.ones(poses.shape[1]), model=model,
            semantic=type(semantic)(semantic.image.expand(len(frames), -1, -1), text)))
        reward = np.asarray(reward, np.float64)
        if self.view_penalty > 0:
            reward -= self.view_penalty * keypoints_out_of_view(
                poses, info["intrinsics"], frames.shape[2], frames.shape[1])
        return reward.reshape(shape).sum(axis=1)

    def close(self) -> None:
        self.sim.close()
