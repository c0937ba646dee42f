# Steps shared by the lent-GPU session scripts (gpu_wave2.sh, gpu_wave3.sh); sourced, not run.
# The caller sets OUT (files that come back), W (work folder) and PY, from the repository root.
# WHL: folder of the wheels the GPU image lacks (default .whl; none there: nothing installed).

log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt"; }

gpu_setup() {  # the missing wheels, PYTHONPATH, and the card into log.txt
  local whl=${WHL:-.whl}
  if [ -d "$whl" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$whl"/*.whl >> "$W/setup.log" 2>&1 && export PYTHONPATH=/tmp/site
  fi
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
  (nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())") \
    > "$W/nvidia_smi.txt" 2>&1
  head -12 "$W/nvidia_smi.txt" >> "$OUT/log.txt"
}

gpu_cuda_tests() {  # SECONDS: the CUDA-only tests (CUDA-graph replay == eager predict)
  timeout "$1" $PY -m pytest -q -p no:cacheprovider tests/test_inference_modes.py \
    > "$OUT/tests_cuda.log" 2>&1 || log "tests: exit $?"
  tail -3 "$OUT/tests_cuda.log" >> "$OUT/log.txt"
}

gpu_bench() {  # SECONDS JSON_NAME BENCH_ENV_ARGS...: imagined env steps/s on the GPU
  local seconds=$1 name=$2
  shift 2
  timeout "$seconds" $PY -m benchmarks.bench_env --device cuda "$@" --no-sim \
    --text-features benchmarks/data/default_text_features.safetensors --out "$OUT/$name" \
    > "$W/bench.log" 2>&1 || log "bench: exit $?"
  tail -3 "$W/bench.log" >> "$OUT/log.txt"
}
