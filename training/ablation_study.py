"""The paper's ablation study on our data, in one resumable command.

    python -m training.ablation_study --config configs/wm/ablation.yaml --seeds 0 1 \
        --store data/sim.zarr --out-dir runs/ablation --results benchmarks/results/ablations

For every variant (``VARIANTS``) and seed: train with ``training/train_wm.py`` (same config,
data and budget; only the variant's ``--set`` overrides and the seed differ), export the run
compact, and score it with ``dexac evaluate`` on the held-out split. Then: the tables in the
paper's Table 3 / Table 4 layouts with 95% intervals and the paper's orderings as paired
differences (``evaluation.ablations``), every run's loss curve in one plot
(``benchmarks/loss_curves.py``), and the AdaLN heatmap and action-token PCA of the first
seed's models (``evaluation.analysis``).

Each step is skipped when its output is already there (a finished run's ``summary.json`` with
the asked-for step count, an exported file newer than it, an evaluation JSON newer than the
export), and an interrupted training run continues with ``--resume``: re-running the command
after a crash or across sessions repeats nothing. Each step runs as its own subprocess, one
at a time (on a small CPU, two torch processes side by side are slower than one after the other).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # script form: see training/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.components import add_set_argument, run_main

ROOT = Path(__file__).resolve().parents[1]

# variant name -> its --set overrides of the base config (docs/ablations.md: one switch each)
VARIANTS = {
    "mlp_global": ["model.variant=mlp_global"],
    "frame_adaln": ["model.variant=frame_adaln"],
    "dexac_no_local": ["model.variant=dexac_no_local"],
    "dexac_no_global": ["model.variant=dexac_no_global"],
    "dexac": ["model.variant=dexac"],
    "dexac_no_semantic": [
        "model.variant=dexac",
        "model.overrides.semantic.enabled=false",
        "model.semantic_checkpoint=null",  # no image encoder to load
    ],
}


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    out_dir: Path

    @property
    def name(self) -> str:
        return f"{self.variant}_s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.name

    @property
    def model(self) -> Path:
        return self.out_dir / "models" / f"{self.name}.safetensors"

    @property
    def evaluation(self) -> Path:
        return self.out_dir / "eval" / f"{self.name}.json"


def trained_steps(run: Run) -> int | None:
    """Step count of a finished run (its summary.json), None if it never finished."""
    summary = run.run_dir / "summary.json"
    if not summary.is_file():
        return None
    return int(json.loads(summary.read_text())["steps"])


def _newer(path: Path, than: Path) -> bool:
    return path.is_file() and than.is_file() and path.stat().st_mtime >= than.stat().st_mtime


def _execute(cmd: list[str], log: Path) -> None:
    """Run one step, its output appended to ``log``; a failure names the command and the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        code = subprocess.run(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"step failed (exit {code}): {' '.join(cmd)}; see {log}")


def train_command(run: Run, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "training/train_wm.py", "--config", args.config]
    for item in [*VARIANTS[run.variant], *args.overrides]:
        cmd += ["--set", item]
    cmd += ["--set", f"trainer.seed={run.seed}", "--set", f"trainer.out_dir={run.run_dir}"]
    cmd += ["--set", "trainer.progress_bar=false"]
    if args.steps is not None:
        cmd += ["--set", f"trainer.steps={args.steps}"]
    if (run.run_dir / "checkpoints").is_dir():
        cmd.append("--resume")  # an interrupted run continues exactly where it stopped
    return cmd


def evaluate_command(run: Run, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "dexac_env.cli", "evaluate", "--checkpoint", str(run.model)]
    cmd += ["--label", run.name, "--store", args.store, "--split", args.split]
    cmd += ["--frames", str(args.frames), "--out", str(run.evaluation)]
    for flag, value in (
        ("--limit", args.limit),
        ("--num-steps", args.num_steps),
        ("--detector", args.detector),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run_one(run: Run, args: argparse.Namespace) -> None:
    """Train, export and score one (variant, seed), skipping what is already done."""
    log = run.out_dir / "logs" / f"{run.name}.log"
    steps = trained_steps(run)
    if steps is None or (args.steps is not None and steps != args.steps):
        print(f"[{time.strftime('%H:%M:%S')}] train {run.name}", flush=True)
        _execute(train_command(run, args), log)
    summary = run.run_dir / "summary.json"
    if not _newer(run.model, summary):
        run.model.parent.mkdir(parents=True, exist_ok=True)
        _execute(
            [
                sys.executable,
                "training/export.py",
                str(run.run_dir),
                "--compact",
                "--output",
                str(run.model),
            ],
            log,
        )
    if not evaluation_is_current(run, args):
        print(f"[{time.strftime('%H:%M:%S')}] evaluate {run.name}", flush=True)
        _execute(evaluate_command(run, args), log)


def evaluation_is_current(run: Run, args: argparse.Namespace) -> bool:
    """The run's score exists, is newer than its model and was made the way ``args`` asks
    (split, frames, episode limit, sampler steps): a study re-run with other evaluation
    settings scores again instead of mixing them."""
    if not _newer(run.evaluation, run.model):
        return False
    report = json.loads(run.evaluation.read_text())
    settings = report.get("settings", {})
    return (
        report.get("split"),
        report.get("frames"),
        settings.get("limit"),
        settings.get("num_steps"),
    ) == (args.split, args.frames, args.limit, args.num_steps)


def write_study(runs: list[Run], args: argparse.Namespace) -> Path:
    """Tables (JSON + Markdown), loss curves and the first seed's analysis figures."""
    from evaluation.ablations import aggregate, markdown, orderings  # noqa: PLC0415

    reports: dict[str, list[dict]] = {}
    for run in runs:
        result = json.loads(run.evaluation.read_text())["results"][0]
        reports.setdefault(run.variant, []).append(result)
    study = {
        "command": " ".join(["python -m training.ablation_study", *args.argv]),
        "config": args.config,
        "overrides": args.overrides,
        "steps": {run.name: trained_steps(run) for run in runs},
        "evaluation": json.loads(runs[0].evaluation.read_text())["command"],
        "variants": aggregate(reports),
        "orderings": orderings(reports),
    }
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{results}.json").write_text(json.dumps(study, indent=1))
    Path(f"{results}.md").write_text(markdown(study))
    _execute(
        [
            sys.executable,
            "benchmarks/loss_curves.py",
            *[str(r.run_dir) for r in runs],
            "--out",
            f"{results}_loss_curves.json",
            "--png",
            f"{results}_loss_curves.png",
        ],
        runs[0].out_dir / "logs" / "study.log",
    )
    write_figures([r for r in runs if r.seed == runs[0].seed], args, str(results))
    return Path(f"{results}.md")


def write_figures(runs: list[Run], args: argparse.Namespace, stem: str) -> None:
    from dexac_env.replay.store import EpisodeStore  # noqa: PLC0415
    from evaluation.analysis import write_analysis  # noqa: PLC0415
    from evaluation.cli import load_episodes  # noqa: PLC0415
    from evaluation.detector import KeypointDetector  # noqa: PLC0415
    from world_model import WorldModel  # noqa: PLC0415

    detector = KeypointDetector.load(args.detector)
    models = [(run.variant, WorldModel.from_pretrained(str(run.model)).eval()) for run in runs]
    context = models[0][1].config.context_frames
    episodes = load_episodes(
        EpisodeStore.open(args.store), args.split, context + args.frames, detector.config.num_points
    )[: args.limit]
    write_analysis(models, episodes, stem)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from evaluation.cli import DEFAULT_DETECTOR  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/wm/ablation.yaml", help="base run config")
    add_set_argument(parser, "override the base config for every run (repeatable)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: config's)"
    )
    parser.add_argument("--out-dir", default="runs/ablation", help="runs, models, logs, scores")
    parser.add_argument(
        "--results",
        default="benchmarks/results/ablations",
        help="path stem of the tables (.json, .md) and figures (_*.png)",
    )
    parser.add_argument("--store", default="data/sim.zarr", help="store with the held-out split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="score the first N episodes")
    parser.add_argument("--num-steps", type=int, default=None, help="sampler steps")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the study's record
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = Path(args.out_dir)
    # seed-major: every variant's first seed is trained before any second seed, so a study
    # stopped early still has one complete table
    runs = [Run(v, s, out_dir) for s in args.seeds for v in args.variants]
    for index, run in enumerate(runs, 1):
        print(f"[{index}/{len(runs)}] {run.name}", flush=True)
        run_one(run, args)
    print(f"wrote {write_study(runs, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
