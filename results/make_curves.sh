#!/bin/bash
# The learning-curve runs behind results/figures/learning_curves.png (SpuriousDigits, domain 3
# held out, one seed each; records every 100 steps). ~25 min on a 2-core CPU.
#   bash results/make_curves.sh && bash results/make_study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/sweeps/digits_curves
run() {  # run <name> <algorithm> <steps> <hparams json>
  python -m domainbed_align.train --dataset SpuriousDigits --algorithm "$2" --test_envs 3 \
    --steps "$3" --checkpoint_freq 100 --hparams "$4" --output_dir "$out/$1" --skip_model_save
}
run ERM ERM 2001 '{"explain_n": 64}'                      # batch 64: the explanatory sweeps
run GRADIA GRADIA 2001 '{"explain_n": 64}'
run ALIGN ALIGN 2001 '{"explain_n": 64}'                  # the 28 px default schedule 1000/200/200
run ERM_batch16 ERM 1201 '{"explain_n": 32, "batch_size": 16}'   # the main sweep's batch
