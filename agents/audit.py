"""How a world-model planner's objective ranks its own samples, against the simulator's truth.

MPC reading the object's place on imagined frames touches 12/40 with the shipped default; the
same objective with the place read on the real frame touches 27/40 (docs/agents.md), and a
world model that keeps the object 2.7 cm closer to its place over the planner's horizon touches
no more (E21). Success counts cannot say where the two part. :class:`ObjectiveAudit` watches
one ``mpc_world`` run without changing it: at every replanning, every sequence the planner
scores in imagination is also

- run in a private simulator restored to the real env's state (:class:`SimBranch`): its true
  return over the horizon and whether it touches;
- scored by reference objectives that read no imagination: the same contact form with the
  place read on the real frame (``pixels_median``: the 27/40 planner's objective) and from the
  simulator's state (``true_place``, privileged), each with the world scorer's own penalties;
- optionally (``frame_references``) scored by the planner's own objective on the frames the
  simulator rendered for that sequence (``sim_frames``): imagination made perfect. It
  separates what the world model costs the ranking from what reading the place on each
  branch's frames costs by itself (an arm that covers the object hides it in a true frame too).

Per replanning it records each objective's Spearman correlation with the true return, the true
return and touch of each objective's first choice (the imagined objective's is CEM's
``best_seq``), those of the plan the planner carries out (its first action, then the CEM
mean's; exactly the actions taken when ``--replan-every`` equals the horizon, as in every run
of E22, else the plan as it stood before the next replanning cut it short), and how far each
branch's imagined place is from the true one (the simulator's at the replanning: the object
stands still until it is touched), averaged over the horizon. The summary averages
these over replannings; see docs/agents.md "Auditing the objective".

``python -m agents.audit RUN_audit.jsonl [--seed-range FIRST LAST]`` prints the summary of a
written audit (the figures of docs/experiments.md E22 come from it).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
from scipy.stats import spearmanr, wilcoxon

from agents.actions import DeltaPose, DeltaPoseState
from agents.branching import SimBranch, WorldBranch
from agents.contact import true_place

IMAGINED = "imagined"  # the name of the planner's own objective in the records


class ObjectiveAudit:
    """Records, per replanning of an ``mpc_world`` planner, its samples' imagined, reference
    and true scores (module docstring).

    world: the planner's :class:`WorldBranch` (an imagined-source contact objective);
    sim: a :class:`SimBranch` with the true reward, the planner's action set and limits;
    references: name -> :class:`agents.contact.LocatedContact` scored on the commanded poses
    only (sources ``pixels`` or ``true``); frame_references: name -> an imagined-source
    ``LocatedContact`` scored on the simulator's frames of each sequence (``sim`` must keep
    them: ``SimBranch(keep_frames=True)``).
    """

    def __init__(self, world: WorldBranch, sim: SimBranch, references: dict[str, Any],
                 frame_references: dict[str, Any] | None = None):
        frame_references = frame_references or {}
        if world.contact is None or world.contact.source != "imagined":
            raise ValueError("the audit compares an objective read on imagined frames with "
                             "references: use --objective contact --contact-source imagined")
        if IMAGINED in references or any(c.needs_frames for c in references.values()):
            raise ValueError("references score commanded poses only (sources pixels or true)")
        if IMAGINED in frame_references or set(frame_references) & set(references) \
                or not all(c.needs_frames for c in frame_references.values()):
            raise ValueError("frame references read frames (source imagined), under names of "
                             "their own")
        if frame_references and not sim.keep_frames:
            raise ValueError("frame references need the simulator's frames: "
                             "SimBranch(keep_frames=True)")
        self.world, self.sim, self.references = world, sim, references
        self.frame_references = frame_references
        self.rows: list[dict[str, Any]] = []
        self._pending: dict[str, Any] | None = None

    def reset(self, seed: int) -> None:
        """A new episode (the policy's reset)."""
        self.seed, self.t = seed, 0
        for contact in [*self.references.values(), *self.frame_references.values()]:
            contact.reset()

    def sync(self, env: Any, frame: np.ndarray, delta: DeltaPoseState, info: dict,
             step: int) -> None:
        """A replanning at the episode's ``step`` from the real env's state."""
        self.t = step
        self.sim.sync(env.unwrapped.get_state(), delta)
        for contact in [*self.references.values(), *self.frame_references.values()]:
            contact.sync(frame, delta.pose[0], info["task_description"], env.unwrapped)
        centre, _ = true_place(env.unwrapped)
        self._pending = {"delta": delta, "true_centre": centre.numpy().astype(np.float64),
                         "sequences": [], "imagined": [], "places": []}

    def wrap(self, scorer: WorldBranch):
        """The planner's scorer, recording what it scores."""
        def score(sequences: np.ndarray) -> np.ndarray:
            returns = scorer(sequences)
            pending = self._pending
            pending["sequences"].append(np.array(sequences))
            pending["imagined"].append(np.asarray(returns, np.float64))
            # (horizon, K, 3) -> (K, horizon, 3): where each branch's imagined frames put it
            pending["places"].append(np.stack(scorer.contact.imagined_places[-len(sequences[0]):], 1))
            return returns
        return score

    def planned(self, action: np.ndarray, mean: np.ndarray) -> dict[str, Any]:
        """After the plan: ``action`` (A,) the planner returned, ``mean`` (horizon, A) the rest
        it will carry out (``planner.mean`` after ``plan``). Scores everything; returns the row."""
        pending, self._pending = self._pending, None
        if pending is None or not pending["sequences"]:
            raise RuntimeError("planned() needs a sync() and a scored plan first")
        sequences = np.concatenate(pending["sequences"])  # (N, H, A), every CEM iteration
        horizon = sequences.shape[1]
        scores = {IMAGINED: np.concatenate(pending["imagined"])}
        scores |= {name: self._objective(contact, sequences, pending["delta"])
                   for name, contact in self.references.items()}
        true = self.sim(sequences)
        touched = self.sim.last_success.copy()
        frame_places = {}  # name -> (N, H, 3): where each branch's simulator frames put it
        for name, contact in self.frame_references.items():
            scores[name] = self._objective(contact, sequences, pending["delta"],
                                           self.sim.last_frames)
            frame_places[name] = np.stack(contact.imagined_places[-horizon:], 1)
        carried = np.concatenate([np.asarray(action, np.float64)[None],
                                  np.clip(mean[:horizon - 1], -1.0, 1.0)])[None]
        carried_return = float(self.sim(carried)[0])
        places = np.concatenate(pending["places"])  # (N, H, 3)
        place_error = _place_error(places, pending["true_centre"])
        row: dict[str, Any] = {
            "seed": self.seed, "step": self.t, "samples": len(sequences),
            "true_return": {"mean": float(true.mean()), "max": float(true.max())},
            "any_touch": bool(touched.any()), "touch_share": float(touched.mean()),
            "carried": {"true_return": carried_return, "touch": bool(self.sim.last_success[0])},
            "place_error_cm": {"mean": 100 * float(place_error.mean())},
        }
        for name, at in frame_places.items():
            row["place_error_cm"][name] = 100 * float(_place_error(at, pending["true_centre"]).mean())
        for name, score in scores.items():
            choice = int(np.argmax(score))
            row[name] = {"spearman": _spearman(score, true), "choice_true_return": float(true[choice]),
                         "choice_touch": bool(touched[choice])}
        row["place_error_cm"]["choice"] = 100 * float(place_error[int(np.argmax(scores[IMAGINED]))])
        self.rows.append(row)
        return row

    def _objective(self, contact: Any, sequences: np.ndarray, delta: DeltaPoseState,
                   frames: np.ndarray | None = None) -> np.ndarray:
        """(N, H, A) -> (N,) a reference objective: the contact reward of each step's commanded
        pose minus the world scorer's penalties, summed over the horizon; with ``frames``
        (N, H, h, w, 3), the simulator's frames of the sequences, read on them (a frame
        reference)."""
        tracker = DeltaPose(len(sequences), self.world.delta.action_set, self.world.delta.limits)
        tracker.set_state(delta.select([0] * len(sequences)))
        total = np.zeros(len(sequences))
        for h in range(sequences.shape[1]):
            poses = tracker(sequences[:, h])
            total += contact(poses, None if frames is None else frames[:, h]) \
                - self.world.penalty(poses)
        return total

    def summary(self) -> dict[str, Any]:
        """Means over replannings (95% half-widths where they are means of per-row figures),
        also for each half of the episodes (``by_half``, split at the middle replanning step)
        and, per bin of the branches' imagined place error, the objectives' mean Spearman
        (``by_place_error``)."""
        return summarise(self.rows, [IMAGINED, *self.references, *self.frame_references])


#: bins (cm) of the branches' mean imagined place error in ``by_place_error``
PLACE_ERROR_BINS = (0.0, 3.0, 5.0, 8.0, math.inf)


def summarise(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """:meth:`ObjectiveAudit.summary` of audit ``rows`` (the JSONL's) for objectives ``names``."""
    out = _summarise(rows, names)
    if rows:
        middle = (min(r["step"] for r in rows) + max(r["step"] for r in rows)) / 2
        out["by_half"] = {
            "first": _summarise([r for r in rows if r["step"] < middle], names),
            "second": _summarise([r for r in rows if r["step"] >= middle], names)}
        error = np.array([r["place_error_cm"]["mean"] for r in rows])
        out["by_place_error"] = []
        for lo, hi in zip(PLACE_ERROR_BINS[:-1], PLACE_ERROR_BINS[1:], strict=True):
            inside = [r for r, e in zip(rows, error, strict=True) if lo <= e < hi]
            spearman = {n: float(np.nanmean([r[n]["spearman"] for r in inside]))
                        if inside else math.nan for n in names}
            out["by_place_error"].append({"cm": [lo, hi if math.isfinite(hi) else None],
                                          "replannings": len(inside),
                                          "spearman": spearman})
    return out


def _summarise(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    from agents.evaluate import mean_ci  # noqa: PLC0415

    if not rows:
        return {"replannings": 0}
    touchable = [r for r in rows if r["any_touch"]]
    best = np.array([r["true_return"]["max"] for r in rows])
    average = np.array([r["true_return"]["mean"] for r in rows])
    out: dict[str, Any] = {
        "replannings": len(rows), "replannings_with_a_touching_sample": len(touchable),
        "true_return": {"best_sample": mean_ci(best), "sample_mean": mean_ci(average),
                        "carried_plan": mean_ci([r["carried"]["true_return"] for r in rows])},
        "carried_plan_touches_where_a_sample_does": sum(r["carried"]["touch"] for r in touchable),
        "place_error_cm": {"all_branches": mean_ci([r["place_error_cm"]["mean"] for r in rows]),
                           "imagined_choice": mean_ci([r["place_error_cm"]["choice"] for r in rows])},
        "objectives": {},
    }
    for name in names:  # a frame reference's own branches' place error
        if name in rows[0]["place_error_cm"]:
            out["place_error_cm"][f"{name}_branches"] = mean_ci(
                [r["place_error_cm"][name] for r in rows])
    imagined_choice = np.array([r[names[0]]["choice_true_return"] for r in rows])
    carried = np.array([r["carried"]["true_return"] for r in rows])
    out["carried_minus_choice"] = _paired(carried, imagined_choice)
    gain = best - average  # what a perfect ranking gains over a random sample
    kept = gain > 1e-9
    for name in names:
        rho = [r[name]["spearman"] for r in rows if not math.isnan(r[name]["spearman"])]
        chosen = np.array([r[name]["choice_true_return"] for r in rows])
        out["objectives"][name] = {
            "spearman": mean_ci(rho) if rho else (math.nan, 0.0),
            "choice_true_return": mean_ci(chosen),
            # share of the best sample's lead over the average that the choice keeps
            "choice_captured": mean_ci((chosen[kept] - average[kept]) / gain[kept])
            if kept.sum() > 1 else (math.nan, 0.0),
            "choice_touches_where_a_sample_does": sum(r[name]["choice_touch"] for r in touchable),
        }
        if name != names[0]:  # its choice against the imagined objective's, paired per row
            out["objectives"][name]["choice_minus_imagined_choice"] = _paired(
                chosen, imagined_choice)
    return out


def _place_error(places: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(N, H, 3) each branch's places over the horizon -> (N,) their mean distance (m) to the
    true ``centre`` (3,)."""
    return np.linalg.norm(places - centre, axis=-1).mean(1)


def _paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of a - b and the Wilcoxon signed-rank p (nan when every pair is equal)."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) and len(diff) > 1 else math.nan
    return {"mean": float(diff.mean()), "wilcoxon_p": p}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation; nan where either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def plot_audit(rows: list[dict[str, Any]], path: Any) -> None:
    """Three panels: per objective, the spread of its per-replanning rank correlation with the
    true return; over the replannings where some sample touches, how often each objective's
    first choice and the carried-out plan touch; and the imagined objective's correlation less
    the first reference's against how far the branches' imagined places are from the true one."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if not rows:
        raise ValueError("no audit rows to plot")
    names = objective_names(rows)
    fig, (left, right, error) = plt.subplots(1, 3, figsize=(15, 4))
    rhos = [[r[n]["spearman"] for r in rows if not math.isnan(r[n]["spearman"])] for n in names]
    left.boxplot(rhos, showmeans=True)
    left.set_xticks(range(1, len(names) + 1), names, rotation=20)
    left.axhline(0.0, color="grey", lw=0.8)
    left.set_ylabel("Spearman with the simulator's return")
    left.set_title(f"ranking of each replanning's samples ({len(rows)} replannings)")
    touchable = [r for r in rows if r["any_touch"]]
    labels = [*names, "carried plan"]
    counts = [sum(r[n]["choice_touch"] for r in touchable) for n in names]
    counts.append(sum(r["carried"]["touch"] for r in touchable))
    right.bar(labels, counts, color=["C0"] * len(names) + ["C1"])
    right.tick_params(axis="x", labelrotation=20)
    right.axhline(len(touchable), color="grey", ls="--", lw=0.8, label="a sample touches")
    right.set_ylabel("replannings")
    right.set_title("first choice touches, where some sample does")
    right.legend()
    reference = names[1] if len(names) > 1 else names[0]
    x = np.array([r["place_error_cm"]["mean"] for r in rows])
    y = np.array([r[IMAGINED]["spearman"] - r[reference]["spearman"] for r in rows])
    keep = ~np.isnan(y)
    error.scatter(x[keep], y[keep], s=8, alpha=0.4)
    edges = np.quantile(x[keep], np.linspace(0, 1, 6))  # five bins of equal count
    centres, means = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = keep & (x >= lo) & (x <= hi)
        if inside.any():
            centres.append(x[inside].mean())
            means.append(y[inside].mean())
    error.plot(centres, means, "o-", color="C3", label="mean per fifth of the replannings")
    error.axhline(0.0, color="grey", lw=0.8)
    error.set_xlabel("branches' imagined place: mean distance to the true one (cm)")
    error.set_ylabel(f"Spearman: {IMAGINED} - {reference}")
    error.set_title("ranking lost to the imagined place")
    error.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def objective_names(rows: list[dict[str, Any]]) -> list[str]:
    """The objectives an audit's rows score (the imagined one first)."""
    return [k for k, v in rows[0].items() if isinstance(v, dict) and "spearman" in v]


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="the summary of a written audit")
    parser.add_argument("rows", help="RUN_audit.jsonl (dexac agent eval --audit)")
    parser.add_argument("--seed-range", type=int, nargs=2, metavar=("FIRST", "LAST"),
                        help="only the replannings of these episode seeds (inclusive)")
    args = parser.parse_args(argv)
    with open(args.rows) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if args.seed_range:
        first, last = args.seed_range
        rows = [r for r in rows if first <= r["seed"] <= last]
    if not rows:
        print(f"{args.rows} holds no audit rows (in the seed range)", file=sys.stderr)
        return 1
    print(json.dumps(summarise(rows, objective_names(rows)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
