#!/usr/bin/env bash
# MAE pre-training figures on one GPU in under 8 minutes: images/s and MFU of ViT-S / ViT-B (ours
# bf16 with and without torch.compile, the official-style model in fp16), and the data loader
# reading the pixel cache against the GPU's step rate. Prints Markdown tables; see
# benchmarks/gpu_pretrain.py for what each row measures. Extra flags go to gpu_pretrain.py.
#
#   bash benchmarks/gpu.sh                           # on the GPU machine (--peak_tflops N if the
#                                                    # GPU is not in PEAK_BF16_TFLOPS)
#   bash benchmarks/gpu.sh --device cpu --dry_run    # anywhere: tiny shapes, seconds
#
# The package is used from this checkout (PYTHONPATH), not installed. A machine that lacks some
# of its dependencies (the device image has torch, transformers and timm but no `datasets`) gets
# them as wheels: run `bash benchmarks/gpu_wheels.sh` here once (it fills out/gpu-wheels, which
# git ignores), carry out/gpu-wheels to the machine, and this script installs them to /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
WHEELS=${GPU_WHEELS:-out/gpu-wheels}
# Only where they are missing (the device image): a development environment keeps its own.
if compgen -G "$WHEELS/*.whl" >/dev/null && ! "$PYTHON" -c "import datasets" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu-bench-site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/gpu-bench-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export TRANSFORMERS_VERBOSITY=error HF_DATASETS_DISABLE_PROGRESS_BARS=1
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader >&2 || true
fi
"$PYTHON" - >&2 <<'EOF' || true
import importlib, os, platform
print("python", platform.python_version(), "cores", os.cpu_count(), end="")
for name in ("torch", "transformers", "timm", "datasets", "pyarrow"):
    try:
        print(f"; {name} {importlib.import_module(name).__version__}", end="")
    except Exception as err:  # noqa: BLE001 (a version line must not stop the run)
        print(f"; {name} missing ({type(err).__name__})", end="")
print()
EOF
df -h /dev/shm 2>/dev/null | tail -1 | awk '{print "/dev/shm size " $2 " (DataLoader workers share batches there)"}' >&2 || true
exec "$PYTHON" benchmarks/gpu_pretrain.py "$@"
