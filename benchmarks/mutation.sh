#!/usr/bin/env bash
# Mutation score of the modules with fast tests (issue 13); not run by CI (it is slow).
#
#   pip install -e ".[test,dev]"
#   benchmarks/mutation.sh                 # every module below, one at a time
#   benchmarks/mutation.sh lib splits      # some of them
#   MUTATION_SURVIVORS_ONLY=1 benchmarks/mutation.sh lib   # re-run only the last survivors
#
# mutmut (configured in setup.cfg [mutmut]) copies the package into mutants/, runs the quick
# test files listed there once to learn which tests reach which function, then runs, for each
# mutant, only those tests. Prints killed/total per module and overall, and writes
# results/benchmarks/mutation.txt: every surviving mutant with its diff and either the reason
# it is equivalent (benchmarks/mutation_equivalent.txt) or "NOT KILLED".
set -euo pipefail -f   # -f: mutant-name patterns are not file globs
cd "$(dirname "$0")/.."
OUT=${MUTATION_OUT:-results/benchmarks/mutation.txt}
CHILDREN=${MUTATION_CHILDREN:-2}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
unset PYTHONPATH   # mutmut puts mutants/ first on the path; the original tree must not shadow it

ALL=(lib hparams_registry splits digits train model_selection collect_results metrics figures)
MODULES=("${@:-${ALL[@]}}")
command -v mutmut >/dev/null || { echo "error: mutmut is not installed; pip install -e \".[dev]\"" >&2; exit 2; }

mkdir -p mutants
[ -n "${MUTATION_KEEP_STATS:-}" ] || rm -f mutants/mutmut-stats.json  # tests may have changed
for m in "${MODULES[@]}"; do
    if [ -n "${MUTATION_SURVIVORS_ONLY:-}" ]; then   # re-check only last run's survivors
        patterns=$(python benchmarks/mutation_report.py --survivors "$m")
        [ -n "$patterns" ] || continue
    else
        patterns=$(python benchmarks/mutation_report.py --patterns "$m")
    fi
    if [ -n "${MUTATION_SURVIVORS_ONLY:-}" ]; then
        echo "== $m: mutmut run <the $(echo "$patterns" | wc -w) survivors of the last run>" >&2
    else
        echo "== $m: mutmut run $patterns" >&2
    fi
    start=$(date +%s)
    # shellcheck disable=SC2086
    mutmut run --max-children "$CHILDREN" $patterns > "mutants/$m.log" 2>&1 || {
        echo "error: mutmut failed on $m; see mutants/$m.log" >&2; tail -20 "mutants/$m.log" >&2; exit 1; }
    python benchmarks/mutation_report.py --snapshot "$m"
    echo "   $(( $(date +%s) - start )) s" >&2
done
python benchmarks/mutation_report.py --out "$OUT" "${MODULES[@]}"
