#!/usr/bin/env bash
# GPU wave 2 (docs/experiments.md E11): what one lent GPU session runs, in one command that fits
# the device tool's 10-minute limit. Run from the repository root, with the wheels the GPU image
# lacks in .whl/ and the train split's pack in data/packs/ (both travel; the stores do not):
#   OUT=/tmp/wave2 bash benchmarks/gpu_wave2.sh
# 1. the CUDA-only tests (tests/test_inference_modes.py: CUDA-graph replay == eager predict);
# 2. issue #12's GPU path: imagined env steps/s of the shipped model for 1, 16 and 256 envs,
#    fp32 / bf16 autocast, each eager and with CUDA graphs, rgb and latent observations, 16 envs
#    batched against a loop of 16 single envs (benchmarks/bench_env.py --device cuda);
# 3. a fourth training stage of the shipped model (configs/wm/keypoints/prior_stage4_gpu.yaml),
#    exported compact as the shipped file is; it is judged afterwards on the CPU with
#    `dexac evaluate` (docs/experiments.md E11).
# PARTS picks steps (default "tests bench train"); BENCH_ARGS and BENCH_OUT change the bench's
# rows (the second call of E11 re-ran the tests and profiled 16 / 256 envs:
#   PARTS="tests bench" BENCH_OUT=env_gpu_profile.json \
#   BENCH_ARGS="--sizes 16 256 --loop-max 0 --steps 10 --modes fp32 fp32+graphs bf16+graphs").
# Files land in $OUT (at most 8, as the device tool returns them).
set -u
PARTS=${PARTS:-"tests bench train"}
BENCH_ARGS=${BENCH_ARGS:-"--sizes 1 16 256 --loop-max 16 --steps 10 --modes fp32 bf16 fp32+graphs bf16+graphs"}
BENCH_OUT=${BENCH_OUT:-env_gpu.json}
OUT=${OUT:-/tmp/wave2}
W=${W:-/tmp/wave2_work}
PY=${PY:-python3}
TEST_S=${TEST_S:-90}
BENCH_S=${BENCH_S:-170}
TRAIN_S=${TRAIN_S:-285}
mkdir -p "$OUT" "$W"
# shellcheck source=benchmarks/gpu_common.sh
. "$(dirname "$0")/gpu_common.sh"

log "0. setup"
gpu_setup

if [[ $PARTS == *tests* ]]; then
log "1. CUDA tests"
gpu_cuda_tests "$TEST_S"
fi

if [[ $PARTS == *bench* ]]; then
log "2. env steps/s on the GPU"
# shellcheck disable=SC2086
gpu_bench "$BENCH_S" "$BENCH_OUT" $BENCH_ARGS
fi

if [[ $PARTS == *train* ]]; then
log "3. training stage 4"
$PY -m training.extract_components dexac_env/assets/dexac_default.safetensors \
  --out-dir checkpoints >> "$W/setup.log" 2>&1 || log "extract_components failed"
timeout "$TRAIN_S" $PY training/train_wm.py --config configs/wm/keypoints/prior_stage4_gpu.yaml \
  > "$W/train.log" 2>&1 || log "train: exit $? (export takes the newest checkpoint)"
tail -5 "$W/train.log" >> "$OUT/log.txt"
$PY training/export.py runs/keypoints_prior_stage4 --compact --storage int8 --sampler-steps 2 \
  --output "$OUT/stage4.safetensors" >> "$W/export.log" 2>&1 || log "export failed"
cp runs/keypoints_prior_stage4/metrics.jsonl "$OUT/stage4_metrics.jsonl" 2>/dev/null
cp runs/keypoints_prior_stage4/summary.json "$OUT/stage4_summary.json" 2>/dev/null
fi
(cd "$W" && tar czf "$OUT/wave2_logs.tar.gz" --ignore-failed-read ./*.log nvidia_smi.txt \
  2>/dev/null)
log "done"
