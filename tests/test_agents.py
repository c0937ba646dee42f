"""agents/: delta-pose actions, wrappers (both env checkers, both envs), planners, PPO, MPC.

World-model tests use the shipped default checkpoint and store with 1 sampler step, loaded once.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from agents.actions import ACTION_SETS, DeltaPose, StepLimits, action_dim, synergy_postures
from agents.envs import AgentEnvConfig, make_env, make_vec_env
from agents.features import ImageProprioExtractor
from agents.planners import CEM, MPPI, PlannerConfig
from agents.reward_eval import head_scores
from agents.wrappers import SuccessTermination
from dexac_env.actions import LEFT_FINGERS, LEFT_WRIST, RIGHT_WRIST


@pytest.fixture(scope="module")
def world_model():
    from dexac_env.defaults import load_world_model

    return load_world_model(None)


def config(kind: str, model=None, **kwargs) -> AgentEnvConfig:
    world = {"checkpoint": model, "split": None, "sampling_steps": 1} if kind == "world" else {}
    return AgentEnvConfig(kind=kind, **({"max_episode_steps": 3} | world | kwargs))


# -- actions -----------------------------------------------------------------------------------

def test_zero_action_holds_the_pose_and_steps_respect_the_limits():
    rng = np.random.default_rng(0)
    start = rng.normal(0, 0.1, (2, 57))
    start[:, LEFT_WRIST.start + 3 : LEFT_WRIST.stop] = [1, 0, 0, 0, 1, 0]
    limits = StepLimits()
    delta = DeltaPose(2, "full", limits)
    delta.reset(start)
    np.testing.assert_allclose(delta(np.zeros((2, action_dim("full")))), start, atol=1e-12)
    moved = delta(np.ones((2, action_dim("full"))) * 5.0)  # clipped to 1
    step = moved[:, LEFT_WRIST.start : LEFT_WRIST.start + 3] - start[:, LEFT_WRIST.start : LEFT_WRIST.start + 3]
    np.testing.assert_allclose(step, limits.wrist_pos)
    np.testing.assert_allclose(moved[:, LEFT_FINGERS] - start[:, LEFT_FINGERS], limits.finger)


def test_workspace_and_grasp_synergy_bounds():
    delta = DeltaPose(1, "wrist_pos_grasp")
    start = np.zeros((1, 57))
    delta.reset(start)
    for _ in range(100):
        pose = delta(np.ones((1, delta.dim)))
    assert np.all(np.abs(pose[0, RIGHT_WRIST.start : RIGHT_WRIST.start + 3]) <= StepLimits().workspace + 1e-12)
    np.testing.assert_allclose(pose[0, LEFT_FINGERS], synergy_postures()["left_fist"].reshape(15))
    assert {action_dim(name) for name in ACTION_SETS} == {48, 14, 8}


# -- wrappers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sim", "world"])
def test_wrapped_envs_pass_both_checkers_without_warnings(kind, world_model):
    env = make_env(config(kind, world_model))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the one note Gymnasium's checker gives for any wrapper: it is the wrapper we check
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    env.close()


def test_both_envs_share_spaces(world_model):
    sim, world = make_env(config("sim")), make_env(config("world", world_model))
    assert sim.observation_space == world.observation_space
    assert sim.action_space == world.action_space
    sim.close()
    world.close()


def test_vec_env_restarts_delta_tracking_after_autoreset():
    venv = make_vec_env(config("sim", max_episode_steps=2), num_envs=2)
    first = venv.reset()
    for _ in range(2):
        _, _, dones, infos = venv.step(np.ones((2, venv.action_space.shape[0]), np.float32))
    assert dones.all() and infos[0]["terminal_observation"]["image"].shape[0] == 3
    # back at the new episode's first pose, not where the old episode's actions led
    np.testing.assert_allclose(venv.delta.state.pose, venv.delta.state.start)
    assert first["image"].dtype == np.uint8
    venv.close()


def test_success_termination_ends_an_imagined_episode(world_model):
    env = SuccessTermination(make_env(config("world", world_model)).env, threshold=1e-9)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(env.unwrapped.core.pose[0].astype(np.float32))
    assert terminated and 0.0 <= info["success_prob"] <= 1.0


# -- learning and planning -----------------------------------------------------------------------

def test_ppo_trained_in_imagination_continues_in_the_simulator(world_model):
    world = make_vec_env(config("world", world_model), num_envs=2)
    model = PPO("MultiInputPolicy", world, n_steps=4, batch_size=8, n_epochs=1,
                policy_kwargs={"features_extractor_class": ImageProprioExtractor}, seed=0)
    model.learn(8)
    sim = make_vec_env(config("sim"), num_envs=2)
    model.set_env(sim)  # same spaces: the policy moves to the real env unchanged
    model.learn(8, reset_num_timesteps=False)
    assert model.num_timesteps >= 16
    world.close()
    sim.close()


@pytest.mark.parametrize("planner_class", [CEM, MPPI])
def test_planner_finds_the_known_optimum_of_a_toy_model(planner_class):
    target = np.array([0.6, -0.3, 0.1])

    def scorer(sequences):  # (K, H, A): best sequence repeats the target
        return -((sequences - target) ** 2).sum(axis=(1, 2))

    cfg = PlannerConfig(horizon=3, population=64, iterations=8, elites=8, temperature=0.5)
    planner = planner_class(3, cfg, seed=0)
    action = planner.plan(scorer)
    np.testing.assert_allclose(action, target, atol=0.1)


@pytest.mark.parametrize("planner_class", [CEM, MPPI])
def test_a_proposal_at_the_optimum_is_kept_where_random_samples_miss_it(planner_class):
    target = np.array([0.9, -0.9, 0.9])

    def scorer(sequences):  # a narrow peak: random samples around 0 never reach it
        return np.exp(-((sequences - target) ** 2).sum(axis=(1, 2)) / 1e-3)

    cfg = PlannerConfig(horizon=2, population=8, iterations=2, elites=2, init_std=0.1,
                        temperature=0.01, min_std=1e-3)
    blind = planner_class(3, cfg, seed=0).plan(scorer)
    assert np.abs(blind - target).max() > 0.5
    guided = planner_class(3, cfg, seed=0).plan(scorer, proposals=np.tile(target, (1, 2, 1)))
    np.testing.assert_allclose(guided, target, atol=0.05)
    with pytest.raises(ValueError, match="proposals"):
        planner_class(3, cfg).plan(scorer, proposals=np.zeros((8, 2, 3)))  # all K: none left


def test_policy_prior_proposes_its_imagined_rollouts_to_the_planner(world_model):
    from agents.branching import WorldBranch
    from agents.evaluate import run_episode
    from agents.policies import MPCPolicy

    branch = WorldBranch(config("world", world_model), population=4)
    branch.sync_frames(np.zeros((branch.core.context_pixel_frames, 64, 64, 3), np.uint8),
                       _delta_at(np.tile(world_model.action_mean, (1, 1))), "touch", seed=0)
    seen = []

    def act(obs):  # a policy that pushes the first action dimension up, whatever it sees
        seen.append(obs)
        return np.tile(np.r_[0.5, np.zeros(branch.delta.dim - 1)], (len(obs["proprio"]), 1))

    sequences = branch.policy_sequences(act, horizon=3)
    assert sequences.shape == (4, 3, branch.delta.dim)
    assert np.all(sequences[:, :, 0] == 0.5) and np.all(sequences[:, :, 1:] == 0)
    assert seen[0]["image"].shape == (4, 3, 64, 64) and seen[0]["proprio"].shape == (4, 57)
    assert not np.allclose(seen[0]["proprio"], seen[-1]["proprio"])  # the commanded pose moved

    class Prior:  # the SB3 predict interface
        def predict(self, obs, deterministic=False):
            return act(obs), None

    cfg = PlannerConfig(horizon=2, population=4, iterations=1, elites=2)
    planner = CEM(branch.delta.dim, cfg)
    scored, score = [], planner._score
    planner._score = lambda scorer, sequences: score(scorer, scored.append(sequences) or sequences)
    policy = MPCPolicy(planner, branch, "mpc_world_prior", prior=Prior(), prior_count=2)
    env = make_env(config("sim", max_episode_steps=1))
    run_episode(env, policy, seed=3)
    env.close()
    # samples 1 and 2 of the first iteration are the prior's; the others are the planner's
    assert np.all(scored[0][1:3, :, 0] == 0.5) and np.all(scored[0][1:3, :, 1:] == 0)
    assert not np.all(scored[0][3, :, 0] == 0.5)
    with pytest.raises(ValueError, match="prior"):
        MPCPolicy(planner, branch, "x", prior=Prior(), prior_count=4)  # the whole population


@pytest.mark.parametrize("kind", ["sim", "world"])
def test_mpc_acts_in_the_simulator_planning_in_either_model(kind, world_model):
    from agents.branching import SimBranch, WorldBranch
    from agents.evaluate import run_episode
    from agents.policies import MPCPolicy

    cfg = PlannerConfig(horizon=2, population=4, iterations=1, elites=2)
    planner = CEM(action_dim("wrist_pos_grasp"), cfg)
    scorer = (SimBranch(config("sim")) if kind == "sim"
              else WorldBranch(config("world", world_model), population=4))
    env = make_env(config("sim", max_episode_steps=2))
    episode = run_episode(env, MPCPolicy(planner, scorer, f"mpc_{kind}"), seed=3)
    assert episode.poses.shape == (2, 57) and np.isfinite(episode.real_return)
    assert planner.last_returns is not None and planner.last_returns.shape == (4,)


def test_sim_branch_keeps_the_frames_each_sequence_renders():
    """With keep_frames, the branch's frames of a sequence are the frames the real env shows
    after each of its actions, from the same state (one step late or early would differ)."""
    from agents.branching import SimBranch

    wrapped = make_env(config("sim", task="touch"))
    wrapped.reset(seed=7)
    env, root_delta = wrapped.unwrapped, wrapped.delta.get_state()
    branch = SimBranch(config("sim", task="touch"), keep_frames=True)
    branch.sync(env.get_state(), root_delta)
    sequences = np.random.default_rng(0).uniform(-1, 1, (2, 3, branch.delta.dim))
    branch(sequences)
    assert branch.last_frames.shape[:2] == (2, 3) and branch.last_frames.dtype == np.uint8
    root, delta = env.get_state(), DeltaPose(1, branch.delta.action_set)
    for k in (1, 0):
        env.set_state(root)
        delta.set_state(root_delta)
        frames = [env.step(delta(a[None])[0].astype(np.float32))[0]["image"] for a in sequences[k]]
        np.testing.assert_array_equal(branch.last_frames[k], np.stack(frames))
    assert not np.array_equal(branch.last_frames[0, 0], branch.last_frames[0, 2])  # it moves
    assert SimBranch(config("sim", task="touch")).last_frames is None  # off by default


def test_named_hand_only_never_moves_the_hand_the_text_does_not_name():
    """The planner holds the unnamed hand's dims at 0 in every sampled sequence, so the
    simulator's unnamed wrist stays where the reset put it while the named hand plans."""
    from agents.actions import side_dims
    from agents.branching import SimBranch
    from agents.evaluate import run_episode
    from agents.policies import MPCPolicy
    from world_model.object_locator import hand_of

    assert hand_of("Touch the red ball with your left index finger.") == "left"
    assert hand_of("Push the red cube onto the white marker with your right hand.") == "right"
    assert hand_of("Push the red cube and the blue ball together with both hands.") is None
    assert list(side_dims("wrist_pos_grasp", "right")) == [3, 4, 5, 7]
    assert list(side_dims("wrists_grasp", "left")) == [0, 1, 2, 3, 4, 5, 12]

    cfg = PlannerConfig(horizon=2, population=6, iterations=2, elites=2)
    planner = CEM(action_dim("wrist_pos_grasp"), cfg, seed=1)
    scored, score = [], planner._score
    planner._score = lambda scorer, sequences: score(scorer, scored.append(sequences) or sequences)
    env = make_env(config("sim", task="touch", max_episode_steps=3))
    policy = MPCPolicy(planner, SimBranch(config("sim", task="touch")), "mpc_sim",
                       named_hand_only=True)
    _, info = env.reset(seed=5)
    named = hand_of(info["task_description"])
    other = "right" if named == "left" else "left"
    episode = run_episode(env, policy, seed=5)
    env.close()
    held, free = side_dims("wrist_pos_grasp", other), side_dims("wrist_pos_grasp", named)
    assert all(np.all(s[..., held] == 0) for s in scored)
    assert any(np.any(s[..., free] != 0) for s in scored)
    wrist = (RIGHT_WRIST if other == "right" else LEFT_WRIST).start
    moved = episode.poses[:, wrist:wrist + 3] - episode.poses[:1, wrist:wrist + 3]
    assert np.abs(moved).max() < 1e-6
    with pytest.raises(ValueError, match="held dims"):
        planner.hold([8])


def test_action_guidance_reaches_imagination_and_warns_without_trained_null_tokens(world_model):
    """`--cfg-scale` reaches the imagined step (a guided step differs from an unguided one from
    the same state and noise); the shipped default was trained without action dropout, so
    guiding it warns, and a scale <= 0 is refused."""
    from agents.branching import world_vector_env
    from dexac_env.world_core import WorldEnvConfig

    action = np.zeros((1, 57), np.float32)
    plain = world_vector_env(config("world", world_model), 1)
    with pytest.warns(UserWarning, match="action_dropout"):
        guided = world_vector_env(config("world", world_model, cfg_scale=3.0), 1)
    assert guided.core.config.cfg_scale == 3.0
    action[0] = plain.core.pose[0]  # hold the pose: only the guidance differs
    a, b = (venv.step(action)[0] for venv in (plain, guided))
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="cfg_scale"):
        WorldEnvConfig.from_kwargs(cfg_scale=0.0)


def test_precision_reaches_imagination(world_model):
    """`--precision bf16` runs the imagined step in bf16: from the same state and noise it
    differs from the fp32 step, but only by bf16's rounding; an fp32 env built after it on the
    same model runs in fp32 again."""
    from agents.branching import world_vector_env

    half = world_vector_env(config("world", world_model, precision="bf16"), 1)
    assert half.core.model.precision == "bf16"
    action = half.core.pose.astype(np.float32)
    b = half.step(action)[0]
    full = world_vector_env(config("world", world_model), 1)
    assert full.core.model.precision == "fp32"
    a = full.step(action)[0]
    assert not np.array_equal(a, b)
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()


def test_support_penalty_lowers_only_plans_that_leave_the_training_data(world_model):
    from agents.branching import WorldBranch

    branch = WorldBranch(config("world", world_model), population=2, support_penalty=1.0)
    inside = np.tile(world_model.action_mean, (2, 1))
    assert np.all(branch.outside_support(inside) == 0)
    far = inside.copy()
    far[1, RIGHT_WRIST.start] += 5 * world_model.action_std[RIGHT_WRIST.start]  # z = 5
    np.testing.assert_allclose(branch.outside_support(far), [0.0, 2.0])
    # plans from a pose outside the data (z = 5 on one dimension): holding it two steps costs
    # exactly 2 x (5 - 3); the imagined reward itself is the same with and without penalty
    branch.sync_frames(np.zeros((branch.core.context_pixel_frames, 64, 64, 3), np.uint8),
                       _delta_at(far[1:]), "touch", seed=0)
    hold = np.zeros((2, 2, branch.delta.dim), np.float32)
    penalised = branch(hold)
    branch.support_penalty = 0.0
    plain = branch(hold)
    np.testing.assert_allclose(penalised, plain - 4.0, atol=1e-6)
    with pytest.raises(ValueError, match="support_penalty"):
        WorldBranch(config("world", world_model), population=2, support_penalty=-1.0)


def test_view_penalty_counts_the_hand_keypoints_the_camera_cannot_see(world_model):
    from agents.branching import WorldBranch
    from dexac_env.sim.env import DexACSimEnv

    sim = DexACSimEnv(task="touch")
    _, info = sim.reset(seed=0)
    pose = sim.proprio()[None].astype(np.float64)  # a reached pose: hands in view
    branch = WorldBranch(config("world", world_model), population=2, view_penalty=1.0)
    with pytest.raises(ValueError, match="intrinsics"):
        branch.sync_frames(np.zeros((branch.core.context_pixel_frames, 64, 64, 3), np.uint8),
                           _delta_at(pose), "touch", seed=0)
    branch.sync_frames(np.zeros((branch.core.context_pixel_frames, 64, 64, 3), np.uint8),
                       _delta_at(pose), "touch", seed=0, intrinsics=info["intrinsics"])
    behind = pose.copy()
    behind[0, RIGHT_WRIST.start : RIGHT_WRIST.start + 3] = pose[0, :3]  # at the camera centre
    behind[0, LEFT_WRIST.start + 2] -= 5.0  # 5 m away along z: far out of the view cone
    seen = branch.out_of_view(np.concatenate([pose, behind]))
    assert seen[0] == 12 - info["keypoints_visible"].sum()  # the simulator's own visibility
    assert seen[1] > seen[0]
    sim.close()


def _delta_at(pose: np.ndarray):
    delta = DeltaPose(1, "wrist_pos_grasp")
    delta.reset(pose)
    return delta.get_state()


def test_imagined_returns_replay_a_simulator_episode(world_model):
    from agents.evaluate import imagined_returns, run_episode
    from agents.policies import RandomPolicy

    env = make_env(config("sim"))
    episodes = [run_episode(env, RandomPolicy(), seed) for seed in (0, 1)]
    returns, frames = imagined_returns(config("world", world_model), episodes)
    assert returns.shape == (2,) and np.all(np.isfinite(returns))
    assert frames.shape == (4, 64, 64, 3)


def test_reward_head_scores_are_perfect_for_a_perfect_head():
    truth = np.array([0, 0, 1, 1], bool)
    scores = head_scores({"prob": np.array([0.1, 0.2, 0.8, 0.9]), "true_success": truth,
                          "reward": np.array([0.0, 0.1, 0.9, 1.0]),
                          "true_reward": np.array([0.0, 0.1, 0.9, 1.0])})
    assert scores["success_auc"] == 1.0 and scores["success_f1"] == 1.0
    assert scores["reward_mse"] == 0.0


@pytest.mark.parametrize("split", ["test", "train"])
def test_agent_eval_judges_in_the_requested_object_colours(tmp_path, split):
    """`dexac agent eval --color-split`: the judged simulator's task texts name colours of that
    split (held-out colours by default), and each seed's text is in the JSON."""
    import json

    from dexac_env.cli import main
    from dexac_env.sim.scene import TEST_COLORS, TRAIN_COLORS

    out = tmp_path / "eval.json"
    args = ["agent", "eval", "--task", "touch", "--policy", "random", "--seeds", "3",
            "--max-episode-steps", "2", "--no-imagined", "--out", str(out)]
    assert main(args + (["--color-split", split] if split == "train" else [])) == 0
    rows = json.loads(out.read_text())["policies"][0]["per_seed"]
    colours = TRAIN_COLORS if split == "train" else TEST_COLORS
    assert len(rows) == 3
    for row in rows:
        named = [c for c in {**TRAIN_COLORS, **TEST_COLORS} if f" {c} " in row["text"]]
        assert named and named[0] in colours, row["text"]


# -- the objective audit -----------------------------------------------------------------------

def _audited_mpc(audit: bool, steps: int = 4):
    """`dexac agent eval`'s mpc_world with the contact objective read on imagined frames (the
    shipped locator and head), small enough for a test."""
    from agents.cli import build_policy
    from dexac_env.cli import build_parser

    args = build_parser().parse_args(
        ["agent", "eval", "--policy", "mpc_world", "--task", "touch", "--split", "",
         "--sampling-steps", "1", "--max-episode-steps", str(steps), "--planner", "cem",
         "--population", "4", "--horizon", "2", "--iterations", "2", "--replan-every", "2",
         "--view-penalty", "1.0", "--objective", "contact", "--contact-source", "imagined",
         "--approach", "above",
         "--reward-head", "dexac_env/assets/task_reward_touch_contact.safetensors",
         "--locator", "dexac_env/assets/object_locator_touch.safetensors"]
        + (["--audit"] if audit else []))
    args.split = None
    return build_policy("mpc_world", args), args


def test_objective_audit_changes_no_action_and_its_simulator_agrees_with_the_real_one(tmp_path):
    import json

    """The audit watches the planner without moving it (same poses with and without it), and
    the true return it gives the plan the planner carries out is what the real simulator paid
    over that window (a wrong restored state or a wrong reconstruction of the carried plan
    would differ)."""
    from agents.evaluate import run_episode

    plain, args = _audited_mpc(audit=False)
    audited, _ = _audited_mpc(audit=True)
    env = make_env(config("sim", max_episode_steps=4))
    reference = run_episode(env, plain, seed=1000)
    episode = run_episode(env, audited, seed=1000)
    np.testing.assert_array_equal(episode.poses, reference.poses)
    rows = audited.audit.rows
    assert [r["step"] for r in rows] == [0, 2]
    assert all(r["samples"] == 8 for r in rows)  # both CEM iterations' 4 samples
    # the real simulator's reward per step, replayed from the same seed
    sim = make_env(config("sim", max_episode_steps=4)).unwrapped
    sim.reset(seed=1000)
    rewards = [sim.step(pose.astype(np.float32))[1] for pose in episode.poses]
    for row in rows:
        window = sum(rewards[row["step"]:row["step"] + 2])
        assert row["carried"]["true_return"] == pytest.approx(window, abs=1e-9)
    # the imagined objective's first choice is CEM's best sequence, whose first action it took
    for row in rows:
        assert row["imagined"]["choice_true_return"] <= row["true_return"]["max"] + 1e-12
        assert -1.0 <= row["imagined"]["spearman"] <= 1.0 or np.isnan(row["imagined"]["spearman"])
    summary = audited.audit.summary()
    assert summary["replannings"] == 2
    assert set(summary["objectives"]) == {"imagined", "pixels_median", "true_place", "sim_frames"}
    # the planner's objective on the simulator's frames: the locator reads the true frames
    # about as well as the real one (~1 cm with the hands away from the object, E13)
    assert all(r["place_error_cm"]["sim_frames"] < 3.0 for r in rows)
    assert summary["place_error_cm"]["sim_frames_branches"][0] < 3.0
    halves = summary["by_half"]  # steps 0 and 2: one replanning in each half
    assert halves["first"]["replannings"] == halves["second"]["replannings"] == 1
    assert sum(b["replannings"] for b in summary["by_place_error"]) == 2
    from agents.audit import main as audit_main

    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert audit_main([str(tmp_path / "rows.jsonl")]) == 0
    assert audit_main([str(tmp_path / "rows.jsonl"), "--seed-range", "0", "1"]) == 1  # none
    from agents.audit import plot_audit

    plot_audit(rows, tmp_path / "audit.png")
    assert (tmp_path / "audit.png").stat().st_size > 10_000


def test_objective_audit_is_refused_where_no_imagined_objective_is_ranked():
    from agents.branching import SimBranch
    from agents.cli import build_audit

    _, args = _audited_mpc(audit=False)
    with pytest.raises(ValueError, match="--audit watches mpc_world"):
        build_audit(args, SimBranch(config("sim")))
    args.contact_source = "pixels"
    policy, _ = _audited_mpc(audit=False)
    with pytest.raises(ValueError, match="--audit watches mpc_world"):
        build_audit(args, policy.scorer)
