#!/usr/bin/env bash
# Set up segmerge in ./.venv: PyTorch first, then segmerge with its test tools.
#
# PyTorch comes from the PyTorch CPU index (https://download.pytorch.org/whl/cpu), so that
# pip does not satisfy "torch>=2.1" with the multi-GB CUDA build that a plain
# `pip install torch` gets from PyPI on Linux. Where that index cannot be reached (an
# offline machine with a local wheelhouse or index in its pip configuration), torch==2.13.0
# comes from the configured sources instead, and the script says which build it got: a CUDA
# build there is what those sources hold. A torch already in .venv is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    log="$(mktemp)"
    if ! pip install -q --retries 1 --timeout 30 "$TORCH" --index-url "$CPU_INDEX" 2>"$log"; then
        echo "setup: $TORCH not installed from $CPU_INDEX ($(tail -n 1 "$log"));" \
            "installing it from pip's configured sources" >&2
        pip install -q "$TORCH"
    fi
    rm -f "$log"
fi
.venv/bin/python -W ignore - <<'EOF'
import torch

build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
print(f"setup: torch {torch.__version__} ({build} build)")
EOF
pip install -q -e ".[dev]"
