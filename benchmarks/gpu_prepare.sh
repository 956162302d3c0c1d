#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what a lent GPU machine needs to run benchmarks/gpu_check.py in one call.
# The device image has Python 3.12, torch, Lightning, torchmetrics and tensorboard, but not SchNetPack, ASE,
# hydra, tblite or the QM9 package (qm9pack's wheel alone is 104 MB, over the 64 MiB a call may carry). So:
#   .whl/       the missing wheels for Python 3.12 (~12 MB)
#   .gpu_data/  a spectra database of the first shipped molecules and a QM9 database of a few thousand molecules;
#               train_inputs.npz (~25 MB): what benchmarks/gpu_train.sh trains the shipped models from
# Both are git-ignored (.git/info/exclude) and travel with `carry`. Then, in one device call:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".gpu_data"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
grep -qx "/.gpu_data/" .git/info/exclude || echo "/.gpu_data/" >> .git/info/exclude
rm -rf .whl && mkdir -p .whl .gpu_data
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
    schnetpack==2.2.0 ase hydra-core==1.3.2 omegaconf==2.3.0 hydra-colorlog fasteners dirsync torch-ema matscipy \
    tensorboardX progressbar2 python-utils petname vesin tblite
# antlr 4.9.3 (what hydra 1.3 needs) is published as an sdist only: build its pure-Python wheel here
python -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
du -sh .whl
python - <<'EOF'
import os

from schnetpack_molspectra.data.default import build_default_dataset
from schnetpack_molspectra.data.qm9 import build_qm9_db

for path, build in ((".gpu_data/spectra.db", lambda p: build_default_dataset(p, n_molecules=600)),
                    (".gpu_data/qm9.db", lambda p: build_qm9_db(p, limit=3000))):
    if not os.path.exists(path):
        build(path)
    print(path, os.path.getsize(path) // 2**20, "MiB")
EOF
# always anew: the labels of every molecule data/qm9_sticks holds now
python scripts/train_shipped.py --write-inputs .gpu_data/train_inputs.npz --sticks data/qm9_sticks
# the geometries of the next 80 sticks chunks after those in data/qm9_sticks, for the simulator pass of
# benchmarks/gpu_train.sh (which reads their range from .gpu_data/sim_chunks.txt)
last=$(ls data/qm9_sticks/vib_*.npz 2>/dev/null | sed 's/.*vib_0*\([0-9]*\)\.npz/\1/' | sort -n | tail -n 1)
sim_chunks="$(( ${last:-20} + 1 )):$(( ${last:-20} + 81 ))"
python scripts/ship_sticks.py --chunks "$sim_chunks" --write-inputs .gpu_data/sticks_inputs.npz
echo "$sim_chunks" > .gpu_data/sim_chunks.txt
