"""Training faults and bad inputs (issue 14): pickled code in a run folder, a damaged newest
checkpoint, config floats, a resume on another rank count, the logged learning rate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.test_training import _metrics, _trainer
from training.config import ConfigError, TrainerConfig, load_config
from training.engine import CheckpointError, TorchEngine, load_fp32_state_dict


class Payload:
    """Unpickling this writes a marker file: the harmless stand-in for planted code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_pickled_code_in_a_deepspeed_run_is_refused_unrun(tmp_path):
    marker = tmp_path / "marker"
    tag = tmp_path / "checkpoints" / "step_00000002"
    tag.mkdir(parents=True)
    (tmp_path / "checkpoints" / "latest").write_text(tag.name)
    torch.save({"module": {}, "payload": Payload(marker)}, tag / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(CheckpointError, match="mp_rank_00_model_states.pt would run code"):
        load_fp32_state_dict(tmp_path / "checkpoints")
    assert not marker.exists()


def test_truncated_newest_checkpoint_falls_back_to_the_older_one(store_path, tmp_path, capsys):
    out = tmp_path / "run"
    _trainer(store_path, out, steps=8, checkpoint_every=4).fit()
    newest = out / "checkpoints" / "step_00000008" / "state.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    summary = _trainer(store_path, out, steps=8, checkpoint_every=4).fit(resume=True)
    assert summary["start_step"] == 4
    warning = capsys.readouterr().err
    assert "step_00000008/state.pt is damaged or truncated" in warning
    assert [r["step"] for r in _metrics(out)] == list(range(1, 9))


def test_resume_on_another_rank_count_is_refused_before_loading(
    store_path, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    _trainer(store_path, out, steps=4).fit()
    state_path = out / "checkpoints" / "step_00000004" / "state.pt"
    state = torch.load(state_path, weights_only=True)
    client = json.loads(state["client_state_json"])
    state["client_state_json"] = json.dumps({**client, "world_size": 2})
    torch.save(state, state_path)

    def engine_refuses(*args, **kwargs):  # DeepSpeed raises its own exception here
        raise RuntimeError("ZeRORuntimeException: the checkpoint has another world size")

    monkeypatch.setattr(TorchEngine, "load", engine_refuses)
    with pytest.raises(ConfigError, match="trained on 2 ranks, this run has 1"):
        _trainer(store_path, out, steps=4).fit(resume=True)


def test_logged_lr_is_the_rate_the_step_used(store_path, tmp_path):
    out = tmp_path / "run"
    _trainer(store_path, out, steps=3, warmup_steps=2, lr=1e-2).fit()
    assert [r["lr"] for r in _metrics(out)][:2] == pytest.approx([0.5e-2, 1e-2])


@pytest.mark.parametrize("raw, value", [("1e-3", 1e-3), ("3", 3.0), ("2.5E-4", 2.5e-4)])
def test_config_floats_accept_yaml_1_1_exponents(raw, value):
    config = load_config(TrainerConfig, None, [f"lr={raw}"])
    assert isinstance(config.lr, float) and config.lr == value


@pytest.mark.parametrize("raw", ["abc", "true", "nan", "[1, 2]"])
def test_config_floats_reject_what_is_not_a_number(raw):
    with pytest.raises(ConfigError, match="config key 'lr' expects a finite number"):
        load_config(TrainerConfig, None, [f"lr={raw}"])


def test_export_of_a_corrupt_run_is_one_line(tmp_path):
    tag = tmp_path / "step_00000001"
    tag.mkdir()
    (tmp_path / "latest").write_text(tag.name)
    (tag / "state.pt").write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(CheckpointError, match=f"{os.sep}state.pt is damaged or truncated"):
        load_fp32_state_dict(tmp_path)
