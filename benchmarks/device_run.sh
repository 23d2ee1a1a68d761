#!/usr/bin/env bash
# One prepared GPU session: install the carried wheels, then benchmark and check precision.
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
timeout 200 python3 -m benchmarks.run --device cuda --dtype fp16 --size 512 --runs 20 --warmup 3 --out "$out" 2>&1 | tee "$out/bench-fp16.log"
timeout 120 python3 -m benchmarks.precision --device cuda --size 512 2>&1 | tee "$out/precision.json"
timeout 150 python3 -m benchmarks.run --device cuda --dtype bf16 --size 512 --runs 20 --warmup 3 --variants icdedit --out "$out/bf16" 2>&1 | tee "$out/bench-bf16.log"
exit 0
