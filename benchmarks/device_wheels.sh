#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, into .whl/ (ignored by git; carried with `carry: [".whl"]`).
# That machine has torch, transformers, accelerate, peft, safetensors, typer, rich, pyyaml, pillow
# and torchmetrics, but no diffusers and no internet: this fetches diffusers (the version of this
# checkout's .venv) and the one requirement of it that is missing there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
version=$(.venv/bin/python -c "import diffusers; print(diffusers.__version__)")
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "diffusers==$version" importlib_metadata
ls -l .whl
