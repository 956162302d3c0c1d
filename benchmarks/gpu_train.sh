#!/usr/bin/env bash
# Train the shipped models further on a lent GPU machine, in one device call (prepared here by
# benchmarks/gpu_prepare.sh, which writes .gpu_data/train_inputs.npz: qm9pack is not on that machine):
#   run(command="bash benchmarks/gpu_train.sh", carry=[".whl", ".gpu_data"], timeout_s=590)
# A stage-2 piece of molspectra-painn-qm9 and a piece of spectra-painn-qm9 on the shipped + grown sticks (and a
# stage-1 piece of denoise-painn-qm9 with STAGE1_STEPS > 0), each a real spktrain run bounded by trainer.max_time
# (a piece stopped by it keeps its best model; the card records the steps it made).
# The continued weights files land in $OUT/pretrained_models: copy them into schnetpack_molspectra/pretrained_models/,
# run python scripts/record_measured.py after the benchmarks, and commit.
# A CPU dry run (validation every 2 steps, so that 4 steps write a best model):
#   ACCELERATOR=cpu STAGE2_STEPS=4 SPECTRA_STEPS=4 BATCH2=8 BATCH3=8 WORKERS=0 SIM_WORKERS=0 \
#   EXTRA=trainer.val_check_interval=2 \
#   bash benchmarks/gpu_train.sh
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${ACCELERATOR:-gpu}" = gpu ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONUNBUFFERED=1 MOLSPECTRA_CACHE=/tmp/molspectra-cache
models="${OUT:-/tmp/gpu_train_out}/pretrained_models"
mkdir -p "$models" && cp schnetpack_molspectra/pretrained_models/*.pt "$models/"
common=(--accelerator "${ACCELERATOR:-gpu}" --workers "${WORKERS:-4}" --threads 4 --inputs .gpu_data/train_inputs.npz
        --models-dir "$models" --workdir /tmp/shipped_runs)
# the simulator on the CPU cores the training leaves (4 workers for the dataloaders): IR + Raman of the next
# sticks chunks (those gpu_prepare.sh wrote into .gpu_data/sticks_inputs.npz), each finished chunk in
# $OUT/qm9_sticks: copy them into data/qm9_sticks and commit
if [ -f .gpu_data/sticks_inputs.npz ] && [ "${SIM_WORKERS:-12}" -gt 0 ]; then
    timeout "${SIM_SECONDS:-480}" python3 scripts/ship_sticks.py --chunks "$(cat .gpu_data/sim_chunks.txt)" --uv-method none \
        --inputs .gpu_data/sticks_inputs.npz --folder "${OUT:-/tmp/gpu_train_out}/qm9_sticks" --workers "${SIM_WORKERS:-12}" \
        --workdir /tmp/ship_sticks_work > "${OUT:-/tmp/gpu_train_out}/ship_sticks.log" 2>&1 &
fi
# stage 2 on the shipped and the grown sticks first (what the data issue retrains), then a piece of the spectra model;
# a stage-1 piece only when asked for (STAGE1_STEPS > 0): a 10-minute call holds two pieces and the start-up
python3 scripts/train_shipped.py molspectra-painn-qm9 --steps "${STAGE2_STEPS:-1500}" --batch-size "${BATCH2:-64}" \
    --sticks data/qm9_sticks "${common[@]}" "+trainer.max_time=${MAX_TIME2:-00:00:04:00}" ${EXTRA:-} || echo "stage 2 piece failed"
python3 scripts/train_shipped.py spectra-painn-qm9 --steps "${SPECTRA_STEPS:-3000}" --batch-size "${BATCH3:-64}" \
    --sticks data/qm9_sticks "${common[@]}" "+trainer.max_time=${MAX_TIME3:-00:00:02:30}" ${EXTRA:-} || echo "spectra piece failed"
if [ "${STAGE1_STEPS:-0}" -gt 0 ]; then
    python3 scripts/train_shipped.py denoise-painn-qm9 --steps "${STAGE1_STEPS}" --batch-size "${BATCH1:-128}" \
        "${common[@]}" "+trainer.max_time=${MAX_TIME1:-00:00:04:00}" ${EXTRA:-} || echo "stage 1 piece failed"
fi
tail -n 30 /tmp/shipped_runs/*.log > "${OUT:-/tmp/gpu_train_out}/train_logs.txt" 2>/dev/null
wait  # the simulator pass (bounded by SIM_SECONDS)
grep -a "chunk" "${OUT:-/tmp/gpu_train_out}/ship_sticks.log" 2>/dev/null | tail -n 40
python3 -c "
from schnetpack_molspectra.pretrained import read_weights
import glob
for f in sorted(glob.glob('$models/*.pt')):
    p = read_weights(f)['card']['pieces'][-1]
    print(f, 'piece', p['piece'], p['steps'], 'steps', round(p['wall_s']), 's', p['machine'])
"
