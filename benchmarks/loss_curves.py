"""Side-by-side training curves of world-model runs (e.g. DexAC vs mlp_global, same budget).

Reads each run's ``metrics.jsonl``, averages ``flow_loss`` over windows of ``--window`` steps,
writes the curves as JSON and plots them into a PNG with matplotlib; ``--from-json`` redraws
the PNG from such a JSON.

    python benchmarks/loss_curves.py runs/wm_tiny_dexac runs/wm_tiny_mlp_global \
        --out benchmarks/results/wm_loss_curves.json --png docs/images/wm_loss_curves.png
    python benchmarks/loss_curves.py --from-json benchmarks/results/wm_loss_curves.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def read_curve(run_dir: Path, key: str, window: int) -> dict:
    rows = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line
    ]
    rows = [r for r in rows if key in r]
    if not rows:
        raise ValueError(f"{run_dir}/metrics.jsonl has no {key!r} entries")
    steps = np.array([r["step"] for r in rows])
    values = np.array([r[key] for r in rows], dtype=np.float64)
    edges = np.arange(0, steps.max() + window, window)
    points = [
        (int(hi), float(values[(steps > lo) & (steps <= hi)].mean()))
        for lo, hi in zip(edges[:-1], edges[1:], strict=False)
        if ((steps > lo) & (steps <= hi)).any()
    ]
    return {
        "run": str(run_dir),
        "key": key,
        "window": window,
        "points": points,
        "final_mean": float(values[-window:].mean()),
        "steps": int(steps.max()),
    }


def draw(curves: list[dict], path: Path) -> None:
    """One line per run, loss on a log axis (the runs differ by a few per cent late in
    training, which a linear axis flattens), final mean in the legend."""
    import matplotlib  # noqa: PLC0415  (only this script plots; keep the import off the tests)

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import FormatStrFormatter  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for curve in curves:
        steps, values = zip(*curve["points"], strict=True)
        label = f"{Path(curve['run']).name}: last {curve['window']} steps {curve['final_mean']:.4f}"
        axes.plot(steps, values, linewidth=1.8, label=label)
    axes.set_yscale("log")
    for axis_ticks in (axes.yaxis.set_major_formatter, axes.yaxis.set_minor_formatter):
        axis_ticks(FormatStrFormatter("%.2f"))  # plain numbers, not 6 x 10^-1
    axes.set_xlabel("training step")
    axes.set_ylabel(f"{curves[0]['key']} (mean over {curves[0]['window']} steps)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run directories holding metrics.jsonl")
    parser.add_argument(
        "--from-json",
        default=None,
        help="redraw the PNG from curves this script wrote before (no run directories needed)",
    )
    parser.add_argument("--key", default="flow_loss")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/wm_loss_curves.json")
    parser.add_argument("--png", default="docs/images/wm_loss_curves.png")
    args = parser.parse_args(argv)
    if bool(args.runs) == bool(args.from_json):
        parser.error("give run directories or --from-json, not both")  # exit code 2
    if args.from_json:
        curves = json.loads(Path(args.from_json).read_text())["curves"]
        draw(curves, Path(args.png))
        print(f"wrote {args.png}")
        return 0
    curves = [read_curve(Path(r), args.key, args.window) for r in args.runs]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"curves": curves}, indent=2))
    draw(curves, Path(args.png))
    for c in curves:
        first = c["points"][0][1]
        print(
            f"{c['run']:<32} {c['key']} first {first:.4f} -> last {c['window']} steps {c['final_mean']:.4f}"
        )
    print(f"wrote {args.out} and {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
