#!/usr/bin/env bash
# One prepared GPU session, in order of priority, each part inside what is left of DEADLINE:
#   tests      make test-gpu (tests/test_gpu.py)                                  ~3 min
#   sd15       SD1.5 512 px fp16: graphs, graphs + compile, the baseline          ~4 min
#   xl         SDXL 1024 px fp16: eager, graphs, the baseline (SDXL's first GPU run)  ~4 min
#   autotune   SD1.5 graphs + compile with Inductor's max-autotune               ~4 min
#   checks     full-size CUDA graphs (+ compile) against eager, bit for bit
#   precision  full-size fp16 and bf16 against fp32
#   preview    the preview decoder (TAESD) against the VAE's decoder: SD1.5 512 px, SDXL 1024 px  ~1 min
# Usage (carry .whl from benchmarks/device_wheels.sh):
#   bash benchmarks/device_run.sh OUTDIR [PART ...]      default: tests sd15 xl preview
# DEADLINE (seconds, default 540) bounds the whole script, so that one call stays inside its limit;
# a part that would start with under a minute left is skipped and says so.
set -uo pipefail
out=${1:-bench-results}
shift || true
parts=${*:-tests sd15 xl preview}
deadline=${DEADLINE:-540}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"

# run PART-LOG COMMAND...: the command under what is left of the deadline, its output kept in $out
run() {
  local log=$1 left=$((deadline - SECONDS))
  shift
  if [ "$left" -lt 60 ]; then echo "skipped $log: ${left}s left" | tee -a "$out/summary.txt"; return; fi
  local start=$SECONDS
  timeout "$left" "$@" > "$out/$log" 2>&1
  echo "$log: exit $? after $((SECONDS - start))s" | tee -a "$out/summary.txt"
}
bench() { python3 -m benchmarks.run --device cuda --dtype fp16 --out "$out" "$@"; }
for part in $parts; do
  case $part in
    tests) run tests.log make test-gpu PY=python3 ;;
    sd15) run bench-sd15.log bench --size 512 --runs 10 --warmup 2 \
            --variants icdedit-graphs,icdedit-graphs-compile,baseline ;;
    xl) run bench-xl.log bench --arch sdxl --size 1024 --runs 5 --warmup 2 --variants icdedit,icdedit-graphs,baseline ;;
    autotune) run bench-autotune.log bench --size 512 --runs 10 --warmup 2 --variants icdedit-graphs-compile-autotune \
            --out "$out/autotune" ;;
    checks) run graphs-check.log python3 -m benchmarks.graphs_check --device cuda --size 512 --compile ;;
    precision) run precision.log python3 -m benchmarks.precision --device cuda --size 512 ;;
    preview) run preview.log sh -c "python3 -m benchmarks.preview --device cuda --dtype fp16 --size 512 --runs 20 &&
               python3 -m benchmarks.preview --device cuda --dtype fp16 --arch sdxl --size 1024 --runs 20" ;;
    *) echo "unknown part $part (tests, sd15, xl, autotune, checks, precision, preview)" >&2 ;;
  esac
done
grep -h "passed\|failed\|PSNR\|resident" "$out/tests.log" 2>/dev/null | tail -5
cat "$out"/bench-*.md "$out"/*/bench-*.md 2>/dev/null
grep -h '^{' "$out/preview.log" 2>/dev/null
cat "$out/summary.txt"
exit 0
