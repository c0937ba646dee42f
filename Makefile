# All set-up on a fresh machine: `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0

.PHONY: demo test venv lint bench clean-venv default-model evaluate ablations distill task-reward touch-planner

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, CPU build from local disk; a plain `torch` would pull a multi-GB CUDA build
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(VENV)/bin/dexac demo

test: venv
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)

# The embedded default, end to end (~5 h on 2 CPU cores; the default world model alone is
# ~3.5 h of it, or ~15 min on one GPU): the simulator's data set, the VAE tokenizer, the ssl-vit-tiny
# semantic encoder, cached latents and their training pack, the default DexAC world model (wide
# DiT, 1-frame chunks, context noise: docs/experiments.md E3-E4; then fine-tuned with the
# projected-keypoint prior in three stages and stored as int8: E8; a fourth stage, E11; then
# moved onto objects in random shades and their tokenizer: E17, E19), the tiny DexAC / mlp_global
# baseline pair at one budget, the default episode store, the long test store, the keypoint
# detector and the evaluation tables. dexac_env/assets/README.md records what produced the files.
default-model: venv
	$(VENV)/bin/dexac sim generate --task all --episodes 400 --out data/sim.zarr --resolution 64 --fps 10 --workers 2 --seed 0
	$(PY) training/train_tokenizer.py --config configs/tokenizer/tiny_vae.yaml
	$(PY) training/train_tokenizer.py --config configs/tokenizer/tiny_ssl_vit.yaml
	$(PY) training/cache_latents.py --store data/sim.zarr --tokenizer checkpoints/tokenizer_tiny.safetensors --semantic checkpoints/ssl_vit_tiny.safetensors --wm-size tiny
	$(PY) -m training.latent_pack --store data/sim.zarr --split train --out data/packs/sim_train_f16_sem1.npz --semantic-frames 1 --latent-dtype float16
	$(PY) training/train_wm.py --config configs/wm/gpu/wide_step1.yaml
	$(PY) training/train_wm.py --config configs/wm/keypoints/prior.yaml
	$(PY) training/train_wm.py --config configs/wm/keypoints/prior_more.yaml
	$(PY) training/train_wm.py --config configs/wm/keypoints/prior_stage3.yaml
	$(PY) training/export.py runs/keypoints_prior_stage3 --compact --storage int8 --sampler-steps 2 --output dexac_env/assets/dexac_default.safetensors
	# the fourth stage starts from the third's export (run on a GPU in E11; ~70 min on 2 CPU cores)
	$(PY) training/train_wm.py --config configs/wm/keypoints/prior_stage4_gpu.yaml
	$(PY) training/export.py runs/keypoints_prior_stage4 --compact --storage int8 --sampler-steps 2 --output dexac_env/assets/dexac_default.safetensors
	cp dexac_env/assets/dexac_default.safetensors checkpoints/dexac_stage4.safetensors
	# then moved onto objects in random shades of their colour names and a tokenizer fine-tuned on
	# them (E17; shipped since E19): ~1.2 h on 2 CPU cores, from the fourth stage's export
	$(VENV)/bin/dexac sim generate --task all --episodes 400 --out data/sim_hues.zarr --resolution 64 --fps 10 --workers 2 --seed 0 --train-colors hues
	$(PY) training/train_tokenizer.py --config configs/tokenizer/tiny_vae_hues.yaml
	$(PY) training/cache_latents.py --store data/sim_hues.zarr --tokenizer checkpoints/tokenizer_tiny_hues.safetensors --semantic checkpoints/ssl_vit_tiny.safetensors
	$(PY) -m training.latent_pack --store data/sim_hues.zarr --split train --out data/packs/sim_hues_train_f16_sem1.npz --semantic-frames 1 --latent-dtype float16
	$(PY) training/train_wm.py --config configs/wm/keypoints/hues.yaml
	$(PY) training/export.py runs/wm_hues --compact --storage int8 --sampler-steps 2 --output dexac_env/assets/dexac_default.safetensors
	$(PY) training/train_wm.py --config configs/wm/tiny.yaml
	$(PY) training/train_wm.py --config configs/wm/tiny_mlp_global.yaml
	$(PY) training/export.py runs/wm_tiny_dexac --compact --output benchmarks/checkpoints/tiny_dexac.safetensors
	rm -rf dexac_env/assets/default_episodes.zarr
	$(VENV)/bin/dexac sim generate --task all --episodes 10 --out dexac_env/assets/default_episodes.zarr --resolution 64 --fps 10 --workers 1 --seed 1
	$(VENV)/bin/dexac sim generate --task all --episodes 40 --frames 72 --test-fraction 0.9 --val-fraction 0.05 --out data/sim_long.zarr --resolution 64 --fps 10 --workers 1 --seed 2
	$(PY) -m training.train_detector --config configs/detector/tiny.yaml
	$(MAKE) evaluate MLP_GLOBAL=runs/wm_tiny_mlp_global/model.safetensors TINY_DEXAC=runs/wm_tiny_dexac/model.safetensors

# The yardstick (docs/evaluation.md) on the simulator's held-out test split, 16 frames
# (data/sim.zarr) and 64 frames (data/sim_long.zarr).
# The tiny pair (dexac vs mlp_global at one budget: the paper's comparison) are the shipped
# baselines (float16); default-model passes its fresh fp32 runs instead. The default model is
# scored driven exactly as DexACWorld-v0's default 1-frame step drives it (its chunk is 1 frame).
MLP_GLOBAL ?= benchmarks/checkpoints/tiny_mlp_global.safetensors
TINY_DEXAC ?= benchmarks/checkpoints/tiny_dexac.safetensors
DEFAULT_WM := dexac_env/assets/dexac_default.safetensors
EVAL_CHECKPOINTS := --checkpoint $(DEFAULT_WM) --label "dexac default" --checkpoint $(TINY_DEXAC) --label "dexac tiny" --checkpoint $(MLP_GLOBAL) --label "mlp_global tiny"
evaluate: venv
	$(VENV)/bin/dexac evaluate $(EVAL_CHECKPOINTS) --store data/sim.zarr --split test --frames 16 --out benchmarks/results/eval_16.json --analysis
	$(VENV)/bin/dexac evaluate --checkpoint $(DEFAULT_WM) --label "dexac default (env step)" --checkpoint $(TINY_DEXAC) --label "dexac tiny (env step)" --store data/sim.zarr --split test --frames 16 --env-step --out benchmarks/results/eval_16_env_step.json
	$(VENV)/bin/dexac evaluate $(EVAL_CHECKPOINTS) --store data/sim_long.zarr --split test --frames 64 --limit 16 --out benchmarks/results/eval_64.json

# The paper's ablation tables on our data (docs/ablations.md): 6 variants x 2 seeds of the
# default's recipe on the tiny DiT (configs/wm/ablation.yaml), trained, exported and scored one
# after the other; resumable (re-run to continue). ~1.5 h on 2 CPU cores. Needs the pack of
# default-model.
ablations: venv
	$(PY) -m training.ablation_study --config configs/wm/ablation.yaml --seeds 0 1 --num-steps 2

# A 1-step student of the default's 2-step sampler (docs/experiments.md E6): 600 steps, then
# 600 more from that student (~35 min on 2 CPU cores), each scored on the test split.
distill: venv
	$(PY) training/distill_wm.py --config configs/wm/distill_1step.yaml
	$(PY) training/export.py runs/distill_1step --compact --output runs/distill_1step/student.safetensors
	$(VENV)/bin/dexac evaluate --checkpoint runs/distill_1step/student.safetensors --label "1-step student (distilled)" --store data/sim.zarr --split test --frames 16 --num-steps 1 --out benchmarks/results/e6_16_student.json
	$(PY) training/distill_wm.py --config configs/wm/distill_1step_more.yaml
	$(PY) training/export.py runs/distill_1step_more --compact --output runs/distill_1step_more/student.safetensors
	$(VENV)/bin/dexac evaluate --checkpoint runs/distill_1step_more/student.safetensors --label "1-step student, 1200 steps" --store data/sim.zarr --split test --frames 16 --num-steps 1 --out benchmarks/results/e6_16_student_more.json

# The task reward head shipped as dexac_env/assets/task_reward_touch.safetensors (docs/agents.md,
# docs/experiments.md E9): 3,200 touch episodes (~9 min), then the head (~30 min on 2 CPU cores:
# encoding, imagining, 2,400 steps; its val/test scores beside it). Needs data/sim.zarr
# (default-model's first command).
task-reward: venv
	MUJOCO_GL=egl $(VENV)/bin/dexac sim generate --task touch --episodes 800 --play-fraction 0.3 --seed 7 --out data/sim_touch.zarr
	MUJOCO_GL=egl $(VENV)/bin/dexac sim generate --task touch --episodes 2400 --play-fraction 0.3 --seed 8 --out data/sim_touch_more.zarr
	$(PY) -m training.train_task_reward --config configs/task_reward/touch_more.yaml
	cp checkpoints/task_reward_touch_more.safetensors dexac_env/assets/task_reward_touch.safetensors

# The touch planner's two learned parts, shipped in dexac_env/assets/ (docs/agents.md, "Locating
# the object on the real frame"; docs/experiments.md E10, E13): the contact-structured head (its
# reward form; ~36 min on 2 CPU cores) and the object locator (~12 min with gathering its
# frames). Needs the stores of default-model and task-reward.
touch-planner: venv
	$(PY) -m training.train_task_reward --config configs/task_reward/touch_contact.yaml
	$(PY) -m training.train_locator --config configs/locator/touch.yaml
	cp checkpoints/task_reward_touch_contact.safetensors dexac_env/assets/task_reward_touch_contact.safetensors
	cp checkpoints/object_locator_touch.safetensors dexac_env/assets/object_locator_touch.safetensors
