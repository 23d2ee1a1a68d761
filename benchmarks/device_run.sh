#!/usr/bin/env bash
# One prepared GPU session, in order of priority, each part inside what is left of DEADLINE:
#   tests      the GPU smoke tests (tests/test_gpu.py; a missing GPU fails them)   ~3 min
#   sd15       SD1.5 512 px fp16: graphs, graphs + compile, the baseline          ~4 min
#   xl         SDXL 1024 px fp16: eager, graphs, the baseline (SDXL's first GPU run)  ~4 min
#   preview    the preview decoder (TAESD) against the VAE's: SD1.5 512 px, SDXL 1024 px  ~1 min
#   autotune   SD1.5 graphs + compile with Inductor's max-autotune               ~4 min
#   checks     full-size CUDA graphs (+ compile) against eager, bit for bit
#   precision  full-size fp16 and bf16 against fp32
# Usage (carry .whl from benchmarks/device_wheels.sh):
#   bash benchmarks/device_run.sh OUTDIR [PART ...]      default: tests sd15 xl preview
# DEADLINE (seconds, default 540) bounds the whole script, so that one call stays inside its limit;
# a part that would start with under a minute left is skipped and says so. Everything lands in
# OUTDIR/results.tgz (logs, JSON, tables) beside OUTDIR/summary.txt: two files, whatever ran.
set -uo pipefail
out=${1:-bench-results}
shift || true
parts=${*:-tests sd15 xl preview}
deadline=${DEADLINE:-540}
work=$(mktemp -d)
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$work/gpu.txt"

# run LOG COMMAND...: the command under what is left of the deadline, its output in $work/LOG
run() {
  local log=$1 left=$((deadline - SECONDS))
  shift
  if [ "$left" -lt 60 ]; then echo "skipped $log: ${left}s left" | tee -a "$work/summary.txt"; return; fi
  local start=$SECONDS
  timeout "$left" "$@" > "$work/$log" 2>&1
  echo "$log: exit $? after $((SECONDS - start))s" | tee -a "$work/summary.txt"
}
bench=(python3 -m benchmarks.run --device cuda --dtype fp16 --out "$work")
for part in $parts; do
  case $part in
    tests) run tests.log env ICDEDIT_REQUIRE_GPU=1 python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/test_gpu.py ;;
    sd15) run bench-sd15.log "${bench[@]}" --size 512 --runs 10 --warmup 2 \
            --variants icdedit-graphs,icdedit-graphs-compile,baseline ;;
    xl) run bench-xl.log "${bench[@]}" --arch sdxl --size 1024 --runs 5 --warmup 2 --variants icdedit,icdedit-graphs,baseline ;;
    preview) run preview.log sh -c "python3 -m benchmarks.preview --device cuda --dtype fp16 --size 512 --runs 20 &&
               python3 -m benchmarks.preview --device cuda --dtype fp16 --arch sdxl --size 1024 --runs 20" ;;
    autotune) run bench-autotune.log "${bench[@]}" --size 512 --runs 10 --warmup 2 \
            --variants icdedit-graphs-compile-autotune --out "$work/autotune" ;;
    checks) run graphs-check.log python3 -m benchmarks.graphs_check --device cuda --size 512 --compile ;;
    precision) run precision.log python3 -m benchmarks.precision --device cuda --size 512 ;;
    *) echo "unknown part $part (tests, sd15, xl, preview, autotune, checks, precision)" | tee -a "$work/summary.txt" ;;
  esac
done
{
  grep -h "passed\|failed\|error\|PSNR\|resident" "$work/tests.log" 2>/dev/null | tail -8
  cat "$work"/bench-*.md "$work"/*/bench-*.md 2>/dev/null
  grep -h '^{' "$work/preview.log" 2>/dev/null
  cat "$work/summary.txt"
} | tee -a "$work/summary.txt.final"
mv "$work/summary.txt.final" "$work/summary.txt"
cp "$work/summary.txt" "$out/summary.txt"
tar -czf "$out/results.tgz" -C "$work" .
exit 0
