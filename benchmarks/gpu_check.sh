#!/usr/bin/env bash
# GPU figures in one run (issue 23: float32 vs bf16). From the repository root on a GPU machine:
#   bash benchmarks/gpu_check.sh            -> ${OUT:-out/gpu}/*.txt, ~8 minutes on one H200 (an estimate)
#   SMOKE=1 bash benchmarks/gpu_check.sh    -> the same pieces at toy sizes (CPU, minutes)
# Every piece writes its own file as soon as it ends, so a run cut short keeps what it finished;
# PARTS=34 reruns pieces 3 and 4 only (2 needs 1's files in $OUT). Where one command may run
# at most 10 minutes (the lent machines), run PARTS=123 (~4 min) and PARTS=4 (~6 min) apart.
#  1. step_cost_{fp32,bf16}.txt: benchmarks/step_cost.py --resnet per precision (ResNet-50,
#     3 x 32 images; bf16 = autocast + channels-last + cudnn.benchmark). Expected: a bf16 ms
#     column well below fp32's for every algorithm (ResNet-50 on H100/H200 runs ~2-3x faster in
#     bf16 with channels-last; double-backward algorithms gain less).
#  2. gpu_hours.txt: benchmarks/gpu_hours.py with both tables; its last lines give bf16's GPU
#     hours as a share of fp32's. The issue's target: <= 50% of 890 h.
#  3. loader.txt: benchmarks/loader_speed.py on this node's cores against the fp32 and bf16
#     consumption, and the trainer's own stream (loader_workers(3) workers per domain, pinned
#     memory) on pre-resized TerraIncognita-sized files: "keeps up" or "does NOT keep up".
#  4. agreement.txt: ERM and ALIGN, 300 steps, 3 seeds, per precision, ResNet-50 from scratch
#     on a fabricated 5-class VLCS-layout folder (benchmarks/fake_vlcs.py; no ImageNet weights
#     offline), then benchmarks/precision_agreement.py: per metric fp32 and bf16 mean +- s.e.
#     and "agree" where |diff| <= 2 s.e.; plus seconds per step with data loading included.
set -uo pipefail
out=${OUT:-out/gpu}
work=${WORK:-/tmp/gpu_check}
mkdir -p "$out" "$work"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if [ "${SMOKE:-0}" = 1 ]; then   # toy sizes: every piece runs, nothing is measured
  cost_args=(--repeats 1 --rounds 1 --small_batch 4 --resnet_batch 1 --resnet_size 64 --algorithms ERM ALIGN)
  loader_args=(--n 4 --kinds "VLCS 227x227" "Terra 1024x747 --resize 256" --pipeline_steps 2)
  steps=2; seeds="0"; per_class=2
  hp='"pretrained": false, "resnet18": true, "batch_size": 2, "explain_n": 1'
  hp_align='"align_warmup_steps": 1, "align_masker_warmup_steps": 0, "align_l3_ramp_steps": 1'
else
  cost_args=(--repeats 5 --rounds 2 --resnet_batch 32)
  loader_args=(--n 48 --pipeline_steps 60)
  steps=300; seeds="0 1 2"; per_class=60
  hp='"pretrained": false, "explain_n": 64'
  hp_align='"align_warmup_steps": 100, "align_masker_warmup_steps": 50, "align_l3_ramp_steps": 50'
fi
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU") | tee "$out/gpu.txt"
nproc | sed 's/^/cores: /' | tee -a "$out/gpu.txt"

parts=${PARTS:-1234}
# 1. step costs per precision
[[ $parts == *1* ]] && for p in fp32 bf16; do
  $py benchmarks/step_cost.py --resnet --precision $p "${cost_args[@]}" 2>&1 | tee "$out/step_cost_$p.txt"
done

# 2. GPU hours of the paper sweeps for both tables
[[ $parts == *2* ]] && $py benchmarks/gpu_hours.py --costs "$out/step_cost_fp32.txt" --costs "$out/step_cost_bf16.txt" \
  --config sweeps/vlcs_paper.json --config sweeps/terra_paper.json 2>&1 | tee "$out/gpu_hours.txt"

# 3. loader throughput against both consumptions
[[ $parts == *3* ]] && for p in fp32 bf16; do
  $py benchmarks/loader_speed.py --costs "$out/step_cost_$p.txt" "${loader_args[@]}" 2>&1 | tee "$out/loader_$p.txt"
done

# 4. short runs per precision, then their agreement
[[ $parts == *4* ]] || exit 0
rm -rf "$work/data" "$work/runs"
$py benchmarks/fake_vlcs.py --out "$work/data" --per_class $per_class | tee "$out/agreement.txt"
jobs_file="$work/jobs.txt"; : > "$jobs_file"
for p in fp32 bf16; do for alg in ERM ALIGN; do for s in $seeds; do
  echo "$p $alg $s" >> "$jobs_file"
done; done; done
run_one() {  # precision algorithm seed
  local hparams="{\"precision\": \"$1\", $HP"
  [ "$2" = ALIGN ] && hparams="$hparams, $HP_ALIGN"
  hparams="$hparams}"
  $PY -m domainbed_align.train --dataset VLCS --data_dir "$WORK/data" --algorithm "$2" \
    --test_envs 0 --steps "$STEPS" --checkpoint_freq "$STEPS" --seed "$3" --trial_seed "$3" \
    --skip_model_save --output_dir "$WORK/runs/$1_$2_seed$3" --hparams "$hparams" \
    > "$WORK/runs.$1_$2_$3.log" 2>&1 || echo "run $1 $2 $3 failed: see $WORK/runs.$1_$2_$3.log"
}
export -f run_one
export HP="$hp" HP_ALIGN="$hp_align" PY="$py" WORK="$work" STEPS=$steps
# 4 runs at once: the GPU has room, and the fp32/bf16 comparison is of accuracies, not times
# (the step times printed come from runs sharing the GPU and the cores)
xargs -P 4 -L 1 bash -c 'run_one "$@"' _ < "$jobs_file" | tee -a "$out/agreement.txt"
$py benchmarks/precision_agreement.py "$work/runs" 2>&1 | tee -a "$out/agreement.txt"
tail -n 3 "$work"/runs.*.log > "$out/runs_tail.txt" 2>/dev/null
