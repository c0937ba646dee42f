"""``dexac agent``: train, plan and evaluate policies in imagination and in the simulator.

    dexac agent train --env world --task touch --steps 4096 --out runs/agents/ppo_world
    dexac agent plan --model world --planner cem --task touch --seed 1000 --out plan.mp4
    dexac agent eval --task touch --seeds 20 --policy random --policy expert \
        --policy ppo_world=runs/agents/ppo_world/model.zip --policy mpc_world --policy mpc_sim \
        --out benchmarks/results/agents_touch.json
    dexac agent reward --store data/sim.zarr --split test

Registered through the ``dexac.commands`` entry point (agents imports dexac_env, never the
reverse). Heavy imports happen inside the subcommands.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

DEFAULT_EVAL_SEED = 1000  # held-out seeds start here (training draws from its own seed)
OBJECTIVES = ("learned", "goal_image", "task_head", "task_head_log", "contact")


def _env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="touch", help="simulator task / store episodes' task")
    p.add_argument("--action-set", default="wrist_pos_grasp",
                   help="full | wrists_grasp | wrist_pos_grasp (agents.actions.ACTION_SETS)")
    p.add_argument("--max-episode-steps", type=int, default=30)
    p.add_argument("--checkpoint", default=None, help="world model (default: shipped)")
    p.add_argument("--store", default=None, help="episodes that start imagination (default: shipped)")
    p.add_argument("--split", default="train", help="store split imagination starts from")
    p.add_argument("--sampling-steps", type=int, default=2, help="sampler steps per imagined chunk")
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="classifier-free guidance on actions (default: the model's; > 1 needs a "
                        "model trained with conditioning.action_dropout)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="the world model's inference precision: bf16 autocasts its sampler and "
                        "decoder (on a CPU with AMX a batched step runs 1.2-1.6x fp32's at the "
                        "same quality; without bf16 units, e.g. AVX2-only AMD, several times slower: "
                        "it warns; docs/experiments.md E24)")


def _planner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--color-split", choices=("test", "train"), default="test",
                   help="object colours of the judged simulator: 'test' (colours no training "
                        "episode shows: the figures of docs/agents.md) or 'train' (a diagnostic: "
                        "the colours the world model was trained on)")
    p.add_argument("--planner", choices=("cem", "mppi"), default="cem")
    p.add_argument("--objective", choices=OBJECTIVES, default="learned",
                   help="imagination's objective (the simulator plans on its true reward): the "
                        "world model's reward head, a goal frame, or the task reward head of "
                        "--reward-head (its reward, or its log-reward)")
    p.add_argument("--reward-head", default=None,
                   help="task reward head (training/train_task_reward.py) for the task_head "
                        "objectives; eval also scores imagined returns with it")
    p.add_argument("--contact-source", choices=("pixels", "imagined", "true"), default="pixels",
                   help="--objective contact: where the named object is read: 'pixels' (--locator "
                        "on the real frame at each replanning), 'imagined' (--locator on every "
                        "imagined frame of every branch) or 'true' (the simulator's state: a "
                        "privileged diagnostic)")
    p.add_argument("--clearance", type=float, default=0.0, metavar="METRES",
                   help="--objective contact: keep the hands' other points this far beyond the "
                        "object's located surface (0: off)")
    p.add_argument("--named-hand-only", action="store_true",
                   help="MPC: the planner never moves the hand the task text does not name (its "
                        "action dims held at 0; both hands plan when the text names neither or both)")
    p.add_argument("--hold-other", type=float, default=0.0,
                   help="--objective contact: cost of moving the hand the text does not name "
                        "(per reward length scale of wrist motion; 0: off)")
    p.add_argument("--approach", choices=("any", "above"), default="any",
                   help="--objective contact: 'above' aims at the object's top and charges the "
                        "fingertip for going below it (the table's up: the locator's, or the "
                        "simulator's for --contact-source true)")
    p.add_argument("--fuse", choices=("last", "median"), default="last",
                   help="--objective contact: the place scored against: the last reading, or the "
                        "median of the episode's readings so far")
    p.add_argument("--pool", choices=("branch", "median"), default="branch",
                   help="--contact-source imagined: score each branch against the place its own "
                        "imagined frame shows ('branch'), or every branch against the median of "
                        "the branches' readings of that step ('median'; with --fuse median, of "
                        "every such reading of the episode)")
    p.add_argument("--imagined-colour", choices=("text", "drawn"), default="text",
                   help="--contact-source imagined: look on the imagined frames for the colour "
                        "the text names, or for the colour the world model draws the object in "
                        "(read on its drawing of the real frame where the object is located)")
    p.add_argument("--locator", default=None, metavar="LOCATOR.safetensors",
                   help="the object locator (training/train_locator.py) for --contact-source pixels "
                        "or imagined")
    p.add_argument("--horizon", type=int, default=3)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--replan-every", type=int, default=1,
                   help="env steps between plans (in between, the rest of the last plan)")
    p.add_argument("--support-penalty", type=float, default=0.0,
                   help="imagination: per-step penalty weight for poses outside the world "
                        "model's training data (|z| > 3 per dimension); 0 = off")
    p.add_argument("--prior", default=None, metavar="MODEL.zip",
                   help="mpc_world: an SB3 policy whose imagined rollouts are part of the planner's "
                        "first samples at each replanning (TD-MPC2's policy prior)")
    p.add_argument("--prior-count", type=int, default=None,
                   help="how many of the first samples the prior gives (default: population / 2)")
    p.add_argument("--view-penalty", type=float, default=0.0,
                   help="imagination: per-step penalty weight per hand keypoint the commanded "
                        "pose puts outside the camera's view; 0 = off")


def register(subparsers) -> None:
    agent = subparsers.add_parser("agent", help="policies and planners in imagination, judged "
                                  "in the simulator")
    sub = agent.add_subparsers(dest="agent_command", required=True)
    train = sub.add_parser("train", help="PPO/SAC in DexACWorld-v0 or DexACSim-v0 (resumable)")
    _env_args(train)
    train.add_argument("--env", choices=("world", "sim"), default="world")
    train.add_argument("--algo", choices=("ppo", "sac"), default="ppo")
    train.add_argument("--reward", default="learned", help="world reward: learned | goal_image | pose_tracking")
    train.add_argument("--success-termination", type=float, default=None,
                       help="end imagined episodes at this success probability")
    train.add_argument("--steps", type=int, default=2048, help="total env steps")
    train.add_argument("--num-envs", type=int, default=4)
    train.add_argument("--n-steps", type=int, default=64, help="PPO rollout per env")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=3e-4)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="run folder (model.zip, logs)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/model.zip")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=run_train)
    plan = sub.add_parser("plan", help="MPC (CEM/MPPI) on one simulator episode")
    _env_args(plan)
    _planner_args(plan)
    plan.add_argument("--model", choices=("world", "sim"), default="world",
                      help="plan in imagination or in a cloned simulator (oracle)")
    plan.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED)
    plan.add_argument("--out", default=None, help="video (imagination replay | simulator)")
    plan.set_defaults(func=run_plan)
    ev = sub.add_parser("eval", help="policies over held-out seeds in DexACSim-v0")
    _env_args(ev)
    _planner_args(ev)
    ev.add_argument("--policy", action="append", required=True,
                    help="random | expert | mpc_world | mpc_sim | mpc_sim_learned (true dynamics, imagination's "
                         "objective) | NAME=PATH/model.zip (repeat)")
    ev.add_argument("--seeds", type=int, default=20)
    ev.add_argument("--seed-start", type=int, default=DEFAULT_EVAL_SEED)
    ev.add_argument("--no-imagined", action="store_true", help="skip the imagined-return replay")
    ev.add_argument("--audit", action="store_true",
                    help="mpc_world, contact objective read on imagined frames: at every "
                         "replanning also run each sample in a cloned simulator and score it with "
                         "references that read no imagination and with the planner's objective "
                         "on the simulator's frames of that sample (agents.audit); writes "
                         "OUT_audit.jsonl and OUT_audit.png and an 'audit' summary per policy")
    ev.add_argument("--out", default="benchmarks/results/agents.json",
                    help="JSON; the .md table next to it")
    ev.add_argument("--video-dir", default=None,
                    help="one video per policy, imagination | simulator (default: next to --out)")
    ev.set_defaults(func=run_eval)
    reward = sub.add_parser("reward", help="the reward/success head's accuracy on held-out frames")
    reward.add_argument("--checkpoint", default=None)
    reward.add_argument("--store", default="data/sim.zarr")
    reward.add_argument("--split", default="test")
    reward.add_argument("--task", default=None)
    reward.add_argument("--out", default=None, help="JSON file")
    reward.set_defaults(func=run_reward)


def _env_config(args, kind: str, **overrides):
    from agents.envs import AgentEnvConfig  # noqa: PLC0415

    values = {"kind": kind, "task": args.task, "action_set": args.action_set,
              "max_episode_steps": args.max_episode_steps, "checkpoint": args.checkpoint,
              "store": args.store, "split": args.split, "sampling_steps": args.sampling_steps,
              "cfg_scale": args.cfg_scale, "precision": args.precision}
    return AgentEnvConfig(**(values | overrides))


def run_train(args: argparse.Namespace) -> int:
    from agents.train import TrainConfig, train  # noqa: PLC0415

    env_config = _env_config(args, args.env, reward=args.reward,
                             success_termination=args.success_termination)
    config = TrainConfig(algo=args.algo, total_steps=args.steps, num_envs=args.num_envs,
                         n_steps=args.n_steps, batch_size=args.batch_size,
                         learning_rate=args.lr, seed=args.seed)
    path = train(env_config, config, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"agent train: wrote {path}")
    return 0


def build_policy(spec: str, args: argparse.Namespace):
    """A policy from its command-line spec (see ``--policy``)."""
    from agents import policies  # noqa: PLC0415

    if spec == "random":
        return policies.RandomPolicy()
    if spec == "expert":
        return policies.ExpertPolicy()
    if spec in ("mpc_world", "mpc_sim", "mpc_sim_learned"):
        return build_mpc(spec.removeprefix("mpc_"), args)
    if "=" in spec:
        from agents.train import load_model  # noqa: PLC0415

        name, path = spec.split("=", 1)
        return policies.SB3Policy(load_model(path), name)
    raise ValueError(f"unknown policy {spec!r}: random | expert | mpc_world | mpc_sim | "
                     "mpc_sim_learned | NAME=PATH")


def objective_spec(args: argparse.Namespace) -> str:
    """The world reward spec of ``--objective`` (``task_head*`` name ``--reward-head``'s file)."""
    if args.objective == "contact":  # the core steps; LocatedContact scores (build_mpc)
        return "learned"
    if args.objective.startswith("task_head"):
        if not args.reward_head:
            raise ValueError(f"--objective {args.objective} needs --reward-head PATH")
        return f"{args.objective}:{args.reward_head}"
    return args.objective


def _imagined_reward(args: argparse.Namespace) -> str:
    """What scores the imagined return: the task reward head when one is given (it predicts
    the simulator's reward, so imagined and real returns compare), else the learned head."""
    return f"task_head:{args.reward_head}" if args.reward_head else "learned"


def build_mpc(model: str, args: argparse.Namespace):
    from agents.actions import action_dim  # noqa: PLC0415
    from agents.branching import SimBranch, WorldBranch  # noqa: PLC0415
    from agents.planners import PlannerConfig, make_planner  # noqa: PLC0415
    from agents.policies import MPCPolicy  # noqa: PLC0415

    config = PlannerConfig(horizon=args.horizon, population=args.population,
                           iterations=args.iterations, elites=max(2, args.population // 4))
    planner = make_planner(args.planner, action_dim(args.action_set), config)
    goal_fn = None
    if model == "world":
        scorer = WorldBranch(_env_config(args, "world"), args.population, objective_spec(args),
                             support_penalty=args.support_penalty,
                             view_penalty=args.view_penalty)
        if args.objective == "contact":
            scorer.contact = located_contact(args, scorer.core.model)
        if args.objective == "goal_image":
            from agents.goals import expert_goal_frame  # noqa: PLC0415

            goal_fn = expert_goal_frame
    elif model == "sim_learned":  # true dynamics, learned objective: a diagnostic
        from dexac_env.world_core import load_world_model  # noqa: PLC0415

        scorer = SimBranch(_env_config(args, "sim", color_split=args.color_split),
                           objective=objective_spec(args), model=load_world_model(args.checkpoint),
                           view_penalty=args.view_penalty)
    else:
        scorer = SimBranch(_env_config(args, "sim", color_split=args.color_split))
    prior, count, name = None, 0, f"mpc_{model}_{args.planner}"
    if model == "world" and args.objective == "contact":
        name += f"_contact_{args.contact_source}" + ("_above" if args.approach == "above" else "") \
            + ("_median" if args.fuse == "median" else "") \
            + ("_pooled" if getattr(args, "pool", "branch") == "median" else "") \
            + ("_drawn" if getattr(args, "imagined_colour", "text") == "drawn" else "")
    if getattr(args, "prior", None):
        if model != "world":
            raise ValueError("--prior proposes in imagination: use it with mpc_world")
        from agents.train import load_model  # noqa: PLC0415

        prior = load_model(args.prior)
        count = args.prior_count if args.prior_count is not None else args.population // 2
        name += "_prior"
    named_hand_only = bool(getattr(args, "named_hand_only", False))
    if named_hand_only:
        name += "_named_hand"
    audit = build_audit(args, scorer) if getattr(args, "audit", False) else None
    return MPCPolicy(planner, scorer, name, goal_fn, args.replan_every, prior, count,
                     named_hand_only, audit)


def build_audit(args: argparse.Namespace, scorer):
    """``--audit``: the objective's ranking against the simulator (agents.audit), with two
    references that read no imagination: the place on the real frame (the median of the
    episode's readings, as the planner of docs/agents.md's 27/40) and the simulator's own; and
    the planner's objective read on the simulator's frames of each sample (``sim_frames``:
    imagination made perfect; the text's colour, the planner's pooling and fusion)."""
    from agents.audit import ObjectiveAudit  # noqa: PLC0415
    from agents.branching import SimBranch, WorldBranch  # noqa: PLC0415

    if not isinstance(scorer, WorldBranch) or args.objective != "contact" \
            or args.contact_source != "imagined":
        raise ValueError("--audit watches mpc_world with --objective contact --contact-source imagined")
    model = scorer.core.model
    references = {
        "pixels_median": located_contact(argparse.Namespace(**vars(args) | {
            "contact_source": "pixels", "fuse": "median", "pool": "branch",
            "imagined_colour": "text"}), model),
        "true_place": located_contact(argparse.Namespace(**vars(args) | {
            "contact_source": "true", "pool": "branch", "imagined_colour": "text"}), model),
    }
    frame_references = {"sim_frames": located_contact(argparse.Namespace(**vars(args) | {
        "imagined_colour": "text"}), model)}
    sim = SimBranch(_env_config(args, "sim", color_split=args.color_split), scorer.delta.limits,
                    keep_frames=True)
    return ObjectiveAudit(scorer, sim, references, frame_references)


def located_contact(args: argparse.Namespace, model):
    """``--objective contact``'s scorer: ``--reward-head`` (a contact head) for the reward form
    (and the fingertip when the text names none), the place from ``--contact-source``."""
    import torch  # noqa: PLC0415

    from agents.contact import LocatedContact  # noqa: PLC0415
    from world_model.object_locator import load_locator  # noqa: PLC0415
    from world_model.task_reward import load_task_reward  # noqa: PLC0415

    if not args.reward_head:
        raise ValueError("--objective contact needs --reward-head PATH (a contact-structured head)")
    if args.contact_source != "true" and not args.locator:
        raise ValueError(f"--contact-source {args.contact_source} needs --locator PATH")
    texts: dict[str, torch.Tensor] = {}

    def embed(frame, text: str) -> torch.Tensor:  # the world model's own text embedding
        if text not in texts:  # it depends on the text only
            frames = torch.from_numpy(frame)[None]  # (1, H, W, 3)
            texts[text] = model.encode_semantic(frames, [text]).text[0, 0].float().cpu()
        return texts[text]

    locator = load_locator(args.locator) if args.contact_source != "true" else None
    return LocatedContact(load_task_reward(args.reward_head), embed, args.contact_source, locator,
                          log_reward=True, clearance=args.clearance,
                          hold_other=args.hold_other, approach=args.approach,
                          fuse=args.fuse, pool=getattr(args, "pool", "branch"),
                          colour=getattr(args, "imagined_colour", "text"))


def run_plan(args: argparse.Namespace) -> int:
    from agents.evaluate import evaluate_policy  # noqa: PLC0415

    policy = build_mpc(args.model, args)
    sim = _env_config(args, "sim", color_split=args.color_split)
    world = (_env_config(args, "world", reward=_imagined_reward(args))
             if args.model == "world" else None)
    summary = evaluate_policy(policy, sim, [args.seed], world, video=args.out)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_seed"}, indent=2))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from agents.evaluate import evaluate_policy, markdown_table  # noqa: PLC0415

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    sim = _env_config(args, "sim", color_split=args.color_split)
    world = None if args.no_imagined else _env_config(args, "world", reward=_imagined_reward(args))
    rows = []
    for spec in args.policy:
        policy = build_policy(spec, args)
        video = str(Path(args.video_dir or out.parent) / f"{out.stem}_{policy.name}.mp4")
        rows.append(evaluate_policy(policy, sim, seeds, world, video=video))
        if getattr(policy, "audit", None) is not None:
            rows[-1]["audit"] = write_audit(policy.audit, out)
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
        result = {"command": "dexac " + shlex.join(sys.argv[1:]), "task": args.task,
                  "seeds": seeds, "imagined_reward": _imagined_reward(args), "policies": rows}
        out.write_text(json.dumps(result, indent=2))  # after every policy: partial results survive
    table = markdown_table(rows)
    out.with_suffix(".md").write_text(f"`{result['command']}`\n\n{table}\n")
    print(table)
    return 0


def write_audit(audit, out: Path) -> dict:
    """The audit's rows (JSONL) and figure next to ``out``; returns its summary."""
    from agents.audit import plot_audit  # noqa: PLC0415

    rows = out.with_name(f"{out.stem}_audit.jsonl")
    rows.write_text("".join(json.dumps(row) + "\n" for row in audit.rows))
    plot_audit(audit.rows, out.with_name(f"{out.stem}_audit.png"))
    return audit.summary() | {"rows": str(rows)}


def run_reward(args: argparse.Namespace) -> int:
    from agents.reward_eval import head_predictions, head_scores  # noqa: PLC0415
    from dexac_env.world_core import load_world_model, open_store  # noqa: PLC0415

    model = load_world_model(args.checkpoint)
    scores = head_scores(head_predictions(model, open_store(args.store), args.split, args.task))
    scores["command"] = "dexac " + shlex.join(sys.argv[1:])
    print(json.dumps(scores, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(scores, indent=2))
    return 0
