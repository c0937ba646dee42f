"""Markdown tables in the layout of the paper's Tables 3/4 (rows = variants, metric columns)."""

from __future__ import annotations

MAIN_COLUMNS = (
    ("PSNR↑", "psnr", 2),
    ("SSIM↑", "ssim", 3),
    ("LPIPS_sim↓", "lpips_sim", 3),
    ("PCK@10↑", "pck@10/all", 3),
    ("PCK@20↑", "pck@20/all", 3),
)
FAMILY_COLUMNS = tuple(
    (f"{family} @{p}", f"pck@{p}/{family}", 3)
    for family in ("wrist", "finger", "head")
    for p in (5, 10, 20)
)
# the sensitivity table: ΔPSNR and ΔPCK@10 per family (the report's GAP_METRICS)
GAP_COLUMNS = (("ΔPSNR (dB)", "psnr", 2),) + tuple(
    (f"ΔPCK@10 {family}", f"pck@10/{family}", 3) for family in ("all", "wrist", "finger", "head")
)
REFERENCE_LABELS = {
    "vae_reconstruction": "(ref.) VAE reconstruction",
    "copy_last_context": "(ref.) copy last context frame",
    "true_frames": "(ceiling) detector on the true frames",
}


def _cell(entry: dict | None, digits: int) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    text = f"{entry['mean']:.{digits}f}"
    return text + (f" ± {entry['ci95']:.{digits}f}" if entry.get("ci95") is not None else "")


def _number(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main_table(results: list[dict]) -> str:
    """Rows: each checkpoint (true actions), then the references of the first checkpoint."""
    header = [
        "variant",
        *(c[0] for c in MAIN_COLUMNS),
        "FID_sim↓",
        "FVD_sim↓",
        *(c[0] for c in FAMILY_COLUMNS),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, methods: dict, fid=None, fvd=None) -> str:
        cells = [
            label,
            *(_cell(methods.get(k), d) for _, k, d in MAIN_COLUMNS),
            _number(fid),
            _number(fvd),
            *(_cell(methods.get(k), d) for _, k, d in FAMILY_COLUMNS),
        ]
        return "| " + " | ".join(cells) + " |"

    for r in results:
        lines.append(
            row(f"**{r['label']}**", r["methods"]["true"], r.get("fid_sim"), r.get("fvd_sim"))
        )
    for method, label in REFERENCE_LABELS.items():
        methods = dict(results[0]["methods"][method])
        if method == "true_frames":  # identical frames: PSNR/SSIM/LPIPS are trivially perfect
            methods = {k: v for k, v in methods.items() if k.startswith("pck")}
        lines.append(row(label, methods))
    return "\n".join(lines)


def sensitivity_table(results: list[dict]) -> str:
    """Gaps (true actions minus frozen / another episode's motion), mean ± 95% interval."""
    metrics = GAP_COLUMNS
    header = [
        "variant",
        *(f"{m[0]} vs frozen" for m in metrics),
        *(f"{m[0]} vs other" for m in metrics),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        gaps = r["sensitivity"]
        cells = [f"**{r['label']}**"]
        for other in ("frozen", "other"):
            cells += [_cell(gaps.get(f"{key} true-{other}"), d) for _, key, d in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """The whole Markdown page of one ``dexac evaluate`` run."""
    results = report["results"]
    first = results[0]
    parts = [
        f"# dexac evaluate: {report['store']} split {report['split']!r}, {first['episodes']} "
        f"episodes, {report['frames']} predicted frames",
        f"\nCommand: `{report['command']}`"
        + "".join(f"\nmerged with the rows of: `{c}`" for c in report.get("merged_commands", []))
        + "\n",
        "Mean ± 95% interval over episodes. PCK@p: a visible true keypoint counts as correct when "
        "the detector finds it in the imagined frame within p% of the image side; a keypoint the "
        "detector cannot find counts as wrong. `_sim` metrics use the project-trained detector's "
        f"features (`{report['detector']}`), comparable only between rows of this table.\n",
        "## Quality (true actions)\n",
        main_table(results),
        "\n## Action sensitivity (same context and noise; true actions minus frozen actions / "
        "minus another episode's motion re-anchored to this start)\n",
        sensitivity_table(results),
    ]
    ceiling = report.get("detector_ceiling")
    if ceiling:
        parts.append(
            "\n## The detector's ceiling, as measured when it was trained (held-out frames)\n"
        )
        for view, scores in ceiling.items():
            shown = ", ".join(
                f"{k} {v:.3f}"
                for k, v in scores.items()
                if k.startswith("pck@10") and v is not None
            )
            parts.append(f"- {view}: {shown}")
    return "\n".join(parts) + "\n"
