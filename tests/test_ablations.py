"""The ablation study: seed averaging, paired orderings and tables (evaluation.ablations), and
the resumable runner (training.ablation_study) end to end on the embedded store."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.ablations import aggregate, compare, markdown, orderings

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("psnr", "ssim", "lpips_sim", "pck@10/wrist", "pck@10/finger", "pck@10/head", "pck@20/all")


def _result(true_psnr, frozen_psnr, wrist=0.5) -> dict:
    def rows(psnrs):
        return [{**{k: wrist for k in KEYS}, "psnr": float(p)} for p in psnrs]

    return {
        "per_episode": {"true": rows(true_psnr), "frozen": rows(frozen_psnr)},
        "fid_sim": 1.0,
        "fvd_sim": 2.0,
    }


def test_seed_average_is_per_episode_and_gaps_are_true_minus_frozen():
    rng = np.random.default_rng(0)
    base = rng.normal(20, 1, 30)
    reports = {"dexac": [_result(base + 1, base), _result(base + 3, base)]}
    row = aggregate(reports)["dexac"]
    assert row["seeds"] == 2
    assert row["metrics"]["psnr"]["mean"] == pytest.approx(base.mean() + 2)
    assert row["gaps"]["psnr"]["mean"] == pytest.approx(2.0)
    assert row["seed_means"]["psnr"] == pytest.approx([base.mean() + 1, base.mean() + 3])
    assert row["fid_sim"] == 1.0


def test_orderings_hold_reverse_or_stay_unseparated():
    rng = np.random.default_rng(1)
    base = rng.normal(20, 1, 40)
    noise = rng.normal(0, 0.05, 40)
    reports = {
        "dexac": [_result(base + 0.5, base)],
        "mlp_global": [_result(base + noise, base)],  # clearly worse on PSNR
        "dexac_no_local": [_result(base + 0.5 + noise, base)],  # equal up to noise
        "dexac_no_global": [_result(base + 1.0, base)],  # clearly better
    }
    verdicts = {(o["worse"], o["metric"]): o["verdict"] for o in orderings(reports)}
    assert verdicts[("mlp_global", "psnr")] == "holds"
    assert verdicts[("dexac_no_local", "psnr")] == "not separated"
    assert verdicts[("dexac_no_global", "psnr")] == "reversed"
    assert ("frame_adaln", "psnr") not in verdicts  # never run: not compared
    diff = compare(reports, "dexac", "mlp_global", "gap:psnr")
    assert diff["mean"] == pytest.approx(0.5 - noise.mean())
    text = markdown({"variants": aggregate(reports), "orderings": orderings(reports)})
    assert "Table 3 layout" in text and "| `dexac` > `mlp_global` | PSNR |" in text
    assert "Table 4 layout" in text  # dexac alone is a Table 4 row too


def test_reports_without_per_episode_values_say_how_to_fix_it():
    with pytest.raises(ValueError, match="re-run dexac evaluate"):
        aggregate({"dexac": [{"checkpoint": "old.safetensors", "methods": {}}]})


@pytest.mark.slow
def test_study_trains_scores_tabulates_and_resumes(tmp_path):
    """Two variants x one seed, a few steps each, on a copy of the embedded store; a second
    call repeats nothing."""
    from dexac_env.defaults import DEFAULT_CHECKPOINT, DEFAULT_STORE
    from dexac_env.replay.store import EpisodeStore
    from evaluation.detector import DetectorConfig, KeypointDetector
    from training import ablation_study, cache_latents, extract_components
    from training.train_detector import point_set

    store = tmp_path / "store.zarr"
    shutil.copytree(DEFAULT_STORE, store)
    assert extract_components.main([str(DEFAULT_CHECKPOINT), "--out-dir", str(tmp_path)]) == 0
    tokenizer, semantic = (
        tmp_path / "tokenizer_tiny.safetensors",
        tmp_path / "ssl_vit_tiny.safetensors",
    )
    assert (
        cache_latents.main(
            ["--store", str(store), "--tokenizer", str(tokenizer), "--semantic", str(semantic)]
        )
        == 0
    )
    names, families = point_set(EpisodeStore.open(store))
    torch.manual_seed(0)
    KeypointDetector(DetectorConfig(names, families, 64, (8, 8, 16))).save(str(tmp_path / "det.st"))
    argv = [
        "--config",
        str(ROOT / "configs/wm/ablation.yaml"),
        "--set",
        f"data.store={store}",
        "--set",
        f"model.tokenizer_checkpoint={tokenizer}",
        "--set",
        f"model.semantic_checkpoint={semantic}",
        "--set",
        "trainer.batch_size=2",
        "--variants",
        "mlp_global",
        "dexac",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--out-dir",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results/abl"),
        "--store",
        str(store),
        "--split",
        "test",
        "--frames",
        "2",
        "--num-steps",
        "1",
        "--detector",
        str(tmp_path / "det.st"),
    ]
    assert ablation_study.main(argv) == 0
    study = json.loads((tmp_path / "results/abl.json").read_text())
    assert set(study["variants"]) == {"mlp_global", "dexac"}
    assert study["steps"] == {"mlp_global_s0": 2, "dexac_s0": 2}
    assert {o["worse"] for o in study["orderings"]} == {"mlp_global"}
    for suffix in (".md", "_loss_curves.png", "_adaln_heatmap.png", "_tokens_pca.png"):
        assert (tmp_path / f"results/abl{suffix}").stat().st_size > 0, suffix
    stamps = {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("*.safetensors")}
    assert ablation_study.main(argv) == 0  # resumed: nothing retrained, re-exported or re-scored
    assert {p: p.stat().st_mtime for p in stamps} == stamps
    log = (tmp_path / "runs/logs/dexac_s0.log").read_text()
    assert log.count("train_wm.py") == 1 and sys.executable in log
    assert study["command"].endswith(" ".join(argv[-4:]))
    # other evaluation settings: scored again, nothing retrained
    assert ablation_study.main([*argv[:-4], "--num-steps", "2", *argv[-2:]]) == 0
    log = (tmp_path / "runs/logs/dexac_s0.log").read_text()
    assert log.count("train_wm.py") == 1 and log.count("dexac_env.cli evaluate") == 2
