#!/usr/bin/env bash
# GPU figures for the step-cost benchmark plus a short ALIGN run on the GPU (the trainer's CUDA
# path). Run on a GPU machine from the repository root; writes to ${OUT:-out/gpu}.
set -uo pipefail
out=${OUT:-out/gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 benchmarks/step_cost.py --device cuda --repeats 20 --small_batch 64 --resnet_batch 32 --resnet 2>&1 | tee "$out/step_cost_cuda.txt"
python3 benchmarks/step_cost.py --device cuda --repeats 20 --small_batch 64 --resnet_batch 8 --skip_resnet 2>&1 | tail -n 2
python3 -m domainbed_align.train --algorithm ALIGN --test_envs 3 --steps 400 --checkpoint_freq 200 \
  --output_dir /tmp/align_gpu --hparams '{"align_warmup_steps": 100}' 2>&1 | tail -n 4 | tee "$out/align_gpu_train.txt"
python3 - <<'PY' | tee -a "$out/align_gpu_train.txt"
import json
r = [json.loads(l) for l in open("/tmp/align_gpu/results.jsonl")][-1]
print("step_time", round(r["step_time"], 4), "mem_gb", round(r["mem_gb"], 3),
      "env3_in_acc", round(r["env3_in_acc"], 3), "env3_out_mask_epg", round(r["env3_out_mask_epg"], 3))
PY
