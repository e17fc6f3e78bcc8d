#!/usr/bin/env bash
# One command for a GPU machine (H100/H200 class, 16 cores, no network; about ten minutes):
#   1. builds the CUDA configuration (scripts/gpu-build.sh, from that machine's PyTorch),
#   2. runs the GPU tests (gpu_norm_tests: the CUDA norm kernels against the float64 reference),
#   3. runs `normserve-normbench --device cuda` (the kernels as a share of copy bandwidth and
#      against torch's layer_norm and rms_norm: results/normbench-<host>-cuda.{md,csv}),
#   4. serves the bundled models with `normserved --device cuda` and measures Translate on deen
#      with normserve-bench (closed loop at concurrency 1, 16 and 64), and the same on the CPU
#      for reference,
# and writes one table, results/gpu-check-<host>.md (and copies it, the normbench files and an
# archive of the logs to $OUT when that is set). Without a GPU it builds, says which steps it skipped, writes
# the table and exits 3 (normserved's "no CUDA device" status): a rehearsal.
#
# Usage: scripts/gpu-check.sh [--seconds S] [--quick] [gpu-build.sh options, e.g. --pypi-torch]
#   --seconds S   measured seconds of each serving step (default 10)
#   --quick       normbench's reduced set of shapes
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=10; quick=(); build_args=()
while (($#)); do
  case "$1" in
    --seconds) seconds=$2; shift ;;
    --quick) quick=(--quick) ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) build_args+=("$1") ;;
  esac
  shift
done
build=${BUILD_DIR:-build-gpu}
host=$(hostname | tr -c 'A-Za-z0-9.\n-' '_')  # as normbench names its files
work=$build/gpu-check
table=results/gpu-check-$host.md
rows=()
status=0
log() { echo "gpu-check: $*" >&2; }
row() { rows+=("| $1 | $2 | $3 |"); }

mkdir -p results "$work"
build_log=$work/build.log
started=$SECONDS
step_start=$SECONDS
scripts/gpu-build.sh "${build_args[@]}" 2>&1 | tee "$build_log" >&2 || {
  log "the build failed: see $build_log"; exit 1; }
row "build (scripts/gpu-build.sh ${build_args[*]})" "ok" $((SECONDS - step_start))
# shellcheck disable=SC1091
source "$build/run-env.sh"

gpu=""
if command -v nvidia-smi >/dev/null; then
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
        head -1 || true)
fi
[[ -n "$gpu" ]] || log "NO GPU: nvidia-smi sees no CUDA device; the GPU tests skip and normbench and the serving benchmark are not run (a rehearsal)"

# ---- GPU tests ----------------------------------------------------------------------------------
step_start=$SECONDS
"$build/tests/gpu/gpu_norm_tests" >"$work/gpu_norm_tests.log" 2>&1 || status=1
summary() { grep -oE "^\[  $1 +\] [0-9]+" "$work/gpu_norm_tests.log" | grep -oE '[0-9]+$' || echo 0; }
tests_result="$(summary PASSED) passed, $(summary FAILED) failed, $(summary SKIPPED) skipped"
row "GPU tests (gpu_norm_tests)" "$tests_result" $((SECONDS - step_start))
log "gpu_norm_tests: $tests_result"

if [[ -z "$gpu" ]]; then
  row "normserve-normbench --device cuda" "not run: no GPU" 0
  row "serving benchmark, normserved --device cuda" "not run: no GPU" 0
else
  # ---- Norm kernels -----------------------------------------------------------------------------
  step_start=$SECONDS
  if timeout 300 "$build/models/normserve-normbench" --device cuda "${quick[@]}" \
       >"$work/normbench.log" 2>&1; then
    row "normserve-normbench --device cuda ${quick[*]}" \
        "results/normbench-$host-cuda.md" $((SECONDS - step_start))
  else
    status=1
    row "normserve-normbench --device cuda" "failed: $work/normbench.log" $((SECONDS - step_start))
  fi

  # ---- Serving ----------------------------------------------------------------------------------
  serve() {  # serve DEVICE: Translate on deen at concurrency 1, 16, 64; one table row per step
    local device=$1 server_log="$work/normserved-$1.log" port="" pid
    "$build/server/normserved" --model-repository models/repository --device "$device" \
      --threads "$(nproc)" --grpc-address 127.0.0.1:0 --metrics-address "" 2>"$server_log" &
    pid=$!
    for _ in $(seq 120); do
      port=$(grep -oE 'gRPC on port [0-9]+' "$server_log" | grep -oE '[0-9]+$' || true)
      [[ -n "$port" ]] || ! kill -0 "$pid" 2>/dev/null && break
      sleep 0.5
    done
    if [[ -z "$port" ]]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" || true
      row "serving, $device" "normserved did not start: $server_log" 0
      return 1
    fi
    local csv="$work/serve-$device.csv"
    "$build/client/normserve-bench" --server "127.0.0.1:$port" --model deen \
      --concurrency 1,16,64 --duration-secs "$seconds" --csv "$csv" >"$work/bench-$device.log" 2>&1 ||
      { kill "$pid"; wait "$pid" || true; row "serving, $device" "normserve-bench failed" 0; return 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    # concurrency,requests,ok,errors,dropped,elapsed_s,throughput_rps,tokens,tokens_per_s,p50,p90,p99
    tail -n +2 "$csv" | while IFS=, read -r c _ ok errors _ elapsed rps _ tps p50 _ p99 _; do
      echo "| Translate deen, --device $device, concurrency $c | $rps req/s, $tps tokens/s, p50 $p50 ms, p99 $p99 ms, $ok ok, $errors errors | $elapsed |"
    done >>"$work/serving-rows.md"
  }
  : >"$work/serving-rows.md"
  serve cuda || status=1
  serve cpu || status=1
  mapfile -t serving_rows <"$work/serving-rows.md"
  rows+=("${serving_rows[@]}")
fi

torch=$(grep -oE 'torch [^ ]+ CUDA [^ ]+' "$build_log" | head -1 || true)
{
  echo "# GPU check on $host"
  echo
  echo "- GPU: ${gpu:-none (a rehearsal: only the build and the skipped GPU tests ran)}"
  echo "- ${torch:-LibTorch: $(grep -m1 -oE 'venv-[0-9.]+' "$build_log" || echo '?')}; $(grep -m1 -oE 'nvcc: .*' "$build_log" || true)"
  echo "- $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- total $((SECONDS - started)) s; made by scripts/gpu-check.sh"
  echo
  echo "| step | result | seconds |"
  echo "| --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
} >"$table"
cat "$table"
if [[ -n "${OUT:-}" ]]; then
  # What comes back from a lent machine is a few files: the logs travel as one archive.
  cp -f "$table" results/normbench-"$host"-cuda.* "$OUT"/ 2>/dev/null || true
  tar -czf "$OUT/gpu-check-logs.tgz" "$work"
fi
((status == 0)) || exit 1
[[ -n "$gpu" ]] || exit 3
