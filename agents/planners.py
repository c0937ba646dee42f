"""CEM and MPPI over normalised action sequences; they know the world only as a scorer.

A planner proposes ``population`` action sequences ``(K, horizon, A)`` in ``[-1, 1]`` and asks
a scorer (``evaluate(sequences) -> (K,) returns``) for their returns; the scorers in
:mod:`agents.branching` roll the sequences out in imagination (one batched world-model call per
step for all K) or in cloned simulators. Both planners warm-start from the previous plan
shifted by one step (receding horizon), as model-predictive control does.

- CEM (cross-entropy method): sample from a diagonal Gaussian, refit it to the ``elites``
  best, repeat ``iterations`` times; act with the best sequence found.
- MPPI (model-predictive path integral, TD-MPC2's form): sample around the mean, weight the
  elites by ``exp((R - max R) / temperature)``, move the mean to their weighted average and
  the std to their weighted spread (floored at ``min_std``); act with the mean.

``hold(dims)`` keeps those action dims at 0 ("hold this part of the pose") in every sampled
and proposed sequence, e.g. the hand an instruction does not name (``MPCPolicy``'s
``named_hand_only``).

``plan(scorer, proposals)`` also scores given sequences in the first iteration, in place of as
many random samples: TD-MPC2 mixes trajectories of its learned policy into MPPI's samples the
same way, so a policy learned in imagination proposes and the planner refines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PlannerConfig:
    """horizon: steps per sequence. population: sequences per iteration (the batch the scorer
    rolls out at once). iterations: refits per plan. elites: CEM's refit set. init_std: the
    sampling std of a fresh plan (actions span [-1, 1]). min_std: CEM's floor. temperature:
    MPPI's softmax temperature over the elites, in return units. momentum: fraction of the old mean kept."""

    horizon: int = 4
    population: int = 16
    iterations: int = 3
    elites: int = 4
    init_std: float = 0.6
    min_std: float = 0.05
    temperature: float = 0.1
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.population < 2 or self.iterations < 1:
            raise ValueError(f"need horizon >= 1, population >= 2, iterations >= 1, got {self}")
        if not 1 <= self.elites <= self.population:
            raise ValueError(f"elites must be in 1..population, got {self.elites}")


class _Planner:
    def __init__(self, action_dim: int, config: PlannerConfig | None = None, seed: int = 0):
        self.config = config or PlannerConfig()
        self.action_dim = action_dim
        self.rng = np.random.default_rng(seed)
        self.mean = np.zeros((self.config.horizon, action_dim))
        self.last_returns: np.ndarray | None = None
        self.held = np.zeros(action_dim, dtype=bool)

    def hold(self, dims=()) -> None:
        """Keep the action dims ``dims`` at 0 in every sequence from now on (``()``: none)."""
        held = np.zeros(self.action_dim, dtype=bool)
        dims = np.asarray(dims, dtype=np.int64)
        if dims.size and (dims.min() < 0 or dims.max() >= self.action_dim):
            raise ValueError(f"held dims must lie in 0..{self.action_dim - 1}, got {dims}")
        held[dims] = True
        self.held = held
        self.mean[:, held] = 0.0

    def reset(self) -> None:
        """Forget the warm start (a new episode)."""
        self.mean = np.zeros_like(self.mean)

    def _sample(self, mean: np.ndarray, std: np.ndarray,
                proposals: np.ndarray | None = None) -> np.ndarray:
        cfg = self.config
        noise = self.rng.standard_normal((cfg.population, cfg.horizon, self.action_dim))
        sequences = np.clip(mean[None] + std[None] * noise, -1.0, 1.0)
        sequences[0] = np.clip(mean, -1.0, 1.0)  # the current plan is always scored too
        if proposals is not None:
            sequences[1 : 1 + len(proposals)] = np.clip(proposals, -1.0, 1.0)
        sequences[..., self.held] = 0.0
        return sequences  # (K, H, A)

    def _check_proposals(self, proposals: np.ndarray | None) -> np.ndarray | None:
        if proposals is None:
            return None
        proposals = np.asarray(proposals, dtype=np.float64)
        cfg = self.config
        if (proposals.ndim != 3 or proposals.shape[1:] != (cfg.horizon, self.action_dim)
                or not 1 <= len(proposals) < cfg.population):
            raise ValueError(
                f"proposals must be (n, {cfg.horizon}, {self.action_dim}) with 1 <= n < "
                f"population {cfg.population}, got {proposals.shape}"
            )
        if not np.all(np.isfinite(proposals)):
            raise ValueError("proposals must be finite")
        return proposals

    def _score(self, scorer: Scorer, sequences: np.ndarray) -> np.ndarray:
        returns = np.asarray(scorer(sequences), dtype=np.float64)
        if returns.shape != (len(sequences),) or not np.all(np.isfinite(returns)):
            raise ValueError(f"scorer must return ({len(sequences)},) finite returns, got {returns}")
        return returns

    def plan(self, scorer: Scorer, proposals: np.ndarray | None = None) -> np.ndarray:
        """The action (A,) to take now; keeps the rest of the plan for the next call.
        ``proposals`` (n, horizon, A): sequences scored in the first iteration too."""
        best = self._optimise(scorer, self._check_proposals(proposals))
        self.mean = np.concatenate([self.mean[1:], np.zeros((1, self.action_dim))])
        return best[0].astype(np.float32)

    def next_action(self) -> np.ndarray:
        """The plan's next action without re-planning (MPC that replans every k steps)."""
        action = np.clip(self.mean[0], -1.0, 1.0).astype(np.float32)
        self.mean = np.concatenate([self.mean[1:], np.zeros((1, self.action_dim))])
        return action

    def _optimise(self, scorer: Scorer, proposals: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


class CEM(_Planner):
    def _optimise(self, scorer: Scorer, proposals: np.ndarray | None) -> np.ndarray:
        cfg = self.config
        mean, std = self.mean.copy(), np.full_like(self.mean, cfg.init_std)
        best_seq, best_ret = mean, -np.inf
        for i in range(cfg.iterations):
            sequences = self._sample(mean, std, proposals if i == 0 else None)
            returns = self._score(scorer, sequences)
            elite = sequences[np.argsort(returns)[-cfg.elites:]]  # (E, H, A)
            mean = cfg.momentum * mean + (1 - cfg.momentum) * elite.mean(axis=0)
            std = np.maximum(elite.std(axis=0), cfg.min_std)
            if returns.max() > best_ret:
                best_ret, best_seq = float(returns.max()), sequences[int(returns.argmax())]
            self.last_returns = returns
        self.mean = mean
        return best_seq


class MPPI(_Planner):
    """MPPI weighted over the elites, as TD-MPC2 plans (over all samples the few best dominate
    and the estimate is as noisy as the best sample; measured on the toy test)."""

    def _optimise(self, scorer: Scorer, proposals: np.ndarray | None) -> np.ndarray:
        cfg = self.config
        mean, std = self.mean.copy(), np.full_like(self.mean, cfg.init_std)
        for i in range(cfg.iterations):
            sequences = self._sample(mean, std, proposals if i == 0 else None)
            returns = self._score(scorer, sequences)
            elite = np.argsort(returns)[-cfg.elites:]
            weights = np.exp((returns[elite] - returns[elite].max()) / cfg.temperature)
            weights /= weights.sum()
            update = np.einsum("k,kha->ha", weights, sequences[elite])
            spread = np.einsum("k,kha->ha", weights, (sequences[elite] - update[None]) ** 2)
            mean = cfg.momentum * mean + (1 - cfg.momentum) * update
            std = np.maximum(np.sqrt(spread), cfg.min_std)
            self.last_returns = returns
        self.mean = mean
        return np.clip(mean, -1.0, 1.0)


PLANNERS = {"cem": CEM, "mppi": MPPI}


def make_planner(name: str, action_dim: int, config: PlannerConfig | None = None,
                 seed: int = 0) -> _Planner:
    if name not in PLANNERS:
        raise ValueError(f"planner must be one of {sorted(PLANNERS)}, got {name!r}")
    return PLANNERS[name](action_dim, config, seed)
