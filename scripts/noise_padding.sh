#!/usr/bin/env bash
# The GPU noise-padding study of issue 7: small preset, four architectures, k in {1,2,4,8},
# fillers pad and burst, on text and on DNA. Writes, per data set, results.json, report.md and
# bpb_vs_k.png / memory_vs_k.png / time_vs_k.png under $RESULTS/<data>/ (default
# docs/results/noise_padding/<data>/, the place the report is committed); checkpoints go to
# $RUNS (default /tmp/bytelm-noise-runs), never into the results.
#
# Usage (CUDA machine, bytelm installed; from the repository root):
#     bash scripts/noise_padding.sh                       # the whole study
#     DATASETS=dna MODELS=mamba2,transformer bash scripts/noise_padding.sh    # a part of it
# Resumable: rerunning skips every (model, filler, k) already in results.json and resumes a
# half-trained run from its checkpoint in $RUNS (same machine). So the study can be spread over
# several commands or sessions: keep $RESULTS (copy it back into the repository between sessions).
#
# Env: BYTES real training bytes per run, identical for every k (default 1,000,000: 123 steps of
#      8 x 1024 real bytes); SEQ_LEN real bytes per window (default 1024, so 8192 tokens at k=8);
#      BATCH (8); PRESET (small); KS (1,2,4,8); FILLERS (pad,burst); MODELS
#      (mamba,mamba2,transformer,hybrid); DATASETS ("text dna"); EXTRA extra options;
#      SEED_RESULTS (1: start from the committed docs/results/noise_padding; 0: from empty);
#      DEVICE (cuda; cpu only to smoke-test this script at tiny sizes, e.g. DEVICE=cpu
#      RESULTS=/tmp/dry/noise RUNS=/tmp/dry/noise_runs BYTES=8000 SEQ_LEN=32 BATCH=4 PRESET=tiny
#      KS=1,2: ~3.5 min on 2 cores).
# Cost: per data set and model, BYTES x (1 + 2 x (2 + 4 + 8)) = 29 x BYTES training tokens
#       (k = 1 is trained once for both fillers); the whole study is 232 x BYTES tokens.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-docs/results/noise_padding}
RUNS=${RUNS:-/tmp/bytelm-noise-runs}
BYTES=${BYTES:-1000000}
SEQ_LEN=${SEQ_LEN:-1024}
BATCH=${BATCH:-8}
PRESET=${PRESET:-small}
KS=${KS:-1,2,4,8}
FILLERS=${FILLERS:-pad,burst}
MODELS=${MODELS:-mamba,mamba2,transformer,hybrid}
DATASETS=${DATASETS:-text dna}
EXTRA=${EXTRA:-}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 BYTELM_CACHE=${BYTELM_CACHE:-/tmp/bytelm-cache}

PY=${PYTHON:-$(command -v python || command -v python3)}
if bytelm noise --help >/dev/null 2>&1; then
  NOISE=(bytelm noise)
else
  NOISE=("$PY" -m bytelm.eval.noise)
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "noise_padding.sh: no CUDA GPU visible to torch; this is the GPU study" >&2
  exit 1
fi
# A study continued elsewhere: seed RESULTS with what the repository already holds (runs with
# the same settings are then skipped; SEED_RESULTS=0 starts from an empty RESULTS instead, e.g.
# for other sizes, which bytelm noise would refuse to mix with the committed runs).
if [ "${SEED_RESULTS:-1}" = 1 ] && [ "$RESULTS" != docs/results/noise_padding ] && [ -d docs/results/noise_padding ]; then
  mkdir -p "$RESULTS" && cp -rn docs/results/noise_padding/. "$RESULTS"/
fi
mkdir -p "$RESULTS" "$RUNS"
"$PY" -m bytelm.cli info > "$RESULTS/info.txt" 2>&1 || true

status=0
for data in $DATASETS; do
  echo "== $data: models $MODELS, k $KS, fillers $FILLERS, $BYTES real bytes per run"
  # shellcheck disable=SC2086
  "${NOISE[@]}" --data "$data" --preset "$PRESET" --models "$MODELS" --k "$KS" \
    --filler "$FILLERS" --bytes "$BYTES" --seq-len "$SEQ_LEN" --batch-size "$BATCH" \
    --device "$DEVICE" --out "$RESULTS/$data" --runs-dir "$RUNS/$data" $EXTRA \
    2>&1 | tee -a "$RESULTS/$data.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
for data in $DATASETS; do
  [ -f "$RESULTS/$data/report.md" ] && sed -n '/^## Reading/,$p' "$RESULTS/$data/report.md"
done
exit $status
