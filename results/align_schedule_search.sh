#!/usr/bin/env bash
# The small search behind ALIGN's 28 px defaults (README, reproduction notes): one seed,
# SpuriousDigits (spurious variant), test domain 3, 600 steps, classifier warm-up 300 steps,
# records every 25 steps, no explanation metrics. Two runs at a time, one thread each.
#   bash results/align_schedule_search.sh   (~10 min on 2 idle CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-out/align_search}
mkdir -p "$runs"
export OMP_NUM_THREADS=1
common=(--dataset SpuriousDigits --test_envs 3 --steps 600 --checkpoint_freq 25)
run() {  # name algorithm extra-hparams
  python -m domainbed_align.train "${common[@]}" --algorithm "$2" --output_dir "$runs/$1" \
    --hparams "{\"explain_n\": 0${3:+, $3}}" > /dev/null 2>&1
}
align='"align_warmup_steps": 300'
run l3_1_no_schedule ALIGN "$align"', "align_l3": 1.0, "align_masker_warmup_steps": 0, "align_l3_ramp_steps": 0' &
run l3_0.1 ALIGN "$align"', "align_l3": 0.1, "align_masker_warmup_steps": 100, "align_l3_ramp_steps": 100' &
wait
run l3_0.3 ALIGN "$align"', "align_l3": 0.3, "align_masker_warmup_steps": 100, "align_l3_ramp_steps": 100' &
run l3_0.1_max ALIGN "$align"', "align_l3": 0.1, "align_masker_warmup_steps": 100, "align_l3_ramp_steps": 100, "align_target_pool": "max"' &
wait
run l3_0.1_norm ALIGN "$align"', "align_l3": 0.1, "align_masker_warmup_steps": 100, "align_l3_ramp_steps": 100, "align_target_pool": "norm"' &
run l3_1 ALIGN "$align"', "align_l3": 1.0, "align_masker_warmup_steps": 100, "align_l3_ramp_steps": 100' &
wait
# ERM with the same settings is a run of results/make_results.sh
python results/summarise_runs.py search "$runs" out/results_runs/ERM_spurious_s0 | tee results/align_schedule_search.txt
