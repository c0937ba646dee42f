"""``dexac import egodex|egoverse ROOT --out STORE.zarr ...``: argument parsing and wiring only.

``register(subparsers)`` adds the ``import`` command to the ``dexac`` parser; each subcommand's
``func(args) -> int`` runs the importer and returns the exit code: 0 when at least one episode
was imported, 1 when the job ran but nothing could be imported, 2 for bad input (a missing
root, a bad option, a store that does not fit) -- the project's exit-code convention. Heavy modules (h5py, imageio, zarr) are imported when a command runs.
Also runnable alone: ``python -m dexac_env.replay.import_cli egodex ROOT --out STORE.zarr``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add ``import`` with its ``egodex`` and ``egoverse`` subcommands to ``subparsers``."""
    parser = subparsers.add_parser(
        "import",
        help="import a public egocentric hand data set (EgoDex, EgoVerse) into an episode store",
        description="Import a public data set into a DexAC episode store (resumable).",
    )
    sources = parser.add_subparsers(dest="import_source", metavar="SOURCE", required=True)
    egodex = sources.add_parser(
        "egodex",
        help="EgoDex: <task>/N.hdf5 + <task>/N.mp4 pairs under ROOT",
        description="Import EgoDex (N.hdf5 + N.mp4 per episode, one folder per task).",
    )
    _add_common(egodex)
    egodex.add_argument(
        "--min-confidence",
        type=float,
        default=0.5,
        metavar="C",
        help="keypoints tracked with a lower confidence are marked not visible (default 0.5)",
    )
    egodex.set_defaults(func=run_egodex)
    egoverse = sources.add_parser(
        "egoverse",
        help="EgoVerse: one <hash>.zarr Zarr v3 store per episode under ROOT",
        description="Import EgoVerse (one Zarr v3 store per episode).",
    )
    _add_common(egoverse)
    egoverse.set_defaults(func=run_egoverse)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root", type=Path, metavar="ROOT", help="folder holding the source episodes"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="STORE.zarr",
        help="episode store to create or extend",
    )
    parser.add_argument(
        "--resolution", type=int, default=64, metavar="PX", help="stored square frame side (64)"
    )
    parser.add_argument("--fps", type=float, default=10.0, help="stored frame rate (10)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the split hash (0)")
    parser.add_argument("--val-frac", type=float, default=0.05, help="validation fraction (0.05)")
    parser.add_argument("--test-frac", type=float, default=0.05, help="test fraction (0.05)")
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="only the first N episodes by name"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace):
    from dataclasses import fields

    from dexac_env.replay.importing import ImportConfig

    # every ImportConfig field has the flag of the same name (--min-confidence: EgoDex only)
    given = {f.name: getattr(args, f.name) for f in fields(ImportConfig) if hasattr(args, f.name)}
    return ImportConfig(**given)


def _run(args: argparse.Namespace, importer) -> int:
    from dexac_env.replay.importing import print_report
    from dexac_env.replay.store import StoreError

    try:
        config = _config(args)
        report = importer(args.root, args.out, config, progress=not args.no_progress)
    except (FileNotFoundError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return print_report(report)


def run_egodex(args: argparse.Namespace) -> int:
    from dexac_env.replay.egodex import import_egodex

    return _run(args, import_egodex)


def run_egoverse(args: argparse.Namespace) -> int:
    from dexac_env.replay.egoverse import import_egoverse

    return _run(args, import_egoverse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexac-import")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["import", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
