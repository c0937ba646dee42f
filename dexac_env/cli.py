"""The ``dexac`` command: data tools, importers, the simulator and imagined rollouts.

Each subcommand family lives next to the code it drives and exposes ``register(subparsers)``;
this module only wires them together. Heavy imports happen inside the subcommands, so
``dexac --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import sys

# Modules exposing ``register(subparsers)``; each adds one top-level subcommand. Packages above
# dexac_env (evaluation, agents) add theirs through the ``dexac.commands`` entry-point group, so
# this package never imports them (the one-way dependency rule).
SUBCOMMAND_MODULES = (
    "dexac_env.replay.import_cli",
    "dexac_env.sim.cli",
    "dexac_env.imagine",
)
ENTRY_POINT_GROUP = "dexac.commands"


def _data_info(args: argparse.Namespace) -> int:
    from dexac_env.replay.store import EpisodeStore

    summary = EpisodeStore.open(args.store).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"store        {summary['path']} (schema v{summary['schema_version']})")
    print(
        f"episodes     {summary['episodes']}   frames {summary['frames']}   "
        f"length {summary['episode_length']['min']}-{summary['episode_length']['max']}   "
        f"resolution {summary['resolution']}"
    )
    print(f"splits       {summary['splits']}")
    print(f"sources      {summary['sources']}")
    print(f"tasks        {summary['tasks']}")
    if summary["incomplete"]:
        print(f"incomplete   {summary['incomplete']} (interrupted writes; re-run the import)")
    for family, var in summary.get("action_variance_by_family", {}).items():
        print(
            f"variance     {family:<7} mean {var['mean']:.3e}  min {var['min']:.3e}  max {var['max']:.3e}"
        )
    return 0


def _register_data(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect episode stores")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="summary of an episode store")
    info.add_argument("store", help="path to a STORE.zarr")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=_data_info)


def _demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: the most complete thing this checkout can show."""
    parser = build_parser()
    if importlib.util.find_spec("dexac_env.imagine") is not None:
        steps = ["imagine", "--steps", str(args.steps), "--out", f"{args.out}/rollout.mp4"]
    elif importlib.util.find_spec("dexac_env.sim.cli") is not None:
        steps = ["sim", "video", "--task", "push", "--out", f"{args.out}/push.mp4"]
    else:
        print("dexac demo: nothing to show yet (no simulator or world model in this checkout)")
        return 1
    print("dexac " + " ".join(steps))
    sub_args = parser.parse_args(steps)
    return int(sub_args.func(sub_args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dexac", description="DexAC world: dexterous-hand world model tools"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _register_data(subparsers)
    demo = subparsers.add_parser("demo", help="run the main job on the embedded default")
    demo.add_argument("--steps", type=int, default=48, help="imagined steps")
    demo.add_argument("--out", default="out", help="output folder")
    demo.set_defaults(func=_demo)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # that part of the product is not installed in this checkout
        module.register(subparsers)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry.load().register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # our boundaries raise ValueError subclasses with one-line messages
        print(f"dexac: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"dexac: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
