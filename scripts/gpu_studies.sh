#!/usr/bin/env bash
# Every GPU study of issues 6-9 at once, on one GPU: the studies are small models that leave most
# of an H100/H200 idle when run one after another, so they run as concurrent jobs, each in its own
# process session (setsid) so that it outlives one 10-minute device command while the machine is
# held. Each job is one of the study scripts with the sizes below; its log goes to $LOGS/NAME.log.
#
# Usage (CUDA machine, bytelm installed, from the repository root):
#     bash scripts/gpu_studies.sh start     # launch every job in the background, return at once
#     bash scripts/gpu_studies.sh status    # one line per job (running / rc N) + the GPU's memory
#     bash scripts/gpu_studies.sh wait S    # wait until every job has ended, at most S seconds
#     bash scripts/gpu_studies.sh collect F # tar $RESULTS + the logs into F
# Reports go to $RESULTS (default $WORK/results, outside the working tree: the device tool
# re-copies the working tree at every command and deletes untracked files it does not know,
# which lost a live docs/results twice); unpack the tarball into docs/results to commit them.
# Jobs (JOBS, default all): compare-gcide (then robustness over its seed-1 checkpoints),
#     compare-dna (then robustness), noise-text, noise-dna, synth-sc, synth-sc-cur (selective
#     copying with a length curriculum), synth-ih, synth-mqar.
# Sizes (env, defaults chosen so the whole set ends in ~20 minutes of one H200):
#     TEXT_BYTES (4,000,000) / DNA_BYTES (2,000,000) training bytes per compare run;
#     NOISE_BYTES (120,000) real bytes per noise run, NOISE_SEQ_LEN (256), NOISE_BATCH (8)
#     (the committed study's sizes: with them a rerun starts from docs/results/noise_padding and
#     skips its runs; other sizes need SEED_RESULTS=0);
#     ROBUST_WINDOWS (128); TIME_SCALE (1.0) for the synthetic runs' time budgets;
#     EXTRA goes to compare only; ROBUST_EXTRA / NOISE_EXTRA to the robustness and noise runs;
#     MQAR_STAGES ("mqar-256 mqar-512"); GCIDE (.carry/gcide.txt.gz, else ../shared/...).
# The synthetic runs stop at time budgets, so sharing the GPU leaves them fewer steps: for the
# issue-9 table run them alone, e.g. JOBS="synth-sc synth-sc-cur synth-ih synth-mqar" TIME_SCALE=2.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/bytelm-studies}
LOGS=${LOGS:-$WORK/logs}
RESULTS=${RESULTS:-$WORK/results}
JOBS=${JOBS:-compare-gcide compare-dna noise-text noise-dna synth-sc synth-sc-cur synth-ih synth-mqar}
GCIDE=${GCIDE:-}
if [ -z "$GCIDE" ]; then
  GCIDE=.carry/gcide.txt.gz
  [ -f "$GCIDE" ] || GCIDE=../shared/data/text/gcide.txt.gz
fi
GCIDE=$(realpath -m "$GCIDE")
DEVICE=${DEVICE:-cuda}
export PYTHON=${PYTHON:-python3} PY=${PY:-python3} PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

job_command() {  # the shell command of one job; each job has its own cache and run folders
  local name=$1 cache="$WORK/cache-$1"
  case $name in
    compare-gcide|compare-dna)
      local data=${name#compare-} src bytes
      if [ "$data" = gcide ]; then src=$GCIDE; bytes=${TEXT_BYTES:-4000000}; else src=dna; bytes=${DNA_BYTES:-2000000}; fi
      echo "export BYTELM_CACHE=$cache; " \
           "STAGES=$data SLICE=100000 RUNS=$WORK/runs TEXT_BYTES=$bytes DNA_BYTES=$bytes DEVICE=$DEVICE" \
           "RESULTS=$RESULTS bash scripts/compare_bpe_vs_byte.sh $src &&" \
           "EXTRA='${ROBUST_EXTRA:-}' WINDOWS=${ROBUST_WINDOWS:-128} SLICE=100000 DEVICE=$DEVICE bash scripts/robustness.sh" \
           "$WORK/runs/compare_$data $src $WORK/runs/robustness_$data &&" \
           "mkdir -p $RESULTS/robustness_$data && cp $WORK/runs/robustness_$data/{report.md,results.json,*.png} $RESULTS/robustness_$data/"
      ;;
    noise-text|noise-dna)
      echo "export BYTELM_CACHE=$cache; DATASETS=${name#noise-} BYTES=${NOISE_BYTES:-120000}" \
           "SEQ_LEN=${NOISE_SEQ_LEN:-256} BATCH=${NOISE_BATCH:-8} DEVICE=$DEVICE RUNS=$WORK/noise-runs EXTRA='${NOISE_EXTRA:-}'" \
           "RESULTS=$RESULTS/noise_padding bash scripts/noise_padding.sh" ;;
    synth-sc) echo "OUT=$RESULTS/synthetic TIME_SCALE=${TIME_SCALE:-1} DEVICE=$DEVICE bash scripts/synthetic.sh sc" ;;
    synth-sc-cur) echo "OUT=$RESULTS/synthetic TIME_SCALE=${TIME_SCALE:-1} DEVICE=$DEVICE bash scripts/synthetic.sh sc-curriculum" ;;
    synth-ih) echo "OUT=$RESULTS/synthetic TIME_SCALE=${TIME_SCALE:-1} DEVICE=$DEVICE bash scripts/synthetic.sh ih" ;;
    synth-mqar) echo "OUT=$RESULTS/synthetic TIME_SCALE=${TIME_SCALE:-1} DEVICE=$DEVICE bash scripts/synthetic.sh ${MQAR_STAGES:-mqar-256 mqar-512}" ;;
    *) echo "gpu_studies.sh: unknown job '$name'" >&2; return 2 ;;
  esac
}

start() {
  mkdir -p "$LOGS" "$WORK"
  for name in $JOBS; do
    local cmd
    cmd=$(job_command "$name") || exit 2
    rm -f "$LOGS/$name.rc"
    echo "start $name: $cmd" | tee "$LOGS/$name.log"
    # setsid: the job survives the device command that started it; its exit code lands in .rc
    setsid bash -c "cd '$ROOT' && { $cmd ; } >>'$LOGS/$name.log' 2>&1; echo \$? >'$LOGS/$name.rc'" \
      </dev/null >/dev/null 2>&1 &
  done
}

status() {
  for name in $JOBS; do
    local state="running"
    [ -f "$LOGS/$name.rc" ] && state="rc $(cat "$LOGS/$name.rc")"
    [ -f "$LOGS/$name.log" ] || state="not started"
    local done_runs=""
    case $name in
      compare-*) done_runs="$(ls "$WORK/runs/compare_${name#compare-}"/runs/*/result.json 2>/dev/null | wc -l) runs done;" ;;
      noise-*) done_runs="$(grep -o '"model"' "$RESULTS/noise_padding/${name#noise-}/results.json" 2>/dev/null | wc -l) runs done;" ;;
    esac
    printf '%-14s %-10s %s %s\n' "$name" "$state" "$done_runs" "$(tail -c 300 "$LOGS/$name.log" 2>/dev/null | tr '\r' '\n' | grep -v '^\s*$' | tail -n 1 | cut -c1-150)"
  done
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader
}

wait_all() {  # wait_all SECONDS
  local deadline=$((SECONDS + ${1:-600}))
  while [ $SECONDS -lt $deadline ]; do
    local left=0
    for name in $JOBS; do [ -f "$LOGS/$name.rc" ] || left=$((left + 1)); done
    [ $left -eq 0 ] && return 0
    sleep 10
  done
  return 1
}

collect() {  # collect FILE: the published reports (no checkpoints) and every log
  local file=${1:?collect needs a file name}
  if [ -d "$RESULTS/synthetic" ]; then  # the synthetic table and figure from every finished run
    OUT=$RESULTS/synthetic DEVICE=$DEVICE bash scripts/synthetic.sh table >/dev/null || true
  fi
  tar czf "$file" --exclude='*.safetensors' --exclude='*.pt' -C "$RESULTS" . -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
  ls -la "$file"
}

case ${1:-} in
  start) start ;;
  status) status ;;
  wait) wait_all "${2:-600}"; status ;;
  collect) collect "${2:-}" ;;
  *) sed -n '2,26p' "$0" >&2; exit 2 ;;
esac
