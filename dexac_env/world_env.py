"""``DexACWorld-v0``: the DexAC-WM world model as a Gymnasium environment."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from dexac_env.actions import ACTION_DIM, action_space, check_actions
from dexac_env.world_core import (
    OBS_MODES,
    CoreState,
    WorldCore,
    WorldEnvConfig,
    load_world_model,
    open_store,
)


def _one_torch_thread_after_fork() -> None:
    """A forked child must not enter the OpenMP pool its parent started (GNU OpenMP is not
    fork-safe: ``gym.make_vec(..., vectorization_mode="async")`` builds one env in the parent,
    then forks workers that wait forever in ``gomp_team_barrier_wait_end``). With one thread torch
    runs serially and never touches that pool; it is what torch's DataLoader workers do too, and
    the right count when every worker is its own process. Spawn/forkserver children are fresh
    interpreters and keep torch's default."""
    torch.set_num_threads(1)


os.register_at_fork(after_in_child=_one_torch_thread_after_fork)


def validate_action(action: Any, batch: int | None = None) -> np.ndarray:
    """Check one action (57,) or a batch (batch, 57): real finite numbers. Returns float64."""
    expected = (ACTION_DIM,) if batch is None else (batch, ACTION_DIM)
    array = np.asarray(action)
    if array.shape != expected:
        raise ValueError(f"action must have shape {expected}, got {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"action must be real numbers (float32), got dtype {array.dtype}")
    return check_actions(array, "action").astype(np.float64)


def render_fps(store: Any, frames_per_step: int = 1) -> float:
    """Steps per second that play an episode at its recorded speed (the store's ``fps`` attribute
    of its first episode; one step covers ``frames_per_step`` frames)."""
    names = store.episode_names()
    fps = float(store.episode(names[0]).attrs.get("fps", 10)) if names else 10.0
    return fps / frames_per_step


def observation_space(
    obs_mode: str, image_shape: tuple[int, int], latent_shape: tuple[int, ...] | None = None
) -> spaces.Space:
    """The observation space of ``DexACWorld-v0`` and ``DexACReplay-v0`` in ``obs_mode``:
    ``"rgb"`` uint8 (H, W, 3), ``"latent"`` float32 ``latent_shape`` (C, h, w), ``"dict"``
    ``{"image", "proprio"}``. proprio is the commanded pose, which may leave the action space
    (it is passed on as given): unbounded."""
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
    image = spaces.Box(0, 255, (*image_shape, 3), dtype=np.uint8)
    if obs_mode == "rgb":
        return image
    if obs_mode == "latent":
        if latent_shape is None:
            raise ValueError("obs_mode='latent' needs the latent shape (C, h, w)")
        return spaces.Box(-np.inf, np.inf, tuple(latent_shape), dtype=np.float32)
    proprio = spaces.Box(-np.inf, np.inf, (ACTION_DIM,), dtype=np.float32)
    return spaces.Dict({"image": image, "proprio": proprio})


def core_observation_space(core: WorldCore) -> spaces.Space:
    """:func:`observation_space` of one env of a :class:`WorldCore`."""
    shape = (core.resolution, core.resolution)
    return observation_space(core.config.obs_mode, shape, core.latent_shape)


class DexACWorldEnv(gym.Env):
    """
    ## Description

    An imagined egocentric episode of two dexterous hands. The DexAC-WM world model (a latent
    video diffusion transformer conditioned on the 57-D hand/head pose) predicts the next
    video frame(s) from a window of past latent frames, the commanded poses and the task
    text. The context comes from a stored episode; everything after it is imagined.

    ## Action Space

    `dexac_env.actions.action_space()`, the one action space of every env (the simulator
    `DexACSim-v0` included): `Box(57,)` float32, the target pose of the next frame
    (`dexac_env.actions`: head 0:9 and wrists 9:27 as position in metres plus 6D rotation in
    the episode frame, fingertips 27:57 in metres in their wrist's frame). Bounds are
    plausibility limits (2 m, 6D entries in [-1, 1], fingertips 0.3 m); values outside are
    passed on as given (the simulator clips them). Shape, dtype or non-finite errors raise ValueError.
    With `frames_per_step=k` one step covers k frames: the poses of the intermediate frames
    interpolate linearly from the current pose to the action, which is the pose of the k-th.

    ## Observation Space

    `obs_mode="rgb"`: the newest frame, uint8 `(H, W, 3)`. `"latent"`: the newest normalised
    latent frame, float32 `(C, h, w)`, channel-first (no decoding); it is a feature map, not an
    image: SB3's `check_env` warns that it looks like one, use `MlpPolicy` (which flattens it),
    or a custom features extractor with `normalize_images=False` (`CnnPolicy`'s NatureCNN needs
    36x36 pixels). `"dict"`: `{"image": (H, W, 3) uint8, "proprio": (57,) float32}` where
    proprio is the current commanded pose.

    ## Rewards

    Pluggable (`reward=`, see `dexac_env.rewards`): `"learned"` (default; the model's reward
    head on the predicted frames), `"goal_image"` (minus the latent RMS distance to the
    episode's last frame), `"pose_tracking"` (minus the mean squared z-score to the
    demonstration's pose for the same frame), or a callable.

    ## Starting State

    `reset` draws an episode from the store with `self.np_random` (or takes
    `options={"episode": name_or_index, "start": frame}`), encodes its first
    `context_frames` frames (from `start`, default 0) and the task text once (cached per
    episode window), and seeds the sampler's `torch.Generator` from `self.np_random`: the same
    seed gives the same imagined episode.

    ## Episode End

    The imagined world has no terminal state: `terminated` is always False. Truncation comes
    from `max_episode_steps` (registered default 64), applied by `gym.make`'s `TimeLimit`.

    ## Arguments

    `gym.make("DexACWorld-v0", checkpoint=None, store=None, task=None, split=None,
    sampling_steps=None, cfg_scale=None, frames_per_step=1, obs_mode="rgb", reward="learned",
    device="cpu", render_mode=None)`; see `WorldEnvConfig`. Unknown keys raise ValueError.
    `checkpoint` may be a `WorldModel` instance or a `.safetensors` path; `store` a path or an
    `EpisodeStore`. None means the shipped defaults (`dexac_env.defaults`).

    ## Rendering

    `render_mode="rgb_array"` returns the newest frame; `metadata["render_fps"]` is the store's
    frame rate divided by `frames_per_step`, so recorded videos play at the recorded speed.
    Gymnasium's `RecordVideo` and `ResizeObservation` need `pip install dexac-world[video]`.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # set from the store's fps

    def __init__(self, **kwargs: Any):
        self.config = WorldEnvConfig.from_kwargs(**kwargs)
        model = load_world_model(self.config.checkpoint, self.config.device)
        self.core = WorldCore(model, self.config, 1, open_store(self.config.store))
        self.render_mode = self.config.render_mode
        self.action_space = action_space()
        self.observation_space = core_observation_space(self.core)
        fps = render_fps(self.core.store, self.core.frames_per_step)
        self.metadata = {**self.metadata, "render_fps": fps}
        self._has_reset = False

    @property
    def model(self) -> Any:
        return self.core.model

    def _obs(self) -> Any:
        obs = self.core.observations()
        if isinstance(obs, dict):
            return {k: v[0] for k, v in obs.items()}
        return obs[0]

    def _info(self) -> dict[str, Any]:
        name, start = self.core.episodes[0]
        # `info["episode"]` is reserved for episode statistics (RecordEpisodeStatistics, Monitor)
        return {"episode_name": name, "start": start, "frame_index": int(self.core.frame_index[0])}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        pick = self.core.pick(self.np_random, options)
        self.core.reset_envs([0], [pick])
        self.core.seed([0], [int(self.np_random.integers(2**63 - 1))])
        self._has_reset = True
        return self._obs(), self._info()

    def step(self, action: Any):
        if not self._has_reset:
            raise RuntimeError("call reset() before step()")
        target = validate_action(action)
        reward, _ = self.core.step(target[None])
        return self._obs(), float(reward[0]), False, False, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.core.frames()[0].copy()

    # -- planner support -----------------------------------------------------------------------

    def get_state(self) -> CoreState:
        """Snapshot of the imagined episode (restore with :meth:`set_state`)."""
        return self.core.get_state()

    def set_state(self, state: CoreState) -> None:
        self.core.set_state(state)
