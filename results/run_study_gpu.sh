#!/bin/bash
# The study on one lent GPU machine (16 cores, one H100/H200), in one call of at most 10 min:
# 1. every algorithm's step cost on ResNet-50 (224 px, 3 x 32 images) and the small CNN;
# 2. the study's sweeps (results/run_study.py) in a pool of workers sharing the GPU, for
#    STUDY_SECONDS; finished runs' records are tarred into $OUT/records.tgz every 30 s (no
#    weights, checkpoints or logs), so a run cut short still returns what finished.
# Unpack here with: tar -C results/sweeps -xzf records.tgz (then `sweep status` / collect).
set -u
OUT=${OUT:-/tmp/study_out}; WORK=${WORK:-/tmp/study}; mkdir -p "$OUT" "$WORK"
if ls .whl/*.whl >/dev/null 2>&1; then  # packages the machine lacks (submitit), carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; date -u; } > "$OUT/machine.txt" 2>&1
timeout "${COST_SECONDS:-110}" $PY benchmarks/step_cost.py --resnet --resnet_batch 32 --repeats 5 \
  --rounds 2 > "$OUT/step_cost_gpu.txt" 2>&1
pack() {
  tar -C "$WORK" -czf "$OUT/partial.tgz" --exclude=model.pkl --exclude=checkpoint.pt \
    --exclude=out.txt --exclude=err.txt --exclude=running --exclude='*.tmp' . 2>/dev/null \
    && mv "$OUT/partial.tgz" "$OUT/records.tgz"
}
( while sleep 30; do pack; done ) &
packer=$!
timeout "${STUDY_SECONDS:-400}" $PY results/run_study.py --workers "${WORKERS:-16}" --root "$WORK" \
  > "$OUT/study_log.txt" 2>&1
kill $packer 2>/dev/null
pkill -f "multiprocessing.spawn" 2>/dev/null; sleep 1
pack
date -u >> "$OUT/machine.txt"
tail -n 3 "$OUT/study_log.txt"; grep -c " s /" "$OUT/study_log.txt"
