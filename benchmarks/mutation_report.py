"""Summarise mutmut's results per module (benchmarks/mutation.sh).

    python benchmarks/mutation_report.py --patterns MODULE     # the mutant names of a module
    python benchmarks/mutation_report.py [--out FILE] [MODULE...]

A mutant counts as killed when a test failed or timed out on it. Survivors are listed with
their diff and, when benchmarks/mutation_equivalent.txt names them, the reason they are
equivalent (no test can tell them from the original); otherwise "NOT KILLED".
"""
import argparse
import fnmatch
import glob
import json
import os
import sys

# Module -> mutant-name patterns (mutmut names: package.module.x_function__mutmut_N and
# package.module.xǁClassǁmethod__mutmut_N).
MODULES = {
    "lib": ["domainbed_align.lib.*"],
    "hparams_registry": ["domainbed_align.hparams_registry.*"],
    "splits": ["domainbed_align.datasets.splits.*"],
    "digits": ["domainbed_align.datasets.digits.*"],
    # the trainer's pure helpers (the training loop itself is covered by the slow tests; its
    # RNG-state, tee and one_line helpers are in lib/ now, so under "lib")
    "train": ["domainbed_align.train.x__parse_hparams_json__*", "domainbed_align.train.x__mem_gb__*",
              "domainbed_align.train.x_parse_args__*", "domainbed_align.train.x_build_parser__*",
              "domainbed_align.train.xǁTrainConfigǁrecord_args__*",
              "domainbed_align.train.xǁTrainerǁ_identity__*",
              "domainbed_align.train.xǁTrainerǁ_save_checkpoint__*",
              "domainbed_align.train.xǁTrainerǁ_load_checkpoint__*",
              "domainbed_align.train.xǁTrainerǁ_write_records__*",
              "domainbed_align.train.xǁTrainerǁ_evaluate__*",
              "domainbed_align.train.xǁTrainerǁrequest_stop__*"],
    "model_selection": ["domainbed_align.model_selection.*"],
    "collect_results": ["domainbed_align.collect_results.*", "domainbed_align.report.names.*",
                        "domainbed_align.report.records.*", "domainbed_align.report.selected.*",
                        "domainbed_align.report.tables.*",
                        "domainbed_align.report.comparisons.*"],
    "metrics": ["domainbed_align.explain.metrics.*"],
    "figures": ["domainbed_align.figures.*", "domainbed_align.report.grid.*",
                "domainbed_align.report.figures.*", "domainbed_align.report.saliency.*",
                "domainbed_align.report.curves.*", "domainbed_align.report.runs.*"],
}
KILLED = {1, 3, 36, 24, -24, 152, 255}   # test failure, pytest internal error, timeouts
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}
EQUIVALENT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mutation_equivalent.txt")


SNAPSHOTS = "mutants/snapshots"


def load_meta():
    out = {}
    for path in glob.glob("mutants/domainbed_align/**/*.meta", recursive=True):
        with open(path) as f:
            out.update(json.load(f)["exit_code_by_key"])
    return out


def module_names(results, module):
    return sorted(n for n in results if any(fnmatch.fnmatchcase(n, p) for p in MODULES[module]))


def snapshot(module):
    """Keep a module's results right after its run: a later run whose test selection changed
    resets mutmut's stored results of every module. A run of only the survivors
    (MUTATION_SURVIVORS_ONLY) updates those entries and keeps the others."""
    results = load_meta()
    path = os.path.join(SNAPSHOTS, module + ".json")
    old = {}
    if os.environ.get("MUTATION_SURVIVORS_ONLY") and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    new = {n: results[n] for n in module_names(results, module)}
    if old:
        new = {n: (new.get(n) if old[n] not in KILLED and new.get(n) is not None else old[n])
               for n in old}
    os.makedirs(SNAPSHOTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(new, f, indent=0)


def load_results(module):
    path = os.path.join(SNAPSHOTS, module + ".json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    results = load_meta()
    return {n: results[n] for n in module_names(results, module)}


def load_equivalent():
    """name -> reason; lines 'NAME  reason', '#' comments."""
    reasons = {}
    if os.path.exists(EQUIVALENT_FILE):
        with open(EQUIVALENT_FILE, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    name, _, reason = line.partition(" ")
                    reasons[name] = reason.strip()
    return reasons


def diff(name):
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        lines = get_diff_for_mutant(name).splitlines()
        return "\n".join("      " + x for x in lines[2:] if x[:1] in "+-")
    except Exception as e:  # noqa: BLE001 - a report line, not a failure
        return f"      (no diff: {e})"


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--patterns")
    p.add_argument("--snapshot")
    p.add_argument("--survivors", help="print the surviving mutants of a module's snapshot")
    p.add_argument("--out")
    p.add_argument("modules", nargs="*")
    a = p.parse_args(argv)
    if a.patterns:
        print(" ".join(MODULES[a.patterns]))
        return 0
    if a.survivors:
        print(" ".join(n for n, code in sorted(load_results(a.survivors).items())
                       if code not in KILLED))
        return 0
    if a.snapshot:
        snapshot(a.snapshot)
        return 0
    reasons = load_equivalent()
    lines, tot_k, tot_n, tot_e = [], 0, 0, 0
    body = []
    for m in a.modules or list(MODULES):
        results = load_results(m)
        names = [n for n in sorted(results) if results[n] is not None]
        killed = [n for n in names if results[n] in KILLED]
        survivors = [n for n in names if results[n] not in KILLED]
        equiv = [n for n in survivors if n in reasons]
        tot_k, tot_n, tot_e = tot_k + len(killed), tot_n + len(names), tot_e + len(equiv)
        score = 100.0 * len(killed) / len(names) if names else float("nan")
        lines.append(f"{m:<17} killed {len(killed):>5} / {len(names):>5}  ({score:5.1f}%)   "
                     f"survivors: {len(equiv)} equivalent, {len(survivors) - len(equiv)} not killed")
        for n in survivors:
            why = reasons.get(n)
            status = STATUS.get(results[n], f"exit {results[n]}")
            body.append(f"{n}  [{status}]  " + (f"EQUIVALENT: {why}" if why else "NOT KILLED"))
            body.append(diff(n))
    score = 100.0 * tot_k / tot_n if tot_n else float("nan")
    lines.append(f"{'overall':<17} killed {tot_k:>5} / {tot_n:>5}  ({score:5.1f}%)   "
                 f"survivors: {tot_e} equivalent, {tot_n - tot_k - tot_e} not killed")
    summary = "\n".join(lines)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("# benchmarks/mutation.sh " + " ".join(a.modules or list(MODULES)) + "\n")
            f.write(summary + "\n\n# Surviving mutants\n" + "\n".join(body) + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
