#!/usr/bin/env bash
# One prepared GPU session: install the carried wheels, then check CUDA graphs against eager
# execution, benchmark every variant in fp16 at 512 px, and check fp16/bf16 against fp32.
# Usage (on a machine with a CUDA GPU): bash benchmarks/device_run.sh OUTDIR
set -uo pipefail
out=${1:-bench-results}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, transformers; print(torch.__version__, torch.version.cuda, diffusers.__version__, transformers.__version__)" | tee -a "$out/gpu.txt"
timeout 120 python3 -m benchmarks.graphs_check --device cuda --size 512 2>&1 | grep '^{' | tee "$out/graphs-check.json"
timeout 300 python3 -m benchmarks.run --device cuda --dtype fp16 --size 512 --runs 20 --warmup 3 --out "$out" 2>&1 | grep -v "kept in float32" | tee "$out/bench-fp16.log"
timeout 100 python3 -m benchmarks.precision --device cuda --size 512 2>&1 | grep '^{' | tee "$out/precision.json"
exit 0
