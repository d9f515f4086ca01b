#!/usr/bin/env bash
# Regenerates everything under results/ with the project's own commands (CPU, ~4 minutes).
#   bash results/make_results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-out/results_runs}
mkdir -p "$runs" results/figures

# Issue "core harness" / "explanations": 300-step ERM on the built-in benchmark, domain 3 held out.
python -m domainbed_align.train --dataset SpuriousDigits --algorithm ERM --test_envs 3 --steps 300 \
  --output_dir "$runs/erm_spurious"
python -m domainbed_align.explain --run_dir "$runs/erm_spurious" --env 3 --n 16 \
  --out results/figures/erm_spuriousdigits_env3.png

# ALIGN on the variant without the spurious cue (the masker must find the strokes) and on the
# default variant.
for variant in clean spurious; do
  spurious=$([ "$variant" = spurious ] && echo true || echo false)
  python -m domainbed_align.train --dataset SpuriousDigits --algorithm ALIGN --test_envs 3 --steps 300 \
    --hparams "{\"digits_spurious\": $spurious, \"align_warmup_steps\": 100}" --output_dir "$runs/align_$variant"
  python -m domainbed_align.explain --run_dir "$runs/align_$variant" --env 3 --n 16 \
    --out "results/figures/align_spuriousdigits_${variant}_env3.png"
done
python - "$runs" <<'PY' | tee results/spuriousdigits_300_steps.txt
import json, sys
from domainbed_align.datasets.digits import make_spurious_digits
share = {v: float(sum(gt.mean() for _, _, gt, _ in make_spurious_digits(v == "spurious")) / 4)
         for v in ("clean", "spurious")}
print("300 steps on SpuriousDigits, test domain 3 (gradient), default hparams unless noted")
print(f"{'run':<16}{'out acc env0-2':<24}{'env3 acc':>9}{'env3 epg':>9}{'mask epg/strokes env0-3':>28}")
for name in ("erm_spurious", "align_clean", "align_spurious"):
    r = [json.loads(line) for line in open(f"{sys.argv[1]}/{name}/results.jsonl")][-1]
    accs = " ".join(f"{r[f'env{i}_out_acc']:.3f}" for i in range(3))
    ratio = " ".join(f"{r[f'env{i}_out_mask_epg'] / share[name.split('_')[-1]]:.2f}"
                     for i in range(4)) if "env0_out_mask_epg" in r else "-"
    print(f"{name:<16}{accs:<24}{r['env3_in_acc']:>9.3f}{r['env3_in_epg']:>9.3f}{ratio:>28}")
PY
