#!/usr/bin/env bash
# One GPU round for the kernels (kernels/NOTES.md, "Queued"): correctness at real shapes, then
# the benchmarks, each step under its own time limit so that a 10-minute device command always
# ends with its logs. Logs go to $LOGDIR (default /tmp/kernel-round), one file per step.
#
# Usage (GPU machine, bytelm installed, mamba_ssm source in .carry/mamba_ssm_src):
#     bash scripts/gpu_kernel_round.sh [tests] [bench]      (no argument: both)
# tests: the three kernel test files as three concurrent pytest processes (correctness only; at
#        real shapes they need ~4-5 minutes one after another), then the Mamba-2 model check;
# bench: bench_kernels_mamba2.py, then bench_kernels.py --sweep for the Mamba-1 scan, the GPU
#        to itself.
# Env: PYTEST_S (300), CHECK_S (60), BENCH2_S (150), BENCH1_S (240): each step's limit in seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGDIR=${LOGDIR:-/tmp/kernel-round}
mkdir -p "$LOGDIR"
show() {  # show NAME RC T0 LIMIT: the exit code and the log's tail
  echo "== $1: rc $2, $((SECONDS - $3)) s (limit $4)"
  grep -v -i "warn" "$LOGDIR/$1.log" | tail -n "${TAIL:-40}" | cut -c1-220
}
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2 t0=$SECONDS
  shift 2
  timeout "$secs" "$@" >"$LOGDIR/$name.log" 2>&1
  show "$name" $? "$t0" "$secs"
}
tests() {
  local t0=$SECONDS secs=${PYTEST_S:-300} pids=() f
  for f in ssd_triton conv_norm_triton selective_scan_triton; do
    timeout "$secs" python3 -m pytest -q -rf --durations=5 "tests/test_$f.py" >"$LOGDIR/pytest_$f.log" 2>&1 &
    pids+=($!)
  done
  local i=0
  for f in ssd_triton conv_norm_triton selective_scan_triton; do
    wait "${pids[$i]}"
    TAIL=12 show "pytest_$f" $? "$t0" "$secs"
    i=$((i + 1))
  done
  step model_check "${CHECK_S:-60}" python3 scripts/gpu_check_mamba2.py --no-pytest
}
bench() {
  step bench_mamba2 "${BENCH2_S:-150}" python3 scripts/bench_kernels_mamba2.py --anchor-src .carry/mamba_ssm_src
  TAIL=70 step bench_scan "${BENCH1_S:-240}" python3 scripts/bench_kernels.py --ops selective_scan --sweep --no-compile-ref
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
[ $# -eq 0 ] && set -- tests bench
for phase in "$@"; do
  case $phase in
    tests) tests ;;
    bench) bench ;;
    *) echo "unknown phase '$phase' (tests, bench)"; exit 2 ;;
  esac
done
