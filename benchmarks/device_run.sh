#!/usr/bin/env bash
# One prepared GPU session: install the carried wheels, then run the chosen parts:
#   checks     CUDA graphs against eager execution, alone and over compiled regions
#   bench      the main variants in fp16 at 512 px (baseline in the same run)
#   precision  fp16 and bf16 against fp32
#   xl         SDXL at 1024 px: CUDA graphs against eager, then eager and graphed timings
# Usage (on a machine with a CUDA GPU): bash benchmarks/device_run.sh OUTDIR [PART ...]
# (all parts by default; about 10 minutes in all, so split them where a call has less)
set -uo pipefail
out=${1:-bench-results}
shift || true
parts=${*:-checks bench precision xl}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, transformers; print(torch.__version__, torch.version.cuda, diffusers.__version__, transformers.__version__)" | tee -a "$out/gpu.txt"
for part in $parts; do
  case $part in
    checks)
      timeout 120 python3 -m benchmarks.graphs_check --device cuda --size 512 2>&1 | grep '^{' | tee "$out/graphs-check.json"
      timeout 300 python3 -m benchmarks.graphs_check --device cuda --size 512 --compile 2>&1 | grep '^{' | tee "$out/graphs-compile-check.json" ;;
    bench)
      timeout 420 python3 -m benchmarks.run --device cuda --dtype fp16 --size 512 --runs 20 --warmup 3 --out "$out" \
        --variants icdedit,icdedit-graphs,icdedit-graphs-compile,baseline 2>&1 | grep -v "kept in float32" | tee "$out/bench-fp16.log" ;;
    precision)
      timeout 100 python3 -m benchmarks.precision --device cuda --size 512 2>&1 | grep '^{' | tee "$out/precision.json" ;;
    xl)
      timeout 200 python3 -m benchmarks.graphs_check --device cuda --arch sdxl --size 1024 2>&1 | grep '^{' | tee "$out/graphs-check-xl.json"
      timeout 380 python3 -m benchmarks.run --device cuda --dtype fp16 --arch sdxl --size 1024 --runs 10 --warmup 2 --out "$out" \
        --variants icdedit,icdedit-graphs,baseline 2>&1 | grep -v "kept in float32" | tee "$out/bench-xl-fp16.log" ;;
    *) echo "unknown part $part (checks, bench, precision, xl)" >&2 ;;
  esac
done
exit 0
