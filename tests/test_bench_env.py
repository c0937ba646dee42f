"""benchmarks/bench_env.py's choice of model (a candidate file is timed instead of the
default), and the arguments bench_env.py and bench_precision.py refuse before anything runs."""

from __future__ import annotations

import pytest

from benchmarks import bench_env
from tests.wm_helpers import tiny_model


def test_checkpoint_names_the_model_that_is_timed(tmp_path):
    path = tiny_model(dit={"patch_size": 1}).save_pretrained(str(tmp_path / "p1.safetensors"))
    model, store, kind = bench_env._model_and_store(str(tmp_path), path)
    assert kind == path
    assert model.config.dit.patch_size == 1  # not the shipped default's patch 2
    assert store


def test_a_missing_checkpoint_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_env.main(["--checkpoint", str(tmp_path / "none.safetensors"), "--no-sim"])
    assert "does not exist" in capsys.readouterr().err


def test_bench_precision_refuses_bad_arguments_before_anything_runs(tmp_path, capsys):
    from benchmarks import bench_precision

    with pytest.raises(SystemExit):
        bench_precision.main(["--checkpoint", str(tmp_path / "none.safetensors")])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_precision.main(["--rounds", "0"])
    assert ">= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_precision.main(["--precisions", "bf16"])
    assert "must include fp32" in capsys.readouterr().err


def test_machine_description_says_whether_bf16_has_units(monkeypatch):
    from benchmarks import bench_wm_step

    monkeypatch.setattr(bench_wm_step, "cpu_has_bf16_matmul", lambda: False)
    assert bench_wm_step.machine_description().endswith("bf16 matmul units: no")
    monkeypatch.setattr(bench_wm_step, "cpu_has_bf16_matmul", lambda: True)
    assert bench_wm_step.machine_description().endswith("bf16 matmul units: yes")
