"""The policies the evaluation compares, behind one small interface.

A policy acts on an :class:`~agents.wrappers.AgentWrapper` env: ``reset(env, obs, info, seed)``
at the start of an episode, then ``act(env, obs, info)`` per step returns a normalised action,
or, when ``absolute_pose`` is True, an absolute 57-D pose (the scripted expert, which reads the
simulator's state as the data generator does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.actions import side_dims
from agents.branching import SimBranch, WorldBranch
from agents.planners import _Planner
from agents.wrappers import AgentWrapper
from world_model.object_locator import hand_of


class Policy:
    name = "policy"
    absolute_pose = False

    def reset(self, env: AgentWrapper, obs: dict, info: dict, seed: int) -> None:
        pass

    def act(self, env: AgentWrapper, obs: dict, info: dict) -> np.ndarray:
        raise NotImplementedError


class RandomPolicy(Policy):
    """Uniform actions in [-1, 1] (a random walk of the pose), seeded per episode."""

    name = "random"

    def reset(self, env, obs, info, seed):
        self.rng = np.random.default_rng(seed)

    def act(self, env, obs, info):
        return self.rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)


class ExpertPolicy(Policy):
    """The simulator's scripted expert (``dexac_env.sim.experts``): privileged state, absolute
    poses; the data set's demonstrator and the upper reference."""

    name = "expert"
    absolute_pose = True

    def reset(self, env, obs, info, seed):
        from dexac_env.sim.experts import ScriptedExpert  # noqa: PLC0415

        self.expert = ScriptedExpert(env.unwrapped, np.random.default_rng(seed))

    def act(self, env, obs, info):
        return self.expert.act()


class SB3Policy(Policy):
    """A trained Stable-Baselines3 model, deterministic actions."""

    def __init__(self, model: Any, name: str):
        self.model, self.name = model, name

    def act(self, env, obs, info):
        action, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(action, dtype=np.float32)


class MPCPolicy(Policy):
    """Receding-horizon planning: every step, plan from the real env's state with ``scorer``
    (imagination from the last real frames, or a cloned simulator) and take the first action.

    ``prior`` (an SB3 model, imagination only): at each replanning, ``prior_count`` of the
    planner's first samples are the prior's own action sequences, rolled out in imagination
    from the same state with its stochastic actions (``WorldBranch.policy_sequences``).

    ``named_hand_only``: at each reset the planner holds the hand the task text does not name
    (``world_model.object_locator.hand_of``; both hands plan when the text names neither or
    both), so sampled sequences never move it.

    ``audit`` (an :class:`agents.audit.ObjectiveAudit`, imagination only) records how the
    objective ranks every replanning's samples against the simulator; it changes no action."""

    def __init__(self, planner: _Planner, scorer: WorldBranch | SimBranch, name: str,
                 goal_fn: Any = None, replan_every: int = 1, prior: Any = None,
                 prior_count: int = 0, named_hand_only: bool = False, audit: Any = None):
        if audit is not None and isinstance(scorer, SimBranch):
            raise ValueError("the audit watches a planner in imagination (a world scorer)")
        self.planner, self.scorer, self.name, self.audit = planner, scorer, name, audit
        self.named_hand_only = bool(named_hand_only)
        self.goal_fn = goal_fn  # env -> goal frame (H, W, 3), for the goal_image objective
        self.replan_every = replan_every  # in between, act on the rest of the last plan
        if prior is not None and (isinstance(scorer, SimBranch)
                                  or not 1 <= prior_count < planner.config.population):
            raise ValueError(
                "a prior proposes in imagination only (a world scorer), with 1 <= prior_count < "
                f"population {planner.config.population}; got prior_count {prior_count}"
            )
        self.prior, self.prior_count = prior, prior_count

    def reset(self, env, obs, info, seed):
        self.planner.reset()
        if self.named_hand_only:
            named = hand_of(str(info["task_description"]))
            other = None if named is None else ("right" if named == "left" else "left")
            self.planner.hold(() if other is None else side_dims(env.delta.action_set, other))
        if getattr(self.scorer, "contact", None) is not None:
            self.scorer.contact.reset()
        if self.audit is not None:
            self.audit.reset(seed)
        self.seed, self.t = seed, 0
        self.frames: list[np.ndarray] = []
        self.goal = None if self.goal_fn is None else self.goal_fn(env, seed)

    def act(self, env, obs, info):
        self.frames.append(np.moveaxis(obs["image"], 0, -1))
        self.t += 1
        if (self.t - 1) % self.replan_every:
            return self.planner.next_action()
        delta = env.delta.get_state()
        if isinstance(self.scorer, SimBranch):
            self.scorer.sync(env.unwrapped.get_state(), delta)
        else:
            count = self.scorer.core.context_pixel_frames
            recent = ([self.frames[0]] * count + self.frames)[-count:]
            self.scorer.sync_frames(np.stack(recent), delta, info["task_description"],
                                    seed=self.seed * 1000 + self.t, goal=self.goal,
                                    intrinsics=info.get("intrinsics"))
            if self.scorer.contact is not None:
                self.scorer.contact.sync(self.frames[-1], delta.pose[0], info["task_description"],
                                         env.unwrapped)
        proposals = None
        if self.prior is not None:
            sequences = self.scorer.policy_sequences(
                lambda batch: self.prior.predict(batch, deterministic=False)[0],
                self.planner.config.horizon,
            )
            proposals = sequences[: self.prior_count]
        if self.audit is None:
            return self.planner.plan(self.scorer, proposals)
        self.audit.sync(env, self.frames[-1], delta, info, self.t - 1)
        action = self.planner.plan(self.audit.wrap(self.scorer), proposals)
        self.audit.planned(action, self.planner.mean)
        return action
