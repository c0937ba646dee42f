"""The paper's ablation tables from ``dexac evaluate`` reports of several variants and seeds.

Each variant was trained with several seeds and each seed scored on the same held-out episodes
with the same sampler noise (``dexac evaluate``'s JSON, which keeps the per-episode values of
the true and frozen rollouts). A variant's score on an episode is the mean over its seeds, so
its 95% interval (over episodes) holds both the episode and the seed variation that averaging
leaves; the seeds' own means are listed next to it. Two variants are compared episode by
episode (paired differences), which is what says whether one of the paper's orderings holds on
our data.

    aggregate(reports)                     -> per variant: metrics, gaps, seed means
    compare(reports, better, worse, metric) -> paired difference with its interval and a verdict
    markdown(study)                         -> the Table 3 / Table 4 layouts and the orderings
"""

from __future__ import annotations

import numpy as np

from evaluation.scoring import mean_ci

# (key in the per-episode rows, column title, higher is better)
METRICS = (
    ("psnr", "PSNR", True),
    ("ssim", "SSIM", True),
    ("lpips_sim", "lpips_sim", False),
    ("pck@10/wrist", "wrist PCK@10", True),
    ("pck@10/finger", "finger PCK@10", True),
    ("pck@10/head", "head PCK@10", True),
    ("pck@20/all", "PCK@20", True),
)
GAPS = (("psnr", "ΔPSNR true-frozen"), ("pck@10/wrist", "Δwrist"), ("pck@10/finger", "Δfinger"))

# The paper's claims, as orderings of two variants (its numbers are not reproduced here: see
# docs/ablations.md). Table 3: the full DexAC beats each conditioning ablation; Table 4: the
# semantic branch helps, and DexAC beats the IRASim-style per-frame action AdaLN.
PAPER_ORDERINGS = (
    ("dexac", "mlp_global"),
    ("dexac", "dexac_no_local"),
    ("dexac", "dexac_no_global"),
    ("dexac", "frame_adaln"),
    ("dexac", "dexac_no_semantic"),
)
ORDERING_METRICS = ("psnr", "pck@10/wrist", "pck@10/finger", "gap:psnr")
TABLE3 = ("mlp_global", "dexac_no_local", "dexac_no_global", "dexac")
TABLE4 = ("dexac_no_semantic", "dexac", "frame_adaln")


def _episode_values(result: dict, metric: str) -> np.ndarray:
    """(episodes,) per-episode values of one seed's result; ``gap:M`` = true - frozen of M."""
    rows = result["per_episode"]
    if metric.startswith("gap:"):
        name = metric[4:]
        return np.array(
            [
                _value(t, name) - _value(f, name)
                for t, f in zip(rows["true"], rows["frozen"], strict=True)
            ]
        )
    return np.array([_value(row, metric) for row in rows["true"]])


def _value(row: dict, metric: str) -> float:
    value = row.get(metric)
    return np.nan if value is None else float(value)


def seed_mean(results: list[dict], metric: str) -> np.ndarray:
    """(episodes,) a variant's per-episode value averaged over its seeds' results."""
    if not results:
        raise ValueError(f"no results to average for {metric!r}")
    for result in results:
        if "per_episode" not in result:
            raise ValueError(
                f"{result.get('checkpoint', 'a result')} has no per-episode values: "
                "re-run dexac evaluate (reports written before they were kept cannot be averaged)"
            )
    values = [_episode_values(r, metric) for r in results]
    if len({v.shape for v in values}) != 1:
        raise ValueError(
            f"the seeds were scored on different episode counts: {[len(v) for v in values]}"
        )
    return np.nanmean(np.stack(values), axis=0)


def aggregate(reports: dict[str, list[dict]]) -> dict[str, dict]:
    """``reports``: variant -> its seeds' ``dexac evaluate`` results (one dict per seed)."""
    out = {}
    for variant, results in reports.items():
        row = {"seeds": len(results), "metrics": {}, "gaps": {}, "seed_means": {}}
        for key, _, _ in METRICS:
            row["metrics"][key] = mean_ci(seed_mean(results, key))
            row["seed_means"][key] = [float(np.nanmean(_episode_values(r, key))) for r in results]
        for key, _ in GAPS:
            row["gaps"][key] = mean_ci(seed_mean(results, f"gap:{key}"))
        for key in ("fid_sim", "fvd_sim"):
            values = [r[key] for r in results if r.get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        out[variant] = row
    return out


def compare(reports: dict[str, list[dict]], better: str, worse: str, metric: str) -> dict:
    """Paired per-episode difference ``better - worse`` of ``metric`` (higher is better for
    every metric of ORDERING_METRICS) and whether the interval puts it above zero."""
    diff = mean_ci(seed_mean(reports[better], metric) - seed_mean(reports[worse], metric))
    if diff["mean"] is None or diff["ci95"] is None:
        verdict = "not measured"
    elif diff["mean"] - diff["ci95"] > 0:
        verdict = "holds"
    elif diff["mean"] + diff["ci95"] < 0:
        verdict = "reversed"
    else:
        verdict = "not separated"
    return {"better": better, "worse": worse, "metric": metric, **diff, "verdict": verdict}


def orderings(reports: dict[str, list[dict]]) -> list[dict]:
    """Every paper ordering whose two variants were run, on every ORDERING_METRICS metric."""
    return [
        compare(reports, better, worse, metric)
        for better, worse in PAPER_ORDERINGS
        if better in reports and worse in reports
        for metric in ORDERING_METRICS
    ]


def _cell(stat: dict, digits: int) -> str:
    if stat["mean"] is None:
        return "-"
    if stat["ci95"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def _digits(key: str) -> int:
    return 2 if key in ("psnr",) else 3


def _table(rows: dict[str, dict], variants: tuple[str, ...], title: str) -> list[str]:
    present = [v for v in variants if v in rows]
    if not present:
        return []
    header = ["variant", "seeds"] + [t for _, t, _ in METRICS] + [t for _, t in GAPS]
    header += ["fid_sim", "fvd_sim"]
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for variant in present:
        row = rows[variant]
        cells = [f"`{variant}`", str(row["seeds"])]
        cells += [_cell(row["metrics"][k], _digits(k)) for k, _, _ in METRICS]
        cells += [_cell(row["gaps"][k], _digits(k)) for k, _ in GAPS]
        cells += ["-" if row[k] is None else f"{row[k]:.2f}" for k in ("fid_sim", "fvd_sim")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _metric_title(metric: str) -> str:
    if metric.startswith("gap:"):
        return dict(GAPS)[metric[4:]]
    return {k: t for k, t, _ in METRICS}[metric]


def markdown(study: dict) -> str:
    """Table 3 and Table 4 layouts, the seeds' own means, and the paper's orderings."""
    rows = study["variants"]
    lines = _table(rows, TABLE3, "Table 3 layout: action conditioning")
    lines += _table(rows, TABLE4, "Table 4 layout: semantic branch, IRASim-style conditioning")
    others = tuple(v for v in rows if v not in TABLE3 + TABLE4)
    lines += _table(rows, others, "Other variants")
    lines += ["**Per seed** (mean over episodes of each seed's model)", ""]
    lines += ["| variant | " + " | ".join(t for _, t, _ in METRICS) + " |"]
    lines += ["|" + " --- |" * (len(METRICS) + 1)]
    for variant, row in rows.items():
        cells = [
            " / ".join(f"{v:.{_digits(k)}f}" for v in row["seed_means"][k]) for k, _, _ in METRICS
        ]
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    lines += ["", "**The paper's orderings on our data** (paired per-episode differences)", ""]
    lines += ["| ordering | metric | difference | verdict |", "| --- | --- | --- | --- |"]
    for item in study["orderings"]:
        diff = _cell(item, _digits(item["metric"].removeprefix("gap:")))
        lines.append(
            f"| `{item['better']}` > `{item['worse']}` | {_metric_title(item['metric'])} "
            f"| {diff} | {item['verdict']} |"
        )
    return "\n".join(lines) + "\n"
