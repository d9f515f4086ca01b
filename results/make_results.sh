#!/usr/bin/env bash
# Regenerates the comparison under results/ with the project's own commands:
# ERM, DRE and ALIGN at EQUAL steps on SpuriousDigits (test domain 3), seeds 0-2 (--seed and
# --trial_seed), the default (spurious) and the clean variant; default hparams except ALIGN's
# schedule, shortened to fit the run (classifier warm-up 300, masker alone 100, l3 ramp 100).
#   bash results/make_results.sh   (estimated ~15 min on 2 idle CPU cores, 65 min on our loaded
#   shared machine; finished runs are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-out/results_runs}
steps=${STEPS:-600}
mkdir -p "$runs" results/figures
export OMP_NUM_THREADS=1

jobs=()
for variant in spurious clean; do
  spurious=$([ "$variant" = spurious ] && echo true || echo false)
  for alg in ALIGN DRE ERM; do  # the slowest first, so the two workers finish together
    extra=""
    [ "$alg" = ALIGN ] && extra=', "align_warmup_steps": 300, "align_masker_warmup_steps": 100, "align_l3_ramp_steps": 100'
    for seed in 0 1 2; do
      jobs+=("python -m domainbed_align.train --dataset SpuriousDigits --algorithm $alg --test_envs 3 \
--steps $steps --checkpoint_freq 25 --seed $seed --trial_seed $seed --output_dir $runs/${alg}_${variant}_s$seed \
--hparams '{\"digits_spurious\": $spurious, \"explain_n\": 0$extra}' > /dev/null 2>&1")
    done
  done
done
printf '%s\n' "${jobs[@]}" | xargs -d '\n' -P 2 -I{} bash -c {}

python results/summarise_runs.py compare "$runs" results/figures/switch_trace.png \
  | tee "results/spuriousdigits_${steps}_steps.txt"
for run in ERM_spurious_s0 ALIGN_spurious_s0 ALIGN_clean_s0; do
  python -m domainbed_align.explain --run_dir "$runs/$run" --env 3 --n 16 \
    --out "results/figures/${run%_s0}_env3.png"
done
