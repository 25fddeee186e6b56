#!/usr/bin/env bash
# The first checks to run on a machine with a CUDA GPU (about 10 minutes), in the order that
# stops at the first failure: the device tests (the CUDA one trains on the GPU for real), the
# seconds per training step of both `bench --size` presets on the GPU (and from them each
# preset's training time, one model at a time), then `segmerge bench --quick --device cuda`
# end to end. Figures go to stdout; the quick run's report to $OUT (default /tmp).
#
#     bash benchmarks/gpu_check.sh            # with the venv scripts/setup.sh made
#
# On a machine whose python3 already holds a CUDA torch, transformers, typer and the rest
# (nothing to download), install segmerge there without its dependencies first, so that its
# entry points (the bench command) exist:
#
#     python3 -m pip install --no-deps --no-build-isolation -e . && PYTHON=python3 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
out="${OUT:-/tmp}"
export HF_HUB_OFFLINE=1

"$python" -c "import torch, sys; ok = torch.cuda.is_available(); print(torch.__version__, torch.cuda.get_device_name(0) if ok else 'no CUDA device'); sys.exit(0 if ok else 1)"
"$python" -m pytest -q -p no:cacheprovider tests/test_training_devices.py
"$python" benchmarks/training_speed.py --sizes small,large --device cuda --steps 40 --rounds 3 --threads 4
time "$python" -m segmerge bench --quick --device cuda --overwrite --out "$out/segmerge-bench-quick-cuda"
