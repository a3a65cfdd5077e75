#!/usr/bin/env bash
# Download the wheels scripts/gpu_check.sh installs on a bare single-GPU machine without network.
#
#   scripts/gpu_wheels.sh DIR        (default DIR: .whl)
#
# The target machine has CUDA, Python 3.12, PyTorch 2.11 (with its own dependencies: numpy,
# sympy, jinja2, networkx, filelock, fsspec, triton, nvidia-*) and transformers (with
# huggingface-hub, tokenizers, safetensors, regex, pyyaml, requests, tqdm, packaging); it lacks
# megatron-core and our pure-Python dependencies. Every wheel here is exact (==), for CPython
# 3.12 on manylinux x86_64 or pure Python (--only-binary :all:, --no-deps: the list IS the
# closure of what is missing; gpu_check.sh installs it with --no-deps). The exception,
# antlr4-python3-runtime 4.9.3 (omegaconf pins 4.9.*), exists on PyPI as an sdist only: it is
# built here into a pure-Python wheel. Left out on purpose: tensorboard (optional at run time),
# pyarrow (parquet datasets only), TensorRT-LLM / vLLM / Transformer Engine (containers/).
# Prints the total size; fails when it is over 48 MiB.
set -euo pipefail
DIR=${1:-.whl}
PY=${PYTHON:-python3}
LIMIT_MIB=48
PLATFORM=(--python-version 3.12 --implementation cp --abi cp312
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)

# package==version   why
WHEELS=(
  megatron-core==0.16.1             # the policy (containers/versions.env)
  packaging==25.0                   # megatron-core needs >= 24.2 (the machine's may be older)
  hydra-core==1.3.2                 # config composition
  omegaconf==2.3.0                  # hydra
  math-verify==0.9.0                # the grader
  latex2sympy2_extended==1.11.0     # math-verify
  gguf==0.17.1                      # SmolLM2 import (model.source=smollm2)
  accelerate==1.10.1                # transformers' device placement helpers
  psutil==7.0.0                     # accelerate
  matplotlib==3.10.6                # plots at the end of a run
  contourpy==1.3.3                  # matplotlib
  cycler==0.12.1                    # matplotlib
  fonttools==4.60.1                 # matplotlib
  kiwisolver==1.4.9                 # matplotlib
  pillow==11.3.0                    # matplotlib
  pyparsing==3.2.5                  # matplotlib
  python-dateutil==2.9.0.post0      # matplotlib
  six==1.17.0                       # python-dateutil
  pytest==8.4.2                     # the gpu-marked tests
  pluggy==1.6.0                     # pytest
  iniconfig==2.1.0                  # pytest
  pygments==2.19.2                  # pytest
  pytest-timeout==2.4.0             # pytest's --timeout (pyproject)
)

mkdir -p "$DIR"
names=()
for entry in "${WHEELS[@]}"; do names+=("${entry%%#*}"); done
echo "gpu_wheels: ${#names[@]} wheels for cp312 manylinux into $DIR"
timeout 900 "$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: "${PLATFORM[@]}" --dest "$DIR" "${names[@]}"
# omegaconf's antlr4 runtime: sdist only on PyPI; a pure-Python wheel built from it.
if ! ls "$DIR"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
  timeout 600 "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --wheel-dir "$DIR" antlr4-python3-runtime==4.9.3
fi

total=0
while IFS= read -r -d '' f; do
  total=$((total + $(stat -c %s "$f")))
done < <(find "$DIR" -maxdepth 1 -name '*.whl' -print0)
count=$(find "$DIR" -maxdepth 1 -name '*.whl' | wc -l)
mib=$(awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "gpu_wheels: $count wheels, $mib MiB in $DIR"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_wheels: over the ${LIMIT_MIB} MiB budget" >&2
  exit 1
fi
