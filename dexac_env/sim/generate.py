"""Synthetic data set generation: simulator episodes into the episode store.

Episode ``i`` is fully determined by ``(seed, i)`` (task, split, expert or play, scene, policy
noise), so the output does not depend on the number of workers or on resuming. Workers
render in separate processes; the parent alone writes to the store. A worker that dies (a crash
in the GL stack) restarts the pool for the episodes not yet written, up to ``MAX_POOL_RESTARTS``
times; after that the run stops, and the same command continues it. Test episodes draw their
task objects from colours never used in train/val (``scene.TEST_COLORS``); train/val episodes
draw the six training colours, or with ``train_colors="hues"`` a random shade of each object's
training colour name (``scene.random_shade``).
"""

from __future__ import annotations

import multiprocessing
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dexac_env.actions import FAMILY_SLICES
from dexac_env.sim.scene import HAND_SIDES

EPISODE_NAME = "sim_{index:06d}_{task}"


@dataclass(frozen=True)
class GenerateConfig:
    """Arguments of ``dexac sim generate``."""

    out: str
    """Episode store path (created if missing, appended to otherwise)."""
    tasks: tuple[str, ...] = ("touch", "push", "lift", "sweep", "bimanual")
    """Tasks, used round-robin over episode indices."""
    episodes: int = 300
    """Total number of episodes (indices 0..episodes-1)."""
    resolution: int = 64
    """Square frame size in pixels."""
    fps: int = 10
    """Frames per second of the stored episodes (= env control rate)."""
    frames: int = 32
    """Frames per episode (the first is the reset frame)."""
    workers: int = 2
    """Rendering processes (1 = render in this process)."""
    seed: int = 0
    """Data set seed."""
    play_fraction: float = 0.15
    """Fraction of episodes driven by random play motion instead of the task expert."""
    one_hand_play: float = 0.0
    """Fraction of the play episodes in which one hand (left or right, at random) holds its
    resting pose while the other plays (``PlayPolicy(still=...)``)."""
    hover_fraction: float = 0.0
    """Fraction of the touch tasks' expert episodes whose named hand hovers around the named
    object instead (``HoverPolicy``: planner-like motion near the object, E23)."""
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    train_colors: str = "train"
    """Train/val object colours: "train" (the six fixed colours) or "hues" (random shades)."""

    def __post_init__(self) -> None:
        from dexac_env.sim.tasks import TASK_NAMES

        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASK_NAMES}, got {self.tasks}")
        if self.episodes < 1 or self.frames < 2 or self.workers < 1:
            raise ValueError(
                "episodes >= 1, frames >= 2 and workers >= 1 are required, got "
                f"episodes={self.episodes}, frames={self.frames}, workers={self.workers}"
            )
        if (
            not 0 <= self.val_fraction + self.test_fraction < 1
            or not 0 <= self.play_fraction <= 1
            or not 0 <= self.one_hand_play <= 1
            or not 0 <= self.hover_fraction <= 1
        ):
            raise ValueError("fractions must lie in [0, 1] with val + test < 1")
        if self.train_colors not in ("train", "hues"):
            raise ValueError(f"train_colors must be 'train' or 'hues', got {self.train_colors!r}")


@dataclass(frozen=True)
class EpisodePlan:
    index: int
    name: str
    task: str
    split: str
    mode: str  # "expert", "play" or "hover" (touch only)
    env_seed: int
    policy_seed: int
    color_split: str  # the simulator's colour split: "test", or GenerateConfig.train_colors
    still_hand: str | None = None  # play only: the hand that holds its resting pose


def plan_episode(config: GenerateConfig, index: int) -> EpisodePlan:
    """Everything random about episode ``index``, derived from (seed, index) only."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, index]))
    task = config.tasks[index % len(config.tasks)]
    draw = rng.random()
    split = (
        "test"
        if draw < config.test_fraction
        else "val"
        if draw < config.test_fraction + config.val_fraction
        else "train"
    )
    mode = "play" if rng.random() < config.play_fraction else "expert"
    env_seed, policy_seed = (int(s) for s in rng.integers(0, 2**31 - 1, 2))
    color_split = "test" if split == "test" else config.train_colors
    still_hand = None
    # drawn after everything above, and only when asked for, so that a store generated without
    # one-hand play keeps every plan it had
    if mode == "play" and config.one_hand_play > 0 and rng.random() < config.one_hand_play:
        still_hand = HAND_SIDES[int(rng.integers(2))]
    # drawn last, and only when asked for, for the same reason
    if mode == "expert" and task == "touch" and config.hover_fraction > 0 \
            and rng.random() < config.hover_fraction:
        mode = "hover"
    return EpisodePlan(
        index,
        EPISODE_NAME.format(index=index, task=task),
        task,
        split,
        mode,
        env_seed,
        policy_seed,
        color_split,
        still_hand,
    )


_ENVS: dict[tuple, Any] = {}  # per worker process: one env per (task, resolution, fps, split)


def render_episode(plan: EpisodePlan, resolution: int, fps: int, frames: int) -> dict[str, Any]:
    """Run one episode in the simulator; returns the arrays and attributes to store."""
    from dexac_env.sim.env import DexACSimEnv
    from dexac_env.sim.experts import HoverPolicy, PlayPolicy, ScriptedExpert

    color_split = plan.color_split
    key = (plan.task, resolution, fps, color_split)
    if key not in _ENVS:
        _ENVS[key] = DexACSimEnv(
            task=plan.task, resolution=resolution, fps=fps, color_split=color_split
        )
    env = _ENVS[key]
    obs, info = env.reset(seed=plan.env_seed)
    rng = np.random.default_rng(plan.policy_seed)
    policy = (
        ScriptedExpert(env, rng) if plan.mode == "expert"
        else HoverPolicy(env, rng) if plan.mode == "hover"
        else PlayPolicy(env, rng, plan.still_hand)
    )
    record: dict[str, list] = {
        k: []
        for k in ("rgb", "action", "command", "kp2", "vis", "kp3", "lm2", "lmvis", "reward", "success")
    }

    def keep(obs, info, command, reward):
        record["rgb"].append(obs["image"])
        record["action"].append(obs["proprio"])
        record["command"].append(command)
        record["kp2"].append(info["keypoints_2d"])
        record["vis"].append(info["keypoints_visible"])
        record["kp3"].append(info["keypoints_3d"])
        record["lm2"].append(info["landmarks_2d"])
        record["lmvis"].append(info["landmarks_visible"])
        record["reward"].append(reward)
        record["success"].append(info["success"])

    keep(obs, info, obs["proprio"], info["reward"])
    for _ in range(frames - 1):
        command = policy.act()
        obs, reward, _, _, info = env.step(command)
        keep(obs, info, command, reward)
    return {
        "plan": plan,
        "rgb": np.stack(record["rgb"]),
        "action": np.stack(record["action"]).astype(np.float32),
        "keypoints_2d": np.stack(record["kp2"]).astype(np.float32),
        "keypoints_visible": np.stack(record["vis"]).astype(bool),
        "extra": {
            "keypoints_3d": np.stack(record["kp3"]).astype(np.float32),
            "landmarks_2d": np.stack(record["lm2"]).astype(np.float32),
            "landmarks_visible": np.stack(record["lmvis"]).astype(bool),
            "command": np.stack(record["command"]).astype(np.float32),
            "reward": np.asarray(record["reward"], dtype=np.float32),
            "success": np.asarray(record["success"], dtype=bool),
        },
        "attrs": {
            "task": plan.task,
            "description": info["task_description"],
            "fps": fps,
            "source": "sim",
            "split": plan.split,
            "intrinsics": info["intrinsics"].tolist(),
            "mode": plan.mode,
            **({"still_hand": plan.still_hand} if plan.still_hand else {}),
            "env_seed": plan.env_seed,
            "policy_seed": plan.policy_seed,
            "color_split": color_split,
            "final_success": bool(record["success"][-1]),
        },
    }


def named_object_start(attrs: dict[str, Any]) -> np.ndarray:
    """Where a stored simulator episode's named object (the task's target) stood at its first
    frame: its centre (3,) float32 in the episode frame (the first camera pose, the frame of
    the stored poses), recovered by resetting the simulator with the episode's ``env_seed``,
    ``task`` and ``color_split`` attributes (a reset draws the same scene; nothing is
    stepped). The stores keep no object poses; ~30 resets/s here."""
    from dexac_env.actions import points_in_frame

    env = _reset_to(attrs)
    return points_in_frame(env.object_start[env.task_spec.target], env.reference_pose)


def named_object_radius(attrs: dict[str, Any]) -> float:
    """The named object's mean half extent (m, ``ObjectSpec.mean_half_extent``), recovered
    as :func:`named_object_start` recovers its place."""
    env = _reset_to(attrs)
    return env.task_spec.layout.objects[env.task_spec.target].mean_half_extent


MAX_POOL_RESTARTS = 3  # worker deaths survived in one run, each restarting the pool
_SCENES: dict[tuple, list] = {}  # (task, color_split) -> [env, env_seed of its last reset]


def _reset_to(attrs: dict[str, Any]) -> Any:
    """A simulator reset to a stored episode's first state (one env per task and split)."""
    from dexac_env.sim.env import DexACSimEnv

    missing = [k for k in ("env_seed", "task") if k not in attrs]
    if missing:
        raise ValueError(f"not a simulator episode: no {missing} attribute")
    key, seed = (attrs["task"], attrs.get("color_split", "train")), int(attrs["env_seed"])
    if key not in _SCENES:
        _SCENES[key] = [DexACSimEnv(task=key[0], resolution=64, fps=10, color_split=key[1]), None]
    scene = _SCENES[key]
    if scene[1] != seed:  # nothing steps these envs: a second call for an episode skips it
        scene[0].reset(seed=seed)
        scene[1] = seed
    return scene[0]


def _render_job(job: tuple[EpisodePlan, int, int, int]) -> dict[str, Any]:
    return render_episode(*job)


def _results(jobs: list, workers: int, job=_render_job) -> Iterator[dict[str, Any]]:
    """``job`` of each of ``jobs``, in order. A worker that dies raises ``BrokenProcessPool``."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(job, jobs)
        return
    # concurrent.futures rather than multiprocessing.Pool: when a worker dies (a segfault in
    # libc under the GL stack, once in ~3,000 episodes here), Pool.imap waits forever, while the
    # executor breaks with BrokenProcessPool. spawn: each worker makes its own GL context;
    # nothing GL-related is inherited.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(job, jobs)


def family_variance(mean_std: np.ndarray) -> dict[str, float]:
    """Mean per-dimension variance of raw actions for each family (positions vs rotations)."""
    std = np.asarray(mean_std)
    out = {}
    for family, slices in FAMILY_SLICES.items():
        dims = np.concatenate([np.arange(s.start, s.stop) for s in slices])
        if family == "finger":
            out["finger_tip_xyz"] = float(np.mean(std[dims] ** 2))
            continue
        pos = np.concatenate([np.arange(s.start, s.start + 3) for s in slices])
        rot = np.setdiff1d(dims, pos)
        out[f"{family}_pos"] = float(np.mean(std[pos] ** 2))
        out[f"{family}_rot6d"] = float(np.mean(std[rot] ** 2))
    return out


def generate(config: GenerateConfig, progress: bool = True) -> dict[str, Any]:
    """Generate (or complete) the data set; returns a summary (counts, timing, variances)."""
    from tqdm import tqdm

    from dexac_env.replay.store import EpisodeStore

    start = time.perf_counter()
    store = EpisodeStore.create(config.out, exist_ok=True)
    plans = [plan_episode(config, i) for i in range(config.episodes)]
    todo = [p for p in plans if not store.has_episode(p.name)]
    successes: dict[str, list[bool]] = {}
    restarts, written = 0, set()
    with tqdm(total=len(todo), desc="sim episodes", unit="ep", disable=not progress) as bar:
        while True:  # each episode is a pure function of its plan: a re-render is identical
            jobs = [(p, config.resolution, config.fps, config.frames)
                    for p in todo if p.name not in written]
            try:
                for result in _results(jobs, config.workers):
                    plan = result["plan"]
                    store.write_episode(
                        plan.name,
                        result["rgb"],
                        result["action"],
                        result["keypoints_2d"],
                        result["keypoints_visible"],
                        attrs=result["attrs"],
                        extra=result["extra"],
                    )
                    if plan.mode == "expert":
                        successes.setdefault(plan.task, []).append(
                            result["attrs"]["final_success"])
                    written.add(plan.name)
                    bar.update(1)
                break
            except BrokenProcessPool as err:
                restarts += 1
                done = len(plans) - len(todo) + len(written)
                if restarts > MAX_POOL_RESTARTS:
                    raise RuntimeError(
                        f"sim generate: a worker died {restarts} times; {done} of "
                        f"{len(plans)} episodes are in {config.out}. Run the same command "
                        "again to continue from there"
                    ) from err
                warnings.warn(f"sim generate: a worker died ({err}); restarting the pool for "
                              f"the {len(plans) - done} episodes left", stacklevel=2)
    stats = store.compute_action_stats()
    elapsed = time.perf_counter() - start
    return {
        "config": asdict(config),
        "written": len(todo),
        "skipped": len(plans) - len(todo),
        "seconds": round(elapsed, 2),
        "frames_per_second": round(len(todo) * config.frames / max(elapsed, 1e-9), 2),
        "splits": {s: sum(p.split == s for p in plans) for s in ("train", "val", "test")},
        "modes": {m: sum(p.mode == m for p in plans) for m in ("expert", "play", "hover")},
        "expert_success": {t: round(float(np.mean(v)), 3) for t, v in sorted(successes.items())},
        "action_variance": family_variance(stats.std),
    }
