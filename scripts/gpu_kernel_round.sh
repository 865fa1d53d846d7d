#!/usr/bin/env bash
# One GPU round for the kernels (kernels/NOTES.md, "Queued"): correctness at real shapes, the
# Mamba-1 loss check, then the benchmarks, each step under its own time limit so that a 10-minute
# device command always ends with its logs. Logs go to $LOGDIR (default /tmp/kernel-round), one
# file per step; with $OUT set (the device tool's output folder) they are also packed into
# $OUT/kernel-round.tar.gz at the end (one file: the device returns a limited number of them).
# Before a GPU session, `python scripts/compile_check.py` on the CPU catches compile errors.
#
# Usage (GPU machine, bytelm installed, mamba_ssm source in .carry/mamba_ssm_src):
#     bash scripts/gpu_kernel_round.sh [tests] [loss] [bench] [models] [profile] [pending]
#     (no argument: the first four)
# tests:  the three kernel test files as three concurrent pytest processes (correctness only),
#         with the --cuda-graph training test, then the Mamba-2 model check;
# loss:   issue 4's loss check: the base Mamba-1, 50 steps, default kernels vs BYTELM_KERNELS=ref,
#         losses side by side;
# bench:  bench_kernels.py (the backward sweep, then the table), bench_kernels_mamba2.py, the
#         GPU to itself;
# models: bench_models.py (one training step of every base preset and anchor);
# profile: profile_kernels.py (CUDA time per launched kernel of each op's training step).
# pending: the SSD table with the grouped backward's variants, its float64 check, the tests
#         added on 2026-12-04 at GPU shapes (slow decay, one block per chunk), the model check
#         and a training step of every base preset with BYTELM_SSD_BWD=grouped, the d_state-256
#         BLOCK_Q 32 / 16 candidates, and the last 40 % of the selective-scan tests; more than
#         one device call: PENDING_FROM=N resumes after the first N steps.
# Env: PYTEST_S (300), CHECK_S (60), LOSS_S (200), SWEEP_S (200), BENCH1_S (60), BENCH2_S (240),
#      MODELS_S (240), PROFILE_S (150): each step's limit in seconds; SWEEP_PARTS (bwd31,bwd3);
#      LOSS_REF: a folder holding an earlier round's loss_ref.json and loss_ref.metrics.jsonl
#      (the reference ops do not change), to run only the Triton side; PYTEST_K: a -k filter
#      for the kernel test files.
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
    timeout "$secs" python3 -m pytest -q -rf --durations=5 ${PYTEST_K:+-k "$PYTEST_K"} "tests/test_$f.py" >"$LOGDIR/pytest_$f.log" 2>&1 &
    pids+=($!)
  done
  timeout "$secs" python3 -m pytest -q -rf tests/test_synthetic.py -k cuda_graph >"$LOGDIR/pytest_synthetic.log" 2>&1 &
  pids+=($!)
  local i=0
  for f in ssd_triton conv_norm_triton selective_scan_triton synthetic; do
    wait "${pids[$i]}"
    TAIL=12 show "pytest_$f" $? "$t0" "$secs"
    i=$((i + 1))
  done
  step model_check "${CHECK_S:-60}" python3 scripts/gpu_check_mamba2.py --no-pytest
}
loss() {  # the base Mamba-1 preset, 50 steps, same seed: default kernels, then the reference
  local a=(--data dna --model mamba --preset base --batch-size 4 --seq-len 2048 --steps 50
           --warmup 10 --eval-every 1000 --seed 0 --device cuda --json) t0=$SECONDS
  timeout "${LOSS_S:-200}" bytelm train "${a[@]}" --out /tmp/loss-triton >"$LOGDIR/loss_triton.json" 2>"$LOGDIR/loss_triton.log"
  cp /tmp/loss-triton/metrics.jsonl "$LOGDIR/loss_triton.metrics.jsonl" 2>/dev/null
  if [ -n "${LOSS_REF:-}" ]; then  # the reference run of an earlier round (it does not change)
    cp "$LOSS_REF"/loss_ref.json "$LOSS_REF"/loss_ref.metrics.jsonl "$LOGDIR/"
  else
    BYTELM_KERNELS=ref timeout "${LOSS_S:-200}" bytelm train "${a[@]}" --out /tmp/loss-ref >"$LOGDIR/loss_ref.json" 2>"$LOGDIR/loss_ref.log"
    cp /tmp/loss-ref/metrics.jsonl "$LOGDIR/loss_ref.metrics.jsonl" 2>/dev/null
  fi
  echo "== loss: $((SECONDS - t0)) s"
  python3 - "$LOGDIR" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
def read(name):
    try:
        rows = [json.loads(l) for l in (d / f"loss_{name}.metrics.jsonl").read_text().splitlines()]
        summary = json.loads((d / f"loss_{name}.json").read_text().splitlines()[-1])
    except (OSError, ValueError, IndexError) as err:
        return None, f"{name}: no result ({err})"
    return {r["step"]: r["loss"] for r in rows if r.get("loss") is not None}, summary
tri, tri_s = read("triton")
ref, ref_s = read("ref")
if tri is None or ref is None:
    sys.exit(f"loss check incomplete: {tri_s if tri is None else ref_s}")
print("step  triton   reference  diff")
for step in sorted(set(tri) & set(ref)):
    print(f"{step:>4}  {tri[step]:.4f}   {ref[step]:.4f}     {tri[step] - ref[step]:+.4f}")
for name, s in (("triton", tri_s), ("reference", ref_s)):
    print(f"{name}: {s['tokens_per_s']:,.0f} tokens/s, peak {s['peak_memory_bytes'] / 1e9:.2f} GB, "
          f"val {s['val_bits_per_byte']:.4f}")
PY
}
bench() {
  TAIL=30 step bench_sweep "${SWEEP_S:-200}" python3 scripts/bench_kernels.py --ops selective_scan \
    --sweep-only --sweep-parts "${SWEEP_PARTS:-bwd31,bwd3}"
  step bench_scan "${BENCH1_S:-60}" python3 scripts/bench_kernels.py --ops selective_scan --no-compile-ref
  step bench_mamba2 "${BENCH2_S:-240}" python3 scripts/bench_kernels_mamba2.py --anchor-src .carry/mamba_ssm_src
}
models() {
  step bench_models "${MODELS_S:-240}" python3 scripts/bench_models.py --anchor-src .carry/mamba_ssm_src
}
pending() {  # in the order that decides most first; ~10 minutes in all, so two device calls
  # (PENDING_FROM=N skips the first N steps, for the second call)
  local i=0 from=${PENDING_FROM:-0}
  run_p() { i=$((i + 1)); [ "$i" -le "$from" ] && return 0; step "$@"; }
  # 1. the SSD table: the grouped backward (opt-in) and its variants timed beside the default,
  #    each one's gradients compared with the default's
  run_p bench_ssd "${BENCH2_S:-240}" python3 scripts/bench_kernels_mamba2.py --ssd-only
  # 2. the grouped backward's float64 check at the test shapes (the default's ran 2026-12-04)
  run_p grad_errors_grouped "${PYTEST_S:-300}" python3 scripts/ssd_grad_errors.py --rect on --cfg grouped=1
  # 3. the tests added on 2026-12-04 at GPU shapes: slow decay (far block pairs, long memory),
  #    one block per chunk, the BYTELM_SSD_BWD switch
  run_p pytest_new "${PYTEST_S:-300}" python3 -m pytest -q -rf -o addopts="" tests/test_ssd_triton.py \
    tests/test_selective_scan_triton.py -k "slow_decay or one_block_per_chunk or backward_switch"
  # 4. the grouped SSD backward in the whole models (loss and gradients against the reference
  #    ops), then one training step of every base preset with it
  run_p model_check "${CHECK_S:-60}" python3 scripts/gpu_check_mamba2.py --no-pytest
  run_p bench_models_grouped "${MODELS_S:-240}" env BYTELM_SSD_BWD=grouped python3 scripts/bench_models.py \
    --anchor-src .carry/mamba_ssm_src
  # 5. the d_state-256 BLOCK_Q 32 / 16 candidates (not defaults; > 120 s each there)
  run_p pytest_ssd_wide "${PYTEST_S:-300}" python3 -m pytest -q -rf -o addopts="" tests/test_ssd_triton.py \
    -k "synthetic_models and 256 and not 64"
  i=$((i + 1)); [ "$i" -le "$from" ] && return 0
  python3 -m pytest --co -q -o addopts="" tests/test_selective_scan_triton.py 2>/dev/null | grep :: >"$LOGDIR/scan_ids.txt"
  local n; n=$(wc -l <"$LOGDIR/scan_ids.txt")
  if [ "$n" -gt 0 ]; then  # the last 40 %: the part the 2026-12-03 rounds did not reach
    tail -n $((n * 2 / 5)) "$LOGDIR/scan_ids.txt" >"$LOGDIR/scan_tail.txt"
    step pytest_scan_tail "${PYTEST_S:-300}" python3 -m pytest -q -rf -o addopts="" $(cat "$LOGDIR/scan_tail.txt")
  else
    echo "== pytest_scan_tail: no test ids collected"
  fi
}
profile() {
  TAIL=120 step profile "${PROFILE_S:-150}" python3 scripts/profile_kernels.py
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
[ $# -eq 0 ] && set -- tests loss bench models
for phase in "$@"; do
  case $phase in
    tests) tests ;;
    loss) loss 2>&1 | tee "$LOGDIR/loss_table.txt" ;;
    bench) bench ;;
    models) models ;;
    profile) profile ;;
    pending) pending ;;
    *) echo "unknown phase '$phase' (tests, loss, bench, models, profile, pending)"; exit 2 ;;
  esac
done
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/kernel-round.tar.gz" -C "$(dirname "$LOGDIR")" "$(basename "$LOGDIR")"
fi
