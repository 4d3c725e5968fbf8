#!/usr/bin/env bash
# Install the "anchor" attribution libraries that bench/attribution_quality.py compares infscope
# with, into the project's .venv, WITHOUT touching torch.
#
# Every anchor is installed with --no-deps (their metadata pulls torchvision / torchaudio /
# bitsandbytes, which would replace the CPU torch with a multi-GB CUDA build); the light,
# torch-free dependencies they really import are installed explicitly, under a constraint that
# pins the installed torch. Versions are pinned: these are the ones the published numbers used.
# Each library is installed on its own: one that fails is reported and the others still install.
#
#   bash bench/install_anchors.sh            # from the repository root
#   VENV=/path/to/venv bash bench/install_anchors.sh
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "no virtual environment at $VENV (run 'make setup' first)" >&2
    exit 1
fi
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==${TORCH_VERSION}" >"$CONSTRAINTS"
PIP=("$PY" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS")

declare -A STATUS
install() {  # install NAME "anchor spec" "light deps..."
    local name="$1" anchor="$2"
    shift 2
    echo "== $name: $anchor ${*:+(+ $*)}"
    if [[ $# -gt 0 ]] && ! "${PIP[@]}" "$@"; then
        STATUS[$name]="FAILED (dependencies: $*)"
        return
    fi
    if ! "${PIP[@]}" --no-deps "$anchor"; then
        STATUS[$name]="FAILED ($anchor)"
        return
    fi
    STATUS[$name]="installed"
}

# kronfluence: EK-FAC / K-FAC influence (Grosse et al. 2023). Imports einops, einconv, opt_einsum,
# accelerate, safetensors; torchvision only in its examples.
install kronfluence "kronfluence==1.0.1" "einops==0.8.2" "einconv==0.1.0" "opt-einsum==3.4.0" \
    "accelerate>=0.31" "safetensors>=0.4.2"
# traker: TRAK (MadryLab). Pure Python; fast_jl (its CUDA projector) is not installed, the
# benchmark uses BasicProjector on the CPU.
install traker "traker==0.3.2"
# captum: TracInCP / TracInCPFast. captum/__init__ imports captum.attr, which imports matplotlib.
install captum "captum==0.9.0" "matplotlib>=3.5"
# cleanlab: label-quality scores from out-of-sample predicted probabilities.
install cleanlab "cleanlab==2.9.0" "termcolor>=2.4" "pandas>=1.4"
# dattri: influence-function / TRAK / TracIn attributors. pretty_midi is only for its music
# benchmark and is not installed.
install dattri "dattri==0.3.0" "pyyaml"
# bergson: gradient collection with projections (EleutherAI). torchvision, torchaudio and
# bitsandbytes are declared but left out; torchopt (its compiled ops are optional) with --no-deps.
install bergson "bergson==2.5.1" "jaxtyping==0.3.11" "simple-parsing==0.1.9" "ml_dtypes" \
    "natsort" "petname" "optree>=0.4.1" "jinja2" "pyarrow" "pyyaml" "psutil" \
    "huggingface-hub>=1.13.0"
"${PIP[@]}" --no-deps "torchopt==0.7.3" || STATUS[bergson]="FAILED (torchopt)"

echo
echo "== import check (torch must still be ${TORCH_VERSION}, torchvision must be absent)"
"$PY" - <<'EOF'
import importlib, importlib.util, sys
import torch
print(f"torch {torch.__version__}; torchvision installed: {importlib.util.find_spec('torchvision') is not None}")
for module in ("kronfluence", "trak", "captum.influence", "cleanlab.filter", "dattri.algorithm", "bergson"):
    try:
        importlib.import_module(module)
        print(f"  import {module}: ok")
    except Exception as err:  # report, do not stop: every anchor is optional
        print(f"  import {module}: FAILED {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
EOF
echo
for name in kronfluence traker captum cleanlab dattri bergson; do
    echo "$name: ${STATUS[$name]:-not attempted}"
done
NOW="$("$PY" -c 'import torch; print(torch.__version__)')"
if [[ "$NOW" != "$TORCH_VERSION" ]]; then
    echo "torch changed from $TORCH_VERSION to $NOW: reinstall it (scripts/setup.sh)" >&2
    exit 1
fi
