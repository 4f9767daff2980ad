#!/usr/bin/env bash
# The GPU half of issue 9 in one prepared script (< 8 minutes on one NVIDIA H200; Python 3.12,
# torch 2.11, no deepspeed/streaming/omegaconf/wandb installed, no internet):
#   1. installs the wheels carried in .whl/ (made here by benchmarks/fetch_gpu_wheels.sh)
#      into /tmp/site,
#   2. runs benchmarks/gpu_check.py: the 1M-byte context step (>= 100M params, bf16,
#      activation checkpointing), the real training loop on recipes/paper_text.yaml and
#      recipes/long_context_1m.yaml with parallel.tensor=1 (bytes/s, MFU, peak memory),
#      MegaByte vs baseline scaling and KV-cache generation,
#   3. writes results_gpu.md/.json and logs to $OUT (or benchmarks/gpu_out) and copies the
#      report to benchmarks/results_gpu.md.
# Before it, here: `bash benchmarks/fetch_gpu_wheels.sh` (fills .whl/, ~55 MB), then run it
# with .whl carried along (the run tool's carry=[".whl"]), e.g. `bash benchmarks/gpu.sh`.
# Without a GPU it runs the same code paths at toy sizes on the CPU (a dry run):
#   DS_ACCELERATOR=cpu bash benchmarks/gpu.sh            # here, with .venv
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && ! command -v nvidia-smi >/dev/null && PY=.venv/bin/python
START=$(date +%s)

if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import deepspeed, streaming, omegaconf" 2>/dev/null; then
    echo "[gpu.sh] installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
"$PY" -c "import torch, sys; print('[gpu.sh] python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$PY" -c "import deepspeed, streaming, omegaconf; print('[gpu.sh] deepspeed', deepspeed.__version__)" \
    || echo "[gpu.sh] WARNING: training-loop dependencies missing: the loop section will fail"

# The budget keeps the whole script under 8 minutes including the install above.
BUDGET=$(( 450 - ($(date +%s) - START) ))
"$PY" benchmarks/gpu_check.py --out "$OUT" --budget "$BUDGET" "$@" 2>&1 | tee "$OUT/gpu_check.log"
# Only a real GPU run replaces benchmarks/results_gpu.md (a CPU dry run stays in $OUT).
command -v nvidia-smi >/dev/null && cp "$OUT/results_gpu.md" benchmarks/results_gpu.md 2>/dev/null
echo "[gpu.sh] done in $(( $(date +%s) - START )) s; report: $OUT/results_gpu.md"
