"""The yardstick: PCK per family, detector training, action sensitivity, metric cross-checks,
and ``dexac evaluate`` end to end on the shipped model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dexac_env.actions import matrix_from_rot6d, reanchor_motion, rot6d_from_matrix
from evaluation.detector import Detections, DetectorConfig, KeypointDetector
from evaluation.distribution import fid_sim, fvd_sim, lpips_sim
from evaluation.report import evaluate_checkpoint
from evaluation.rollouts import EpisodeArrays, action_rows
from evaluation.scoring import family_means, mean_ci, point_correctness
from world_model.metrics import pck_correct, psnr, ssim

FAMILIES = ("wrist", "finger", "finger", "head")


def test_pck_counts_missing_as_wrong_and_skips_invisible():
    target = np.array([[[10, 10], [20, 20], [30, 30], [40, 40]]], float)
    pred = target + np.array([[[1, 0], [0, 7], [0, 0], [0, 0]]])
    visible = np.array([[True, True, True, False]])
    found = np.array([[True, True, False, True]])
    correct = pck_correct(pred, target, visible, threshold=0.1, scale=64, found=found)
    # 1 px: right; 7 px > 6.4: wrong; not found: wrong; invisible: not scored
    np.testing.assert_array_equal(correct[0, :3], [1, 0, 0])
    assert np.isnan(correct[0, 3])
    means = family_means(correct, FAMILIES)
    assert means == {"all": pytest.approx(1 / 3), "wrist": 1.0, "finger": 0.0, "head": None}
    assert family_means(correct, ("wrist", "finger", "finger", "finger"))["head"] is None


def test_point_correctness_thresholds_are_strict_fractions_of_the_side():
    detections = Detections(
        uv=np.array([[[0.0, 3.1]]]),
        found=np.ones((1, 1), bool),
        presence=np.ones((1, 1)),
        features=np.zeros((1, 4)),
    )
    correct = point_correctness(detections, np.zeros((1, 1, 2)), np.ones((1, 1), bool), 64)
    assert (correct["pck@5"][0, 0], correct["pck@10"][0, 0]) == (1.0, 1.0)
    detections.uv[0, 0, 1] = 3.3  # > 3.2 px = 5% of 64
    correct = point_correctness(detections, np.zeros((1, 1, 2)), np.ones((1, 1), bool), 64)
    assert (correct["pck@5"][0, 0], correct["pck@10"][0, 0]) == (0.0, 1.0)


def test_mean_ci_matches_student_t():
    ci = mean_ci([1.0, 2.0, 3.0, None, float("nan")])
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(2.0)
    assert ci["ci95"] == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)


def test_psnr_ssim_agree_with_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    for i in range(2):
        assert psnr(a[i], b[i]) == pytest.approx(peak_signal_noise_ratio(b[i], a[i]), abs=1e-3)
        expected = structural_similarity(
            b[i],
            a[i],
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        assert ssim(a[i], b[i]) == pytest.approx(expected, abs=2e-3)


def _dot_frames(points: np.ndarray, size: int = 32) -> np.ndarray:
    """Dark frames with one coloured 3x3 dot per point; points (N, K, 2)."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
    frames = np.full((len(points), size, size, 3), 20, np.uint8)
    for n, frame_points in enumerate(points):
        for k, (u, v) in enumerate(frame_points.astype(int)):
            frames[n, max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2] = colours[k]
    return frames


def _tiny_detector() -> KeypointDetector:
    torch.manual_seed(0)
    return KeypointDetector(DetectorConfig(("a", "b", "c", "d"), FAMILIES, 32, (8, 8, 16)))


def test_detector_trains_and_finds_dots():
    rng = np.random.default_rng(0)
    points = rng.uniform(4, 28, (64, 4, 2))
    batch = {
        "frames": torch.from_numpy(_dot_frames(points)),
        "points_uv": torch.from_numpy(points).float(),
        "visible": torch.ones(64, 4, dtype=torch.bool),
    }
    detector = _tiny_detector()
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss, logs = detector.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(logs["loss"])
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    detections = detector.eval().detect(batch["frames"].numpy())
    assert detections.uv.shape == (64, 4, 2) and detections.found.mean() > 0.9
    assert np.median(np.linalg.norm(detections.uv - points, axis=-1)) < 2.5


def test_detector_save_load_round_trip(tmp_path):
    detector = _tiny_detector().eval()
    path = str(tmp_path / "det.safetensors")
    detector.save(path, extra={"ceiling": {"x": 1.0}})
    loaded = KeypointDetector.load(path)
    frames = _dot_frames(np.full((2, 4, 2), 10.0))
    np.testing.assert_allclose(loaded.detect(frames).uv, detector.detect(frames).uv)
    assert loaded.info["ceiling"] == {"x": 1.0}
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        KeypointDetector.load(str(tmp_path / "bad.safetensors"))


def test_reanchor_motion_replays_the_displacement_from_the_new_start():
    rng = np.random.default_rng(1)
    motion = rng.normal(0, 0.1, (5, 57))
    for dims in (slice(3, 9), slice(12, 18), slice(21, 27)):
        angles = rng.normal(0, 0.3, (5, 3))
        motion[:, dims] = rot6d_from_matrix(np.stack([_rotation(a) for a in angles]))
    start = rng.normal(0, 0.1, 57)
    start[3:9] = rot6d_from_matrix(_rotation([0.2, -0.1, 0.4]))
    start[12:18] = start[21:27] = rot6d_from_matrix(np.eye(3))
    out = reanchor_motion(motion, start)
    np.testing.assert_allclose(out[0, :3], start[:3], atol=1e-6)
    np.testing.assert_allclose(
        out[3, 30:33] - out[0, 30:33], motion[3, 30:33] - motion[0, 30:33], atol=1e-6
    )
    got = matrix_from_rot6d(out[3, 3:9]) @ matrix_from_rot6d(out[0, 3:9]).T
    want = matrix_from_rot6d(motion[3, 3:9]) @ matrix_from_rot6d(motion[0, 3:9]).T
    np.testing.assert_allclose(got, want, atol=1e-5)
    held = reanchor_motion(np.repeat(motion[:1], 4, axis=0), start)
    np.testing.assert_allclose(held, np.repeat(held[:1], 4, axis=0), atol=1e-6)


def _rotation(angles) -> np.ndarray:
    x, y, z = angles
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


# -- action sensitivity on stub world models --------------------------------------------------


class StubModel:
    """A world model whose latent frame is a grey level: ``follows`` copies action dim 18 (the
    right wrist's x) into it; otherwise it repeats the last context frame (ignores actions)."""

    def __init__(self, follows: bool) -> None:
        self.follows = follows
        self.config = SimpleNamespace(
            context_frames=1, chunk_frames=2, action_frames=2, temporal_compression=1
        )

    def encode(self, frames):  # (B, T, H, W, 3) -> (B, T, 1, 1, 1)
        return frames.float().mean(dim=(2, 3, 4))[..., None, None, None] / 255.0

    def decode(self, latents):  # (B, T, 1, 1, 1) -> (B, T, 8, 8, 3) uint8
        grey = (latents.clamp(0, 1) * 255).round().to(torch.uint8)
        return grey.expand(*latents.shape[:2], 8, 8, 3).contiguous()

    def encode_semantic(self, frame, texts):
        return None

    def clear_cache(self):
        pass

    def predict(
        self, context, chunk, semantic=None, generator=None, num_steps=None, cfg_scale=None
    ):
        if self.follows:
            return chunk[:, 1:, 18].reshape(chunk.shape[0], -1, 1, 1, 1).clamp(0, 1)
        return context[:, -1:].expand(-1, 2, -1, -1, -1)


def _stub_episode() -> EpisodeArrays:
    actions = np.zeros((9, 57))
    actions[:, 18] = np.linspace(0.1, 0.9, 9)
    rgb = np.broadcast_to(
        (actions[:, 18] * 255).round().astype(np.uint8)[:, None, None, None], (9, 8, 8, 3)
    ).copy()
    return EpisodeArrays("stub", rgb, actions, np.zeros((9, 4, 2)), np.ones((9, 4), bool), "t")


def _gaps(model) -> dict:
    episode = _stub_episode()

    def variants_of(ep, index):
        true = action_rows(ep.actions, 1, 6)
        return {"true": true, "frozen": np.repeat(true[:1], 7, axis=0), "other": true[::-1].copy()}

    result = evaluate_checkpoint(model, [episode, episode], variants_of, None, frames=6)
    return result["sensitivity"]


def test_action_sensitivity_is_zero_for_a_model_that_ignores_actions():
    gaps = _gaps(StubModel(follows=False))
    assert gaps["psnr true-frozen"]["mean"] == pytest.approx(0.0)
    assert gaps["psnr true-other"]["mean"] == pytest.approx(0.0)


def test_action_sensitivity_is_positive_for_a_model_that_follows_actions():
    gaps = _gaps(StubModel(follows=True))
    assert gaps["psnr true-frozen"]["mean"] > 20.0
    assert gaps["psnr true-other"]["mean"] > 5.0


# -- distribution metrics ---------------------------------------------------------------------


def test_sim_distribution_metrics_separate_shifted_sets():
    detector = _tiny_detector().eval()
    rng = np.random.default_rng(0)
    real = _dot_frames(rng.uniform(4, 28, (40, 4, 2)))
    fake = np.clip(real.astype(int) + 90, 0, 255).astype(np.uint8)
    real_features = detector.detect(real).features
    fake_features = detector.detect(fake).features
    same = fid_sim(real_features, real_features)
    assert abs(same) < 1e-3 and fid_sim(real_features, fake_features) > same + 1e-3
    features = rng.normal(size=(30, 6, 5))
    assert abs(fvd_sim(features, features)) < 1e-6
    assert fvd_sim(features, features + 1.0) > 1.0
    assert lpips_sim(detector, real[:3], real[:3]) == pytest.approx(np.zeros(3), abs=1e-6)
    assert (lpips_sim(detector, real[:3], fake[:3]) > 0).all()


def test_detector_training_set_holds_each_models_reconstructions():
    """One detector fair to two tokenizers: the true frames, then each model's drawings of them."""
    from dexac_env.defaults import DEFAULT_CHECKPOINT, DEFAULT_STORE
    from training.config import ConfigError, load_config
    from training.datasets import open_store
    from training.train_detector import DetectorRunConfig, build_dataset, read_points, reconstruct

    tiny = "benchmarks/checkpoints/tiny_dexac.safetensors"
    config = load_config(
        DetectorRunConfig,
        None,
        [
            f"data.store={DEFAULT_STORE}",
            f"data.world_model={DEFAULT_CHECKPOINT}",
            f"data.also_world_models=[{tiny}]",
        ],
    )
    views = config.data.reconstruction_views()
    assert list(views) == ["reconstructions", "reconstructions tiny_dexac"]
    dataset, *_ = build_dataset(config)
    frames, points, _ = read_points(open_store(DEFAULT_STORE), "train")
    n = len(frames)
    assert len(dataset.frames) == 3 * n
    np.testing.assert_array_equal(dataset.frames[:n], frames)
    np.testing.assert_array_equal(dataset.frames[2 * n :], reconstruct(tiny, frames))
    np.testing.assert_array_equal(dataset.points_uv[2 * n :].numpy(), points.astype(np.float32))
    # the two tokenizers draw differently, so the blocks are not copies of each other
    assert not np.array_equal(dataset.frames[n : 2 * n], dataset.frames[2 * n :])
    with pytest.raises(ConfigError, match="also_world_models"):
        load_config(
            DetectorRunConfig, None, ["data.world_model=null", f"data.also_world_models=[{tiny}]"]
        )
    with pytest.raises(ConfigError, match="one stem"):
        load_config(DetectorRunConfig, None, [f"data.also_world_models=[{tiny}, x/{Path(tiny).name}]"])


# -- the CLI on the shipped model -------------------------------------------------------------


@pytest.mark.slow
def test_dexac_evaluate_writes_tables_plots_and_json(tmp_path):
    from dexac_env.cli import main
    from dexac_env.defaults import DEFAULT_CHECKPOINT, DEFAULT_STORE
    from dexac_env.replay.store import EpisodeStore
    from training.train_detector import point_set

    names, families = point_set(EpisodeStore.open(DEFAULT_STORE))
    torch.manual_seed(0)
    detector = KeypointDetector(DetectorConfig(names, families, 64, (8, 8, 16)))
    detector.save(str(tmp_path / "det.safetensors"))
    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(DEFAULT_CHECKPOINT),
            "--store",
            str(DEFAULT_STORE),
            "--split",
            "train",
            "--frames",
            "4",
            "--limit",
            "2",
            "--num-steps",
            "1",
            "--detector",
            str(tmp_path / "det.safetensors"),
            "--out",
            str(out),
            "--analysis",
            "--precision",
            "bf16",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    result = report["results"][0]
    assert result["episodes"] == 2 and result["label"] == "dexac"
    assert result["precision"] == "bf16" and "--precision bf16" in report["command"]
    assert set(result["methods"]) >= {
        "true",
        "frozen",
        "other",
        "vae_reconstruction",
        "copy_last_context",
        "true_frames",
    }
    assert (
        "pck@10/head" in result["methods"]["true"] and "psnr true-frozen" in result["sensitivity"]
    )
    assert report["command"].startswith("dexac evaluate --checkpoint")
    for suffix in (".md", "_curves.png", "_strip.png", "_adaln_heatmap.png", "_tokens_pca.png"):
        assert (tmp_path / f"eval{suffix}").stat().st_size > 0, suffix
    assert "| **dexac** |" in (tmp_path / "eval.md").read_text()


def test_restated_family_constant_agrees_with_the_action_layout():
    from dexac_env.actions import FAMILY_INDEX, FAMILY_NAMES
    from evaluation.analysis import FAMILY_OF_DIM

    assert list(FAMILY_OF_DIM) == [FAMILY_NAMES[i] for i in FAMILY_INDEX]


def test_stores_without_landmarks_report_head_as_not_available():
    from evaluation.cli import _fit_points

    uv, visible = _fit_points(np.zeros((3, 12, 2)), np.ones((3, 12), bool), 16)
    assert uv.shape == (3, 16, 2) and not visible[:, 12:].any()
    correct = pck_correct(uv, uv, visible, 0.1, 64)
    families = ("wrist",) + ("finger",) * 5 + ("wrist",) + ("finger",) * 5 + ("head",) * 4
    assert family_means(correct, families)["head"] is None


def test_merge_refuses_runs_scored_differently(tmp_path):
    from types import SimpleNamespace as Args

    from evaluation.cli import _merge

    previous = {
        "store": "s",
        "split": "test",
        "frames": 16,
        "detector": "d",
        "results": [],
        "command": "dexac evaluate ...",
        "settings": {"limit": 5, "seed": 0},
    }
    path = tmp_path / "prev.json"
    path.write_text(json.dumps(previous))
    report = {**previous, "settings": {"limit": 6, "seed": 0}, "command": "now"}
    with pytest.raises(ValueError, match="settings"):
        _merge(report, [("x", None, [])], Args(merge=str(path)))
    merged, models = _merge(
        {**previous, "command": "now"}, [("x", None, [])], Args(merge=str(path))
    )
    assert merged["merged_commands"] == ["dexac evaluate ..."] and len(models) == 1
    # a file path given relative here and absolute there is the same detector ...
    absolute = {**previous, "detector": str(Path("d").resolve()), "command": "now"}
    merged, _ = _merge(absolute, [("x", None, [])], Args(merge=str(path)))
    assert merged["results"] == []
    # ... another file is not
    with pytest.raises(ValueError, match="detector"):
        _merge({**previous, "detector": "other"}, [("x", None, [])], Args(merge=str(path)))


def test_hold_future_shows_each_sampler_call_only_its_own_target():
    from world_model.rollout import rollout_latents

    model, calls = StubModel(follows=True), []
    predict = model.predict
    model.predict = lambda ctx, chunk, *a, **k: (
        calls.append(chunk.clone()) or predict(ctx, chunk, *a, **k)
    )
    rows = (torch.arange(5.0) / 10)[None, :, None].expand(1, 5, 57).contiguous()
    rollout_latents(model, torch.zeros(1, 1, 1, 1, 1), rows, frames_per_call=1, hold_future=True)
    assert [c[0, :, 0].tolist() for c in calls] == [
        pytest.approx([i / 10, (i + 1) / 10, (i + 1) / 10]) for i in range(4)
    ]
    calls.clear()
    rollout_latents(model, torch.zeros(1, 1, 1, 1, 1), rows, frames_per_call=1)
    assert calls[0][0, :, 0].tolist() == pytest.approx([0.0, 0.1, 0.2])  # sees the true future


def test_motion_point_indices_agree_with_the_keypoint_layout():
    from dexac_env.actions import KEYPOINT_NAMES
    from evaluation.motion import TIPS, WRISTS

    assert [KEYPOINT_NAMES[i] for i in WRISTS] == ["left_wrist", "right_wrist"]
    for wrist, tips in TIPS.items():
        side = KEYPOINT_NAMES[wrist].split("_")[0]
        assert [KEYPOINT_NAMES[i] for i in tips] == [
            n for n in KEYPOINT_NAMES if n.startswith(side) and n.endswith("_tip")
        ]


def test_cfg_scale_and_context_noise_options_reach_the_sampler():
    from evaluation.cli import command_line, rollout_options, with_sampler
    from tests.wm_helpers import tiny_model

    args = SimpleNamespace(
        num_steps=3, frames_per_call=None, env_step=True, cfg_scale=2.0, context_noise=0.1
    )
    options = rollout_options(args)
    assert (options.frames_per_call, options.hold_future, options.cfg_scale) == (1, True, 2.0)
    model = with_sampler(tiny_model("dexac", semantic=False), args)
    assert model.config.sampler.context_noise == 0.1
    untouched = with_sampler(tiny_model("dexac", semantic=False), SimpleNamespace())
    assert untouched.config.sampler.context_noise == 0.0
    full = SimpleNamespace(
        checkpoint=["m.safetensors"],
        label=None,
        store="s.zarr",
        split="test",
        frames=16,
        limit=None,
        merge=None,
        seed=0,
        detector="d.safetensors",
        out="o.json",
        analysis=False,
        **vars(args),
    )
    assert "--cfg-scale 2.0 --context-noise 0.1" in command_line(full)


def test_precision_is_one_for_all_or_one_per_checkpoint(tmp_path):
    from evaluation.cli import _check_args, command_line, precision_of

    files = [tmp_path / "a.safetensors", tmp_path / "d.safetensors"]
    for f in files:
        f.write_bytes(b"")
    args = SimpleNamespace(
        checkpoint=[str(files[0])] * 3, label=None, frames=16, detector=str(files[1]),
        precision=["fp32", "bf16"],
    )
    with pytest.raises(ValueError, match="one --precision for all"):
        _check_args(args)
    args.precision = ["fp32", "bf16", "bf16"]
    _check_args(args)
    assert [precision_of(args, i) for i in range(3)] == ["fp32", "bf16", "bf16"]
    args.precision = ["bf16"]
    assert [precision_of(args, i) for i in range(3)] == ["bf16"] * 3
    args.precision = None
    assert precision_of(args, 2) == "fp32"
    args.precision = ["fp32", "bf16", "bf16"]
    for name in ("store", "split", "limit", "merge", "seed", "out", "num_steps",
                 "frames_per_call", "cfg_scale", "context_noise", "start_sigma"):
        setattr(args, name, None)
    assert "--precision fp32 --precision bf16 --precision bf16" in command_line(args)


def test_still_hand_is_read_from_the_store_or_from_the_true_motion():
    from benchmarks.still_hand import hand_pck, still_hand_of

    kp3 = np.zeros((5, 12, 3))
    kp3[:, :6, 0] = np.linspace(0, 0.10, 5)[:, None]  # the left hand moves 10 cm
    kp3[:, 6:, 0] = np.linspace(0, 0.005, 5)[:, None]  # the right one 5 mm
    assert still_hand_of({}, kp3, 0.02, 0.08) == "right"
    assert still_hand_of({"still_hand": "left"}, kp3, 0.02, 0.08) == "left"
    assert still_hand_of({}, kp3, 0.02, 0.12) is None  # the moving hand moved too little
    assert still_hand_of({}, None, 0.02, 0.08) is None
    correct = np.zeros((3, 12))
    correct[:, :6] = 1.0  # every left point right, every right point wrong
    correct[0, 0] = np.nan  # not scored
    scores = hand_pck({"pck@10": correct}, "left")
    assert scores == {"still_pck@10": 1.0, "moving_pck@10": 0.0}
    assert hand_pck({"pck@10": correct}, "right") == {"still_pck@10": 0.0, "moving_pck@10": 1.0}


def test_still_hand_benchmark_scores_one_hand_play(tmp_path):
    """On one-hand play episodes the benchmark scores the still and the moving hand apart, for
    true and frozen poses, with the detector's ceiling on the true frames."""
    import json

    from benchmarks.still_hand import main
    from dexac_env.sim.generate import GenerateConfig, generate

    store = tmp_path / "one_hand.zarr"
    generate(GenerateConfig(out=str(store), tasks=("touch",), episodes=2, resolution=64, frames=6,
                            workers=1, seed=3, play_fraction=1.0, one_hand_play=1.0,
                            test_fraction=0.9, val_fraction=0.0), progress=False)
    out = tmp_path / "still.json"
    assert main(["--checkpoint", "dexac_env/assets/dexac_default.safetensors", "--store", str(store),
                 "--frames", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["episodes"] == sum(report["hands_held"].values()) >= 1
    summary = report["results"][0]["summary"]
    assert set(summary) == {"true", "frozen"}
    assert report["true_frames"]["still_pck@10"]["mean"] > 0.8  # the detector sees the real hand
    assert out.with_suffix(".md").read_text().count("| ") > 10
