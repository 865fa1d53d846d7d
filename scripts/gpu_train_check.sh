#!/usr/bin/env bash
# GPU check for `bytelm train`: every architecture at the base preset on DNA and on text
# (tokens/s and peak memory over a short run), then the default DNA and text runs.
# Usage (on a CUDA machine, bytelm installed): OUT=results_dir bash scripts/gpu_train_check.sh
# Env: ARCH_STEPS (default 20) steps per architecture run; RUNS (default /tmp/bytelm-runs)
# where checkpoints go; EXTRA_TEXT_ARGS extra options for the default text run; SKIP_ARCH=1 runs
# only the two default runs.
set -uo pipefail
OUT=${OUT:-gpu_out}
RUNS=${RUNS:-/tmp/bytelm-runs}
ARCH_STEPS=${ARCH_STEPS:-20}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 BYTELM_CACHE=${BYTELM_CACHE:-/tmp/bytelm-cache}

bytelm info | tee "$OUT/info.txt"
touch "$OUT/arch.jsonl"
[ "${SKIP_ARCH:-0}" = 1 ] || for data in dna text; do
  for model in mamba mamba2 transformer hybrid; do
    timeout 240 bytelm train --data "$data" --model "$model" --preset base --device cuda \
      --steps "$ARCH_STEPS" --eval-every "$ARCH_STEPS" --warmup 10 --out "$RUNS/$model-$data" \
      --json 2>"$OUT/arch-$model-$data.log" | tail -n 1 >> "$OUT/arch.jsonl" \
      || echo "{\"model\": \"$model\", \"data\": \"$data\", \"failed\": true}" >> "$OUT/arch.jsonl"
  done
done
for data in dna text; do
  extra=""
  [ "$data" = text ] && extra=${EXTRA_TEXT_ARGS:-}
  # shellcheck disable=SC2086
  timeout 420 bytelm train --data "$data" --device cuda --out "$RUNS/default-$data" --json $extra \
    2>"$OUT/default-$data.log" | tail -n 1 > "$OUT/default-$data.json"
  cp "$RUNS/default-$data/metrics.jsonl" "$OUT/default-$data.metrics.jsonl" 2>/dev/null
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"{'model':12s} {'data':5s} {'params':>8s} {'tok/s':>9s} {'peak GiB':>8s} {'val bpb':>8s}")
for line in (out / "arch.jsonl").read_text().splitlines():
    r = json.loads(line)
    if r.get("failed"):
        print(f"{r['model']:12s} {r['data']:5s} FAILED"); continue
    data = "dna" if r["out"].endswith("dna") else "text"
    print(f"{r['model']:12s} {data:5s} {r['params']/1e6:7.1f}M {r['tokens_per_s']:9,.0f} "
          f"{r['peak_memory_bytes']/2**30:8.2f} {r['val_bits_per_byte']:8.4f}")
for data in ("dna", "text"):
    try:
        r = json.loads((out / f"default-{data}.json").read_text())
        print(f"default {data}: {r['model']} {r['preset']} {r['steps']} steps, val "
              f"{r['val_bits_per_byte']:.4f} bits/byte, {r['tokens_per_s']:,.0f} tok/s, "
              f"peak {r['peak_memory_bytes']/2**30:.2f} GiB, {r['wall_s']:.0f} s")
    except Exception as exc:
        print(f"default {data}: no result ({exc})")
PY
