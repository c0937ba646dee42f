#!/usr/bin/env bash
# GPU wave 1 (docs/experiments.md E3): everything one lent GPU session runs, in one command that
# fits the device tool's 10-minute limit. Run from the repository root, with the train split's
# pack made here first (it travels; the 400 MB store does not):
#   python -m training.latent_pack --store data/sim.zarr --split train \
#       --out data/packs/sim_train_f16_sem1.npz --semantic-frames 1 --latent-dtype float16
#   OUT=/tmp/wave1 bash benchmarks/gpu_wave1.sh
# 1. calibrate: the five configs of configs/wm/gpu/ train side by side for CAL_S seconds;
# 2. train them side by side again from scratch with the step counts that fit TRAIN_S seconds
#    (the tiny variants all get the same count, the smallest that fits; the wide one its own);
# 3. export each run compact (training/export.py --compact), as the shipped checkpoint is,
#    and put the models and run logs in $OUT before anything else can run out of time;
# 4. GPU speed of a world-model step at 1/16/256 envs (benchmarks/bench_wm_step.py);
# 5. the paper-scale check: 2B DexAC-on-Cosmos training steps (benchmarks/bench_paper_scale.py).
# Files land in $OUT (at most 8, as the device tool returns them).
set -u
OUT=${OUT:-/tmp/wave1}
W=${W:-/tmp/wave1_work}
PY=${PY:-python3}
CAL_S=${CAL_S:-40}
TRAIN_S=${TRAIN_S:-270}
PAPER=${PAPER:-1}
CONFIGS=${CONFIGS:-"tiny_long tiny_ctxnoise tiny_ctxnoise_cfg tiny_step1 wide_ctxnoise"}
mkdir -p "$OUT" "$W"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt"; }

log "0. setup"
if [ -d .whl ] && ! $PY -c "import diffusers, zarr, gymnasium" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
(nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())") \
  > "$W/nvidia_smi.txt" 2>&1
$PY -m training.extract_components benchmarks/checkpoints/tiny_dexac.safetensors --out-dir checkpoints \
  >> "$OUT/log.txt" 2>&1 || log "extract_components failed"

train() {  # config, out_dir, steps (empty = the config's), seconds
  local steps=()
  [ -n "$3" ] && steps=(--set "trainer.steps=$3")
  timeout "$4" $PY training/train_wm.py --config "configs/wm/gpu/$1.yaml" \
    --set "trainer.out_dir=$2" --set trainer.log_every=10 "${steps[@]}" > "$2.log" 2>&1
}

log "1. calibration, ${CAL_S}s"
for c in $CONFIGS; do train "$c" "$W/cal_$c" 1000000 "$CAL_S" & done
wait
declare -A STEPS
read -r -a PLAN <<< "$($PY - "$W" "$TRAIN_S" $CONFIGS <<'PYEOF'
import json, statistics, sys
work, budget, configs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
rate = {}
for c in configs:
    try:
        rows = [json.loads(l) for l in open(f"{work}/cal_{c}/metrics.jsonl")]
    except OSError:
        rows = []
    rows = rows[len(rows) // 2:]
    # seconds per optimizer step, data wait included; x1.15 for logging and checkpoints
    per = statistics.median(r["step_s"] + r.get("data_s", 0) for r in rows) * 1.15 if rows else 0.1
    rate[c] = per
tiny = [c for c in configs if c.startswith("tiny")]
shared = min(int(0.85 * budget / rate[c]) for c in tiny) if tiny else 0
out = []
for c in configs:
    n = shared if c in tiny else int(0.85 * budget / rate[c])
    out.append(f"{c}={max(n, 20)}")
print(" ".join(out))
print(json.dumps({"seconds_per_step": rate, "plan": out}), file=open(f"{work}/plan.json", "w"))
PYEOF
)"
log "plan: ${PLAN[*]}"

log "2. training, ${TRAIN_S}s"
for entry in "${PLAN[@]}"; do
  c=${entry%%=*}; n=${entry#*=}
  train "$c" "$W/run_$c" "$n" "$((TRAIN_S + 25))" &
done
wait
log "3. export"
for c in $CONFIGS; do
  $PY training/export.py "$W/run_$c" --compact --output "$W/$c.safetensors" >> "$W/export.log" 2>&1 &
done
wait
ls -la "$W" >> "$OUT/log.txt"
for c in $CONFIGS; do [ -f "$W/$c.safetensors" ] && cp "$W/$c.safetensors" "$OUT/"; done
(cd "$W" && tar czf "$OUT/runs_meta.tar.gz" --ignore-failed-read plan.json ./*.train.json \
  run_*/metrics.jsonl run_*/run_config.json run_*/summary.json ./*.log cal_*/metrics.jsonl 2>/dev/null)

log "4. world-model step speed"
timeout 45 $PY -m benchmarks.bench_wm_step --size tiny --batches 1,16,256 --device cuda \
  --out "$W/wm_step_gpu_tiny.json" > "$W/wm_step.log" 2>&1 || log "wm_step: exit $?"

if [ "$PAPER" = 1 ]; then
  log "5. paper scale"
  timeout 60 $PY -m benchmarks.bench_paper_scale --latent 5,32,32 --batch 4 --steps 3 \
    --out "$W/paper_scale_256px.json" > "$W/paper_256.log" 2>&1 || log "paper 256: exit $?"
  timeout 75 $PY -m benchmarks.bench_paper_scale --latent 24,88,160 --batch 1 --steps 1 \
    --out "$W/paper_scale_720p.json" > "$W/paper_720p.log" 2>&1 || log "paper 720p: exit $?"
fi

log "6. package the benchmarks"
(cd "$W" && tar czf "$OUT/bench.tar.gz" --ignore-failed-read nvidia_smi.txt ./*.json ./*.log \
  2>/dev/null)
log "done"
