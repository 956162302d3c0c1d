#!/usr/bin/env bash
# The GPU check on a lent GPU machine, in one call (prepared by benchmarks/gpu_prepare.sh on this machine):
# install the carried wheels, then benchmarks/gpu_check.py on the carried data; the table is printed and
# gpu_check.json lands in $OUT. Keep it under the call's limit: every part has its own timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH" PYTHONUNBUFFERED=1
export MOLSPECTRA_CACHE=/tmp/molspectra-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu_check.py --device cuda --spectra-db .gpu_data/spectra.db --qm9-db .gpu_data/qm9.db \
    --timeout 240 --out "${OUT:-.}/gpu_check.json" 2>&1 | tee "${OUT:-.}/gpu_check.log"
