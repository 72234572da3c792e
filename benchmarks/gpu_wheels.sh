#!/usr/bin/env bash
# Wheels the GPU machine lacks for benchmarks/gpu.sh (its image has torch, timm, pyarrow,
# huggingface_hub and an older transformers, no `datasets`), downloaded here for its Python 3.12
# into out/gpu-wheels (ignored by git; carry it to the machine). Versions: those this checkout is
# tested with. About 15 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p out/gpu-wheels
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d out/gpu-wheels \
    "datasets==$(version datasets)" "dill==$(version dill)" \
    "multiprocess==$(version multiprocess)" "transformers==$(version transformers)"
ls -l out/gpu-wheels
