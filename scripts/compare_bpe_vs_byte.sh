#!/usr/bin/env bash
# The GPU study of issue 6: BPE against raw bytes on matched data, at the small preset, for
# Mamba-1, Mamba-2 and the Transformer, two seeds, on GCIDE (English, ~40 MB) and on the
# embedded E. coli genome; then the robustness suite of issue 8 over the study's checkpoints
# (scripts/robustness.sh). Writes report.md, results.json and the PNGs per study under
# $RESULTS/ (default docs/results/): compare_gcide/, compare_dna/, robustness_gcide/,
# robustness_dna/. Checkpoints stay in $RUNS (default /tmp/bytelm-compare-runs), never in the
# results.
#
# Usage (CUDA machine, bytelm installed; from the repository root):
#     bash scripts/compare_bpe_vs_byte.sh [GCIDE_PATH]          # everything
#     STAGES="gcide" bash scripts/compare_bpe_vs_byte.sh         # one part: gcide dna robust
# GCIDE_PATH (or $GCIDE) defaults to ../shared/data/text/gcide.txt.gz; nothing else outside the
# repository is read.
# CPU smoke test of all three stages (~10 min on 2 cores):
#     DEVICE=cpu RESULTS=/tmp/dry/results RUNS=/tmp/dry/runs TEXT_BYTES=20000 DNA_BYTES=20000 \
#     PRESET=tiny MODELS=mamba2,transformer SEEDS=1 SEQ_LEN=64 BATCH=4 BPE_VOCAB=512 WINDOWS=8 \
#     EXTRA="--eval-bytes 20000 --evals 2" bash scripts/compare_bpe_vs_byte.sh
#
# Resumable: rerunning skips finished runs and resumes an interrupted one from its last
# checkpoint in $RUNS, so the study can be spread over several commands of at most
# $SLICE seconds each (default 540: the device allows 10 minutes per command). A slice that
# runs out stops the trainer with SIGINT (it checkpoints), and the script says so; rerun it.
#
# Env: TEXT_BYTES training bytes per GCIDE run (default 16,000,000); DNA_BYTES per DNA run
#      (default 6,000,000: ~1.4 passes over the 4.2 MB train split); PRESET (small); MODELS
#      (mamba,mamba2,transformer); SEEDS (1,2); BPE_VOCAB (4096); SEQ_LEN / BATCH (default:
#      bytelm's CUDA shape, 8 x 2048 tokens); EXTRA extra `compare` options; SLICE (540);
#      DEVICE (cuda; cpu only to smoke-test this script at tiny sizes); ROBUST_EXTRA extra
#      options for the robustness stage (EXTRA goes to `compare` only).
# Cost at the defaults: 12 runs per data set; a byte run trains TEXT_BYTES tokens, a BPE run
#      about a third of that; every run ends with a full pass over val (2 MB GCIDE, 0.23 MB DNA).
set -uo pipefail
cd "$(dirname "$0")/.."
GCIDE=${1:-${GCIDE:-../shared/data/text/gcide.txt.gz}}
RESULTS=${RESULTS:-docs/results}
RUNS=${RUNS:-/tmp/bytelm-compare-runs}
TEXT_BYTES=${TEXT_BYTES:-16000000}
DNA_BYTES=${DNA_BYTES:-6000000}
PRESET=${PRESET:-small}
MODELS=${MODELS:-mamba,mamba2,transformer}
SEEDS=${SEEDS:-1,2}
BPE_VOCAB=${BPE_VOCAB:-4096}
SLICE=${SLICE:-540}
STAGES=${STAGES:-gcide dna robust}
EXTRA=${EXTRA:-}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 BYTELM_CACHE=${BYTELM_CACHE:-/tmp/bytelm-cache}

PY=${PYTHON:-python}
if bytelm compare --help >/dev/null 2>&1; then
  COMPARE=(bytelm compare)
else
  COMPARE=("$PY" -m bytelm.eval.compare)
fi
SHAPE=()
[ -n "${SEQ_LEN:-}" ] && SHAPE+=(--seq-len "$SEQ_LEN")
[ -n "${BATCH:-}" ] && SHAPE+=(--batch-size "$BATCH")

if [[ " $STAGES " == *" gcide "* ]] && [ ! -f "$GCIDE" ]; then
  echo "compare_bpe_vs_byte.sh: GCIDE not found at $GCIDE; pass its path as the first argument" \
       "or set GCIDE=PATH (or leave gcide out of STAGES)" >&2
  exit 2
fi
mkdir -p "$RESULTS" "$RUNS"
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "compare_bpe_vs_byte.sh: no CUDA device visible; this study is sized for a GPU" \
       "(DEVICE=cpu smoke-tests it at tiny sizes)" >&2
  exit 2
fi

publish() {  # copy a report (markdown, JSON, PNGs; no checkpoints) into $RESULTS/$2
  mkdir -p "$RESULTS/$2"
  cp "$1"/report.md "$1"/results.json "$RESULTS/$2/" 2>/dev/null
  cp "$1"/*.png "$RESULTS/$2/" 2>/dev/null
  echo "published $1 -> $RESULTS/$2"
}

study() {  # study NAME DATA BYTES
  local name=$1 data=$2 bytes=$3
  echo "== compare $name: $MODELS x byte,bpe x seeds $SEEDS, $bytes bytes per run, preset $PRESET"
  # shellcheck disable=SC2086
  timeout -s INT -k 60 "$SLICE" "${COMPARE[@]}" --data "$data" --models "$MODELS" \
    --tokenizers byte,bpe --bpe-vocab "$BPE_VOCAB" --preset "$PRESET" --bytes "$bytes" \
    --seeds "$SEEDS" --device "$DEVICE" "${SHAPE[@]}" --out "$RUNS/compare_$name" $EXTRA
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "compare $name stopped (exit $rc; 124/2 = the $SLICE s slice ran out or an interrupt):" \
         "rerun this script to continue from the checkpoints in $RUNS" >&2
    return $rc
  fi
  publish "$RUNS/compare_$name" "compare_$name"
}

status=0
for stage in $STAGES; do
  case $stage in
    gcide) study gcide "$GCIDE" "$TEXT_BYTES" || { status=$?; break; } ;;
    dna) study dna dna "$DNA_BYTES" || { status=$?; break; } ;;
    robust)
      for name in gcide dna; do
        [ -d "$RUNS/compare_$name/runs" ] || { echo "robust: no $RUNS/compare_$name yet; skipped"; continue; }
        data=dna; [ $name = gcide ] && data=$GCIDE
        SLICE=$SLICE EXTRA="${ROBUST_EXTRA:-}" DEVICE=$DEVICE bash scripts/robustness.sh "$RUNS/compare_$name" "$data" \
          "$RUNS/robustness_$name" || { status=$?; break 2; }
        publish "$RUNS/robustness_$name" "robustness_$name"
      done ;;
    *) echo "unknown stage '$stage' (use gcide, dna, robust)" >&2; exit 2 ;;
  esac
done
exit $status
