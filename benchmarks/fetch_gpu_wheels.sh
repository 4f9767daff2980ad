#!/usr/bin/env bash
# Download into .whl/ the wheels that benchmarks/gpu.sh installs on a GPU machine that has
# Python 3.12 and torch but not mbtrain's other dependencies (and no internet). Run it here,
# where PyPI is reachable; versions are the pins of constraints.txt.
#
#   bash benchmarks/fetch_gpu_wheels.sh        # then carry .whl/ to the GPU machine
#
# What is fetched, and why (import-time needs, found with `python -X importtime` and by
# diffing sys.modules around the imports of a 2-step `mbtrain train`):
#   deepspeed            -> hjson msgpack psutil pydantic pydantic-core annotated-types
#                           typing-inspection einops packaging py-cpuinfo ninja tqdm numpy
#   mosaicml-streaming   -> catalogue xxhash zstd python-snappy cramjam brotli, and at import
#                           time transformers (streaming.base.dataloader), which needs
#                           tokenizers huggingface-hub safetensors regex requests urllib3 idna
#                           certifi charset-normalizer pyyaml filelock fsspec
#   omegaconf            -> antlr4-python3-runtime pyyaml attrs
#   mbtrain's own        -> zstandard safetensors pyyaml
# wandb is imported lazily and only when logging.wandb is not disabled: not fetched (gpu.sh
# runs with logging.wandb=disabled). torch's own dependencies are on the GPU machine already.
#
# deepspeed publishes only an sdist: its wheel is built here (`pip wheel`, no CUDA ops
# prebuilt, so it is a pure-Python py3-none-any wheel that JIT-builds ops if ever asked).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=.whl
mkdir -p "$DEST"

pin() {  # the constraints.txt pin of a distribution, e.g. "numpy==2.1.3"
    local line
    line=$(grep -i -E "^${1//-/[-_]}==" constraints.txt | head -1 || true)  # - and _ alike
    case "$1" in
        # constraints.txt pins a build with no cp312 manylinux wheel: any 1.5.x has the API
        zstd) echo "zstd>=1.5.6,<1.6" ;;
        *) echo "${line:-$1}" ;;
    esac
}

PKGS=(
    mosaicml-streaming catalogue xxhash zstd python-snappy cramjam brotli
    transformers tokenizers huggingface-hub hf-xet safetensors regex requests urllib3 idna
    certifi charset-normalizer pyyaml filelock fsspec tqdm numpy packaging
    omegaconf antlr4-python3-runtime attrs zstandard
    hjson msgpack psutil pydantic pydantic-core annotated-types typing-inspection
    typing-extensions einops py-cpuinfo ninja
)
SPECS=()
for p in "${PKGS[@]}"; do SPECS+=("$(pin "$p")"); done

"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    "${SPECS[@]}"

# deepspeed: sdist only on PyPI -> build a wheel here (needs torch, which the venv has).
DS=$(pin deepspeed)
if ! ls "$DEST"/deepspeed-*.whl >/dev/null 2>&1; then
    DS_BUILD_OPS=0 "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DEST" "$DS"
fi
ls -la "$DEST"
du -sh "$DEST"
