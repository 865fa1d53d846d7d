#!/usr/bin/env bash
# One GPU round for the opt-in kernels (kernels/NOTES.md, "Queued"): correctness at real shapes,
# then the benchmarks, each step under its own time limit so that one 10-minute device command
# always reaches the tables. Logs go to $LOGDIR (default /tmp/kernel-round), one file per step.
#
# Usage (GPU machine, bytelm installed, mamba_ssm source in .carry/mamba_ssm_src):
#     bash scripts/gpu_kernel_round.sh
# Env: PYTEST_S (220), CHECK_S (60), BENCH2_S (130), BENCH1_S (150): each step's limit in seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGDIR=${LOGDIR:-/tmp/kernel-round}
mkdir -p "$LOGDIR"
step() {  # step NAME SECONDS CMD...: run, log, print the tail and the exit code
  local name=$1 secs=$2 t0=$SECONDS
  shift 2
  timeout "$secs" "$@" >"$LOGDIR/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc, $((SECONDS - t0)) s (limit $secs)"
  grep -v -i "warn" "$LOGDIR/$name.log" | tail -n "${TAIL:-40}" | cut -c1-220
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
step pytest "${PYTEST_S:-220}" python3 -m pytest -q -rf --durations=8 \
  tests/test_ssd_triton.py tests/test_conv_norm_triton.py tests/test_selective_scan_triton.py
step model_check "${CHECK_S:-60}" python3 scripts/gpu_check_mamba2.py --no-pytest
step bench_mamba2 "${BENCH2_S:-130}" python3 scripts/bench_kernels_mamba2.py --anchor-src .carry/mamba_ssm_src
TAIL=60 step bench_scan "${BENCH1_S:-150}" python3 scripts/bench_kernels.py --ops selective_scan --sweep --no-compile-ref
