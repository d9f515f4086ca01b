#!/bin/bash
# Every table, figure and sweep page of the built-in study (issue 10), regenerated from the
# committed records under results/sweeps/ (no training, no torch):
#   bash results/make_study.sh
# The records come from the project's own sweep command (sweeps/digits_*.json; see
# results/run_study.py and run_study_gpu.sh for how they were run); the learning-curve runs
# from the `train` commands in results/make_curves.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
S=results/sweeps F=results/figures T=results/tables R=results/report
# the committed screenshot survives a machine without chromium (it is retaken where there is one)
shot=$(mktemp); cp "$R/digits_main/screenshot.png" "$shot" 2>/dev/null || true
rm -rf "$T" "$R"; mkdir -p "$F" "$T" "$R"
collect() {  # collect <sweep> [collect_results flags]: tables into results/tables/<sweep>.*
  local sweep=$1; shift
  python -m domainbed_align.collect_results --input_dir "$S/$sweep" --no_write --no_cache "$@"
}
present() { [ -n "$(find "$S/$1" -name done -print -quit 2>/dev/null)" ]; }

# Learning curves (picked the step counts and ALIGN's warm-up)
python -m domainbed_align.figures curves --input_dir "$S/digits_curves" --out "$F/learning_curves.png"

# The main sweep: DomainBed tables, ID/OOD, explanation tables, single-source; figures
if present digits_main; then
  rm -rf "$F/digits_main"
  collect digits_main --figures "$F/digits_main" --html "$R/digits_main" > "$T/digits_main.txt"
  collect digits_main --markdown > "$T/digits_main.md"
  collect digits_main --latex > "$T/digits_main.tex"
fi

# Why ALIGN does what it does: cue type (with the clean control), cue strength, ALIGN's knobs
# (grid sweeps: DomainBed's selection would pick across grid points, so their tables are the
# numbers behind each figure, <metric>_vs_<hparam>.txt, one mean +/- s.e. per line and value)
grid() {  # grid <sweep> <figure folder> [collect_results flags]; the page: the sweep's own
  local sweep=$1 dir=$2; shift 2
  rm -rf "$F/$dir"
  local page=()
  [ "$sweep" = "$dir" ] && page=(--html "$R/$sweep")
  collect "$sweep" --figures "$F/$dir" "${page[@]}" "$@" > /dev/null
  cat "$F/$dir"/*_vs_*.txt > "$T/$dir.txt"
  # over_training.png does not depend on --figures_metric: keep it only in the sweep's own folder
  case " $* " in *" --figures_metric "*) rm -f "$F/$dir/over_training.png" ;; esac
}
grid digits_cue digits_cue --figures_vs digits_cue+digits_spurious
for m in cam_density_cue cam_density_strokes epg; do
  grid digits_cue "digits_cue_$m" --figures_vs digits_cue+digits_spurious --figures_metric $m
done
for cue in patch background; do
  python -m domainbed_align.figures saliency --input_dir "$S/digits_cue" --test_env 3 \
    --hparam digits_cue=$cue --hparam digits_spurious=true --out "$F/saliency_$cue.png"
done
if present digits_cue_strength; then
  grid digits_cue_strength digits_cue_strength --figures_vs cue_agreement
  grid digits_cue_strength digits_cue_strength_cam_cue --figures_vs cue_agreement \
    --figures_metric cam_density_cue
  grid digits_cue_strength digits_cue_strength_mask_cue --figures_vs cue_agreement \
    --figures_metric mask_density_cue
fi
for knob in l1 l3 warmup_steps; do
  grid "digits_align_$knob" "digits_align_$knob" --figures_vs "align_$knob"
  grid "digits_align_$knob" "digits_align_${knob}_mask_cue" --figures_vs "align_$knob" \
    --figures_metric mask_density_cue
done

# Mask quality: the mask-based methods, ALIGN as the annotation-free reference line
grid digits_mask_quality digits_mask_quality --figures_vs mask_quality
# Issue 18: the decisive sweep (paired differences with 95% intervals, ID from the ID test
# split) and its controls (each grid variant a row of its own, paired with its default)
if present digits_decisive; then
  rm -rf "$F/digits_decisive"
  collect digits_decisive --compare_to ERM DRE ALIGN --figures "$F/digits_decisive" \
    --html "$R/digits_decisive" > "$T/digits_decisive.txt"
  collect digits_decisive --compare_to ERM DRE ALIGN --markdown > "$T/digits_decisive.md"
fi
control() {  # control <sweep> <--split_by names...> -- <--compare_to references...>
  local sweep=$1; shift
  local split=() refs=()
  while [ "$1" != "--" ]; do split+=("$1"); shift; done; shift
  refs=("$@")
  present "$sweep" || return 0
  # a control still running may lack a reference variant: the collector refuses in one line,
  # and the study's other tables are still made
  if ! collect "$sweep" --selection training_domain --split_by "${split[@]}" \
      --compare_to "${refs[@]}" --html "$R/$sweep" > "$T/$sweep.txt"; then
    rm -rf "$T/$sweep.txt" "$R/$sweep"
    echo "$sweep: not enough runs yet for its comparisons (resume: results/run_study.py)" >&2
  fi
}
control digits_controls_targets res_target_rescale gradia_target_rescale -- \
  '[res_target_rescale=true]' '[gradia_target_rescale=true]'
control digits_controls_graph align_create_graph cam_create_graph -- \
  'ALIGN[align_create_graph=true]' 'ALIGN[align_create_graph=false]'
control digits_controls_align_loss align_loss align_l3 -- \
  'ALIGN[align_l3=0.1,align_loss=bce]' 'ALIGN[align_l3=0.1,align_loss=l1]'
control digits_controls_mask_quality mask_quality -- '[mask_quality=gt]'
control digits_controls_penalty_everywhere mask_quality -- '[mask_quality=gt]'

# Issue 19: the domain-aware maskers against ALIGN, one folder per (cue, agreement) cell;
# the selected models' rows (CSV) feed the mask-density figure
cells=()
for cell in patch95 patch80 background95 background80; do
  sweep=digits_beyond_align_$cell
  present "$sweep" || continue
  if collect "$sweep" --compare_to ALIGN --csv "$T/$sweep.csv" > "$T/$sweep.txt"; then
    cells+=("$T/$sweep.csv")
  else
    rm -f "$T/$sweep.txt" "$T/$sweep.csv"
    echo "$sweep: not enough runs yet for its comparisons (resume: results/run_study.py)" >&2
  fi
done
if [ ${#cells[@]} -gt 0 ]; then
  python results/beyond_align_densities.py "$F/beyond_align_mask_density.png" "${cells[@]}" \
    > "$T/digits_beyond_align_mask_density.txt"
fi
if present digits_beyond_align_patch95; then
  python -m domainbed_align.figures saliency --input_dir "$S/digits_beyond_align_patch95" \
    --test_env 3 --trial_seed 0 --hparams_seed 0 --algorithms ALIGN ALIGN_VREx ALIGN_IRM \
    --out "$F/saliency_beyond_align_patch95.png"
fi

# The learning-curve runs: their page (run list, tables, curves of the selected runs)
collect digits_curves --html "$R/digits_curves" > /dev/null
# What the main sweep's page looks like in a browser (needs chromium and chromedriver)
if [ -d "$R/digits_main" ] && command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  python tests/browser.py "$R/digits_main/index.html" "$R/digits_main/screenshot.png"
elif [ -d "$R/digits_main" ] && [ -s "$shot" ]; then
  cp "$shot" "$R/digits_main/screenshot.png"
fi
rm -f "$shot"
echo "tables in $T, figures in $F, pages in $R"
