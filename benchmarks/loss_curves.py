"""Side-by-side training curves of world-model runs (e.g. DexAC vs mlp_global, same budget).

Reads each run's ``metrics.jsonl``, averages ``flow_loss`` over windows of ``--window`` steps,
writes the curves as JSON and draws them into a PNG (PIL only; no plotting library needed).

    python benchmarks/loss_curves.py runs/wm_tiny_dexac runs/wm_tiny_mlp_global \
        --out benchmarks/results/wm_loss_curves.json --png docs/images/wm_loss_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = ((200, 40, 40), (40, 90, 200), (30, 150, 60), (160, 90, 20))


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


def draw(curves: list[dict], path: Path, size=(640, 400), margin=50) -> None:
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    xs = [p[0] for c in curves for p in c["points"]]
    ys = [p[1] for c in curves for p in c["points"]]
    x_max, y_lo, y_hi = max(xs), min(ys), max(ys)
    width, height = size[0] - 2 * margin, size[1] - 2 * margin

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            margin + width * x / x_max,
            size[1] - margin - height * (y - y_lo) / max(y_hi - y_lo, 1e-9),
        )

    pen.rectangle([margin, margin, size[0] - margin, size[1] - margin], outline="black")
    for frac in (0.0, 0.5, 1.0):
        y = y_lo + frac * (y_hi - y_lo)
        pen.text((4, to_px(0, y)[1] - 6), f"{y:.3f}", fill="black")
        x = frac * x_max
        pen.text((to_px(x, y_lo)[0] - 10, size[1] - margin + 6), f"{int(x)}", fill="black")
    pen.text((size[0] // 2 - 40, size[1] - 18), "training step", fill="black")
    for i, curve in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        pen.line([to_px(x, y) for x, y in curve["points"]], fill=colour, width=2)
        label = f"{Path(curve['run']).name}: {curve['key']} {curve['final_mean']:.4f}"
        pen.text((margin + 8, margin + 8 + 14 * i), label, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories holding metrics.jsonl")
    parser.add_argument("--key", default="flow_loss")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/wm_loss_curves.json")
    parser.add_argument("--png", default="docs/images/wm_loss_curves.png")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
