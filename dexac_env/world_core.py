"""The batched core of ``DexACWorld-v0``: N imagined episodes advanced by one sampler call.

The single env (:mod:`dexac_env.world_env`), the Gymnasium vector env
(:mod:`dexac_env.vector_env`) and the SB3 adapter (:mod:`dexac_env.sb3_vec_env`) are thin
layers over :class:`WorldCore`. The core knows the world model only through its facade
(``encode``, ``encode_semantic``, ``predict``, ``decode``, ``reward``).

Per environment it holds the context window of clean latent frames, the current 57-D pose,
the episode's semantic features and, if the reward needs one, the goal latent. Which episodes
it draws and what a window encodes to (computed once per episode window and cached) belong to
:class:`~dexac_env.episode_windows.EpisodeWindows`; the core only steps the batch.
:meth:`WorldCore.get_state` / :meth:`WorldCore.set_state` snapshot and restore all of it (and
the sampler's generators) as a typed :class:`CoreState`, so that planners can branch.

Action rows: one env step covers ``frames_per_step`` frames. Row 0 is the current pose; row j
(1..frames_per_step) is the linear interpolation ``pose + j / frames_per_step * (target -
pose)`` (6D rotations are interpolated linearly too, the model's Gram-Schmidt reads them back
as rotations). The rows go through :func:`world_model.rollout.rollout_latents`, the one
rollout loop of the project: when a sampler call predicts more frames than the step needs
(``action_frames`` of the model), the extra rows hold the target and the extra predicted frames
are dropped; when it predicts fewer, the sampler runs several times, each call's row 0 being
the previous call's last row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np
import torch

from dexac_env.actions import ACTION_DIM
from dexac_env.defaults import load_world_model, open_store
from dexac_env.episode_windows import EpisodeWindows
from dexac_env.replay.store import EpisodeStore
from dexac_env.rewards import Reward, RewardInput, action_scale, check_reward_output, make_reward
from world_model.rollout import rollout_latents

__all__ = ["CoreState", "WorldCore", "WorldEnvConfig", "load_world_model", "open_store",
           "select_state"]

OBS_MODES = ("rgb", "latent", "dict")


class EnvKwargs:
    """What the env configs share: built from ``gym.make``'s keywords, validated alike."""

    ENV_ID: ClassVar[str]

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Any:
        """Build from keyword arguments; unknown keys raise one ValueError naming them all."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.ENV_ID} argument(s) {unknown}; known: {known}")
        return cls(**kwargs)

    def check(self, *int_fields: str, allow_none: bool = True) -> None:
        """Validate ``obs_mode``, ``render_mode`` and the named fields: ints >= 1 (or None when
        ``allow_none``)."""
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        for name in int_fields:
            value = getattr(self, name)
            if (value is not None or not allow_none) and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {self.render_mode!r}")


@dataclass(frozen=True)
class WorldEnvConfig(EnvKwargs):
    """Configuration of the imagined environment (every key ``gym.make`` accepts).

    checkpoint: a ``WorldModel`` instance or a path to its ``.safetensors`` (None: the default).
    store: path to an episode store or an open ``EpisodeStore`` (None: the default store).
    task: only draw episodes whose ``task`` attribute equals this (None: all).
    split: only draw episodes of this split (None: all).
    sampling_steps: sampler steps per predicted chunk (None: the model's default).
    cfg_scale: classifier-free guidance scale (None: the model's default).
    frames_per_step: frames one ``step`` covers (the action is the pose of the last one);
        None: one frame, like the simulator's step (the tokenizer's temporal compression
        when it packs several frames per latent). ``action_frames`` is the fast setting: one
        sampler call per step and no predicted frame discarded.
    obs_mode: ``"rgb"`` (uint8 H, W, 3), ``"latent"`` (float32 C, h, w) or ``"dict"``.
    reward: ``"learned"``, ``"goal_image"``, ``"pose_tracking"`` or a callable (rewards.py).
    device: torch device the model runs on.
    render_mode: None or ``"rgb_array"``.
    compile: compile the world model's network with ``torch.compile`` (TorchInductor; on a
        CPU it needs a C++ compiler). The first step at each batch size pays the compile time
        (tens of seconds); a ``WorldModel`` instance passed as ``checkpoint`` is compiled in
        place. ``"frozen"``: compiled with TorchInductor's freezing, the weights (and, under
        bf16, their casts) folded into the compiled code as constants: faster on a CPU, a
        longer compile (~1.5 min per batch size here), and weights changed after the first
        step are not seen (inference only). docs/env.md gives the measured gain.
    precision: ``"fp32"`` or ``"bf16"`` (autocast of the sampler and decoder on the model's
        device; ``WorldModel.set_inference``).
    cuda_graphs: replay each sampler call as a CUDA graph, captured on the first step at each
        batch size (milliseconds, not a compile); needs ``device="cuda..."``. Like ``compile``,
        both apply to the model in place.
    """

    checkpoint: Any = None
    store: Any = None
    task: str | None = None
    split: str | None = None
    sampling_steps: int | None = None
    cfg_scale: float | None = None
    frames_per_step: int | None = None
    obs_mode: str = "rgb"
    reward: Any = "learned"
    device: str = "cpu"
    render_mode: str | None = None
    compile: bool | str = False
    precision: str = "fp32"
    cuda_graphs: bool = False

    ENV_ID: ClassVar[str] = "DexACWorld-v0"

    def __post_init__(self) -> None:
        self.check("frames_per_step", "sampling_steps")
        if not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"cuda_graphs must be True or False, got {self.cuda_graphs!r}")
        if not (isinstance(self.compile, bool) or self.compile == "frozen"):
            raise ValueError(f"compile must be True, False or 'frozen', got {self.compile!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.cfg_scale is not None and not self.cfg_scale > 0:
            raise ValueError(f"cfg_scale must be > 0 (1 = no guidance), got {self.cfg_scale}")
        if self.cuda_graphs and not str(self.device).startswith("cuda"):
            raise ValueError(f"cuda_graphs needs a CUDA device, got device={self.device!r}")


@dataclass
class CoreState:
    """A snapshot of a :class:`WorldCore` batch of N envs (tensors cloned; safe to keep and
    restore). Every field holds one entry per env, so :func:`select_state` can pick envs."""

    context: torch.Tensor  # (N, context_frames, C, h, w) clean latent frames
    pose: np.ndarray  # (N, 57) float64 current pose
    frame_index: np.ndarray  # (N,) int64 newest frame's index in its source episode
    episodes: list[tuple[str, int]]  # (episode name, start) per env
    generator_states: list[torch.Tensor]  # the sampler's generator state, one per env
    semantic_rows: list[Any]  # the model's semantic features, one per env
    goal_latent: torch.Tensor | None = None  # (N, C, h, w), only when the reward needs a goal


class WorldCore:
    """N imagined episodes stepped together. Indices in ``reset_envs`` pick which restart."""

    def __init__(self, model: Any, config: WorldEnvConfig, num_envs: int, store: EpisodeStore):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.model, self.config, self.num_envs, self.store = model, config, num_envs, store
        self.device = torch.device(config.device)
        if config.compile:
            model.compile_network(freeze=config.compile == "frozen")
        model.set_inference(config.precision, config.cuda_graphs)
        self.reward_fn: Reward = make_reward(config.reward)
        wm = model.config
        scale = wm.sampler.cfg_scale if config.cfg_scale is None else config.cfg_scale
        if scale != 1.0 and wm.conditioning.action_dropout == 0:
            warnings.warn(f"cfg_scale {scale} guides on the model's 'no action' tokens, which it "
                          "was not trained with (conditioning.action_dropout = 0): the guidance "
                          "direction is untrained", stacklevel=2)
        self.context_frames = int(wm.context_frames)
        self.chunk_frames = int(wm.chunk_frames)
        self.action_frames = int(wm.action_frames)
        self.temporal_compression = int(wm.temporal_compression)
        self.frames_per_step = config.frames_per_step or self.temporal_compression
        if self.frames_per_step % self.temporal_compression:
            raise ValueError(
                f"frames_per_step must be a multiple of the tokenizer's temporal compression "
                f"{self.temporal_compression}, got {self.frames_per_step}"
            )
        self.windows = EpisodeWindows(model, store, config.task, config.split, self.device,
                                      self.reward_fn.needs_goal)
        self.resolution = self.windows.resolution
        self.context_pixel_frames = self.windows.context_pixel_frames
        with torch.no_grad():
            probe = torch.zeros(1, 1, self.resolution, self.resolution, 3, dtype=torch.uint8)
            self.latent_shape = tuple(model.encode(probe.to(self.device)).shape[2:])  # (C, h, w)
        # One generator per env: predict() draws each env's noise from its own, so an env's
        # imagined episode depends on its seed only, not on the batch it runs in. They live on
        # the CPU whatever the model's device: on a GPU a batch's noise is then one copy, not
        # one kernel launch per env, and an episode's noise is the same on every device.
        self.generators = [torch.Generator() for _ in range(num_envs)]
        self.action_std = action_scale(store)
        # Batch state; filled by reset_envs.
        self.context = torch.zeros((num_envs, self.context_frames, *self.latent_shape),
                                   device=self.device)
        self.pose = np.zeros((num_envs, ACTION_DIM), dtype=np.float64)
        self.frame_index = np.zeros(num_envs, dtype=np.int64)
        self.episodes: list[tuple[str, int]] = [("", 0)] * num_envs
        self.semantic_rows: list[Any] = [None] * num_envs
        self.goal_latent: torch.Tensor | None = None  # (N, C, h, w) when the reward needs it
        self._semantic_batch: Any = None
        self._frames: np.ndarray | None = None  # decoded newest frames, (N, H, W, 3)

    # -- episodes ------------------------------------------------------------------------------

    def demo_actions(self, name: str) -> np.ndarray:
        """(L, 57) float64 stored actions of episode ``name``."""
        return self.windows.demo_actions(name)

    def candidates(self) -> list[str]:
        """Episode names this core draws from (task/split filters, long enough for a context)."""
        return self.windows.names

    def pick(self, rng: np.random.Generator, options: dict | None) -> tuple[str, int]:
        """An (episode, start) window: ``options["episode"]`` (name or index) and
        ``options["start"]`` if given, else a random episode from ``rng`` starting at frame 0."""
        return self.windows.pick(rng, options)

    def reset_envs(self, indices: list[int], picks: list[tuple[str, int]]) -> None:
        """Restart envs ``indices`` on the given (episode name, start) windows."""
        if len(indices) != len(picks):
            raise ValueError(f"{len(indices)} indices but {len(picks)} episode picks")
        if self.reward_fn.needs_goal and self.goal_latent is None:
            self.goal_latent = torch.zeros((self.num_envs, *self.latent_shape), device=self.device)
        for i, (name, start) in zip(indices, picks, strict=True):
            window = self.windows.load(name, int(start))
            self.context[i] = window.context
            self.pose[i] = window.pose
            self.frame_index[i] = window.frame_index
            self.episodes[i] = (name, int(start))
            self.semantic_rows[i] = window.semantic
            if self.goal_latent is not None:
                self.goal_latent[i] = window.goal
        self._semantic_batch = None
        self._frames = None

    def seed(self, indices: list[int], seeds: list[int]) -> None:
        """Seed the sampler generators of envs ``indices``."""
        for i, seed in zip(indices, seeds, strict=True):
            self.generators[i].manual_seed(int(seed))

    # -- stepping ------------------------------------------------------------------------------

    def _semantic(self) -> Any:
        if self._semantic_batch is None and self.semantic_rows[0] is not None:
            rows = self.semantic_rows
            self._semantic_batch = type(rows[0]).cat(rows) if len(rows) > 1 else rows[0]
        return self._semantic_batch

    def step_rows(self, targets: np.ndarray) -> np.ndarray:
        """Action rows (N, 1 + frames_per_step, 57) of one step: the current pose, then the
        linear interpolation towards ``targets`` (the last row is the target itself)."""
        k = self.frames_per_step
        fractions = np.arange(1, k + 1, dtype=np.float64) / k  # (k,)
        rows = self.pose[:, None] + fractions[None, :, None] * (targets - self.pose)[:, None]
        return np.concatenate([self.pose[:, None], rows], axis=1)

    def step(self, targets: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Advance every env to the (validated, (N, 57)) targets. Returns (reward (N,), latents).

        The rows go through :func:`world_model.rollout.rollout_latents`, the rollout loop the
        evaluation uses too (each sampler call keeps all it predicts; the last call's extra
        frames, which hold the target, are dropped)."""
        rows = torch.as_tensor(self.step_rows(targets), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            latents, self.context = rollout_latents(
                self.model, self.context, rows, self._semantic(), generator=self.generators,
                num_steps=self.config.sampling_steps, cfg_scale=self.config.cfg_scale,
            )  # (N, T_step, C, h, w)
        self.pose = targets.astype(np.float64).copy()
        self.frame_index = self.frame_index + self.frames_per_step
        self._frames = None
        reward = self.reward_fn(RewardInput(
            latents=latents, pose=self.pose, frame_index=self.frame_index,
            demo_actions=[self.demo_actions(name) for name, _ in self.episodes],
            goal_latent=self.goal_latent, action_std=self.action_std, model=self.model,
            semantic=self._semantic(),
        ))
        return check_reward_output(reward, self.num_envs, self.reward_fn.name), latents

    # -- observations --------------------------------------------------------------------------

    def frames(self) -> np.ndarray:
        """(N, H, W, 3) uint8 newest frame of every env, decoded once per step."""
        if self._frames is None:
            with torch.no_grad():
                decoded = self.model.decode(self.context[:, -1:])  # (N, T, H, W, 3)
            self._frames = decoded[:, -1].cpu().numpy()
        return self._frames

    def latents(self) -> np.ndarray:
        """(N, C, h, w) float32 newest latent frame of every env."""
        return self.context[:, -1].float().cpu().numpy().copy()

    def observations(self) -> Any:
        """Batched observations in ``config.obs_mode`` (decodes only when pixels are needed)."""
        if self.config.obs_mode == "latent":
            return self.latents()
        if self.config.obs_mode == "rgb":
            return self.frames().copy()
        return {"image": self.frames().copy(), "proprio": self.pose.astype(np.float32)}

    # -- planner support -----------------------------------------------------------------------

    def get_state(self) -> CoreState:
        """A snapshot of every env (restore with :meth:`set_state`)."""
        return CoreState(
            context=self.context.clone(), pose=self.pose.copy(),
            frame_index=self.frame_index.copy(), episodes=list(self.episodes),
            generator_states=[g.get_state() for g in self.generators],
            semantic_rows=list(self.semantic_rows),
            goal_latent=None if self.goal_latent is None else self.goal_latent.clone(),
        )

    def set_state(self, state: CoreState) -> None:
        """Restore a snapshot of a batch of the same size (see :func:`select_state`)."""
        if state.context.shape != self.context.shape:
            raise ValueError(
                f"state holds a batch of shape {tuple(state.context.shape)}, this core has "
                f"{tuple(self.context.shape)}; use select_state to pick envs"
            )
        self.context = state.context.clone()
        self.pose = state.pose.copy()
        self.frame_index = state.frame_index.copy()
        self.episodes = list(state.episodes)
        for generator, generator_state in zip(self.generators, state.generator_states, strict=True):
            generator.set_state(generator_state)
        self.goal_latent = None if state.goal_latent is None else state.goal_latent.clone()
        self.semantic_rows = list(state.semantic_rows)
        self._semantic_batch = None
        self._frames = None


def _take(value: Any, idx: list[int]) -> Any:
    """Entries ``idx`` of one per-env field (a copy)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[idx].clone()
    if isinstance(value, np.ndarray):
        return value[idx].copy()
    if isinstance(value, list):
        return [value[i] for i in idx]
    raise TypeError(f"a per-env state field must be a tensor, array or list, got {type(value)}")


def select_state(state: CoreState, indices: list[int] | np.ndarray) -> CoreState:
    """The sub-batch ``indices`` of a state (repeat an index to branch one env N ways). Works
    on subclasses (the vector env's state) too: every field holds one entry per env."""
    idx = [int(i) for i in indices]
    picked = {f.name: _take(getattr(state, f.name), idx) for f in fields(state)}
    picked["generator_states"] = [state.generator_states[i].clone() for i in idx]
    return replace(state, **picked)
