#!/usr/bin/env bash
# Create .venv and install infscope with every extra, pinning the CPU build of torch.
# torch is installed first, and pinned, so that no dependency pulls a multi-GB CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${INFSCOPE_TORCH:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[hf,dev,bench,audit,index,trees]" "$TORCH_SPEC"
# kronfluence is the reference the EK-FAC tests compare with. Its metadata pulls torchvision (a
# CUDA torch), so it goes in without dependencies, after its light ones, with torch pinned.
.venv/bin/python -m pip install -q "einops==0.8.2" "einconv==0.1.0" "opt-einsum==3.4.0" "accelerate>=0.31" "$TORCH_SPEC"
.venv/bin/python -m pip install -q --no-deps "kronfluence==1.0.1"
