"""Paired comparisons to reference algorithms (`collect_results --compare_to ALG ...`).

Runs with the same trial seed share their data splits, so two algorithms' selected models on
the same trial seed and test domain form a pair; per selection method and dataset, every other
algorithm's mean difference over pairs with its 95% Student-t interval (`lib.paired`), and the
runs without a partner named, never mixed in. Tables go into the report; `forest_points` feeds
the forest plot of the figures.
"""
from typing import Dict, List, Sequence

from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.paired import format_difference, pair_up, paired_difference
from domainbed_align.report.names import ARROWS, METRICS, base_algorithm
from domainbed_align.report.selected import num

EXPLANATION_ALGORITHMS = 4   # algorithms per table of explanation-metric differences


def comparison_rows(idx, dataset: str, algorithms: List[str], reference: str):
    """[(reference label, algorithms compared to it)]. A plain name is one reference for every
    other algorithm; `[k=v]` (a `--split_by` value) is, for each algorithm with a variant
    carrying k=v, that variant as the reference of the algorithm's other variants."""
    present = [a for a in algorithms if (dataset, a) in idx]
    if not reference.startswith("["):
        if reference not in present:
            return []
        return [(reference, [a for a in present if a != reference])]
    want = set(reference.strip("[]").split(","))
    out = []
    for base in dict.fromkeys(base_algorithm(a) for a in present):
        variants = [a for a in present if base_algorithm(a) == base]
        refs = [a for a in variants
                if want <= set(a[len(base):].strip("[]").split(","))]
        if len(refs) == 1:
            out.append((refs[0], [a for a in variants if a != refs[0]]))
    return out


def compare_column(idx, dataset: str, alg: str, reference: str, column: str):
    """(PairedDifference or None, keys only alg has, keys only the reference has) of `column`
    between two algorithms' selected rows, paired by (trial seed, test domain)."""
    def by_pair(a):
        return {(r["trial_seed"], r["test_env"]): num(r.get(column))
                for r in idx.get((dataset, a), [])}
    diffs, only_alg, only_ref = pair_up(by_pair(alg), by_pair(reference))
    return paired_difference(diffs), only_alg, only_ref


def check_references(compare_to: Sequence[str], algorithms: Sequence[str]) -> None:
    """One line for a --compare_to name that names no algorithm (or variant) of the sweep."""
    for ref in compare_to:
        if ref.startswith("["):
            want = set(ref.strip("[]").split(","))
            if any(want <= set(a[len(base_algorithm(a)):].strip("[]").split(","))
                   for a in algorithms if "[" in a):
                continue
        elif ref in algorithms:
            continue
        raise ConfigError(f"--compare_to {ref!r} is not an algorithm of this sweep; known: "
                          + ", ".join(algorithms) + " (or a variant value [name=value] with "
                          "--split_by)")


def _unpaired_notes(report, method, ds, alg, ref_label, ood):
    for what, keys in (("no partner in " + ref_label, ood[1]), ("no partner in " + alg, ood[2])):
        if keys:
            report.note(f"unpaired, left out: {alg} vs {ref_label} ({method.name}, {ds}): "
                        f"{len(keys)} run(s) with {what}: "
                        + ", ".join(f"trial {t} test env {e}" for t, e in keys[:5])
                        + (" ..." if len(keys) > 5 else ""))


def _explanation_tables(report, sel, method, ds, ref_label, rows, title, shown):
    for split, where in (("ood", "test domain"), ("id", "training domains")):
        for chunk in range(0, len(rows), EXPLANATION_ALGORITHMS):
            algs = rows[chunk:chunk + EXPLANATION_ALGORITHMS]
            table_rows = [[f"{m} {ARROWS[METRICS[m][1]]}"] + [
                format_difference(compare_column(sel, ds, a, ref_label, f"{split}_{m}")[0])
                for a in algs] for m in shown]
            table_rows = [r for r in table_rows if set(r[1:]) != {"X"}]
            if table_rows:
                report.table(f"Paired differences to {ref_label} in explanation metrics, "
                             f"{where}: {title}", ["Metric", *algs], table_rows,
                             max([22] + [len(a) + 1 for a in algs]),
                             latex_title=f"Paired explanation differences to {ref_label}, "
                                         f"{where}, {ds}, {method.name}")


def add_comparisons(report) -> None:
    """The paired-difference section of a `tables.Report` (nothing without --compare_to)."""
    if not report.compare_to or not report.datasets:
        return
    shown = [m for m in report.metrics if m != "acc"]
    report.heading("Paired differences to " + ", ".join(report.compare_to) + " (x100; algorithm "
                   "minus reference over pairs of runs with the same trial seed and test "
                   "domain; [95% interval, Student t]; an interval that covers 0 is no "
                   "measurable difference)", 1)
    for method in report.methods:
        sel = report.index[method]
        for ds in report.datasets:
            for ref in report.compare_to:
                for ref_label, rows in comparison_rows(sel, ds, report.algorithms, ref):
                    title = f"{ds}, model selection method: {method.name}"
                    cells = []
                    for alg in rows:
                        ood = compare_column(sel, ds, alg, ref_label, "ood_acc")
                        idd = compare_column(sel, ds, alg, ref_label, "id_acc")
                        cells.append([alg, format_difference(ood[0]), format_difference(idd[0]),
                                      str(ood[0].n if ood[0] else 0)])
                        _unpaired_notes(report, method, ds, alg, ref_label, ood)
                    report.table(f"Paired differences to {ref_label}: {title} (ID: "
                                 f"{report.id_what(ds, method)})",
                                 ["Algorithm", "OOD acc", "ID acc", "pairs"], cells,
                                 max([22] + [len(a) + 1 for a in rows]),
                                 latex_title=f"Paired differences to {ref_label}, {ds}, "
                                             f"{method.name}")
                    if shown:
                        _explanation_tables(report, sel, method, ds, ref_label, rows, title,
                                            shown)


def forest_points(report, reference: str) -> Dict[str, list]:
    """{panel title: [(row label, PairedDifference)]} for one `--compare_to` reference: OOD and
    ID accuracy of every other algorithm minus the reference, under the report's first method
    (training-domain validation)."""
    idx = report.index[report.methods[0]]
    panels = {}
    for col, what in (("ood_acc", "OOD accuracy"), ("id_acc", "ID accuracy")):
        rows = []
        for ds in report.datasets:
            for ref, algs in comparison_rows(idx, ds, report.algorithms, reference):
                for alg in algs:
                    diff = compare_column(idx, ds, alg, ref, col)[0]
                    if diff is not None:
                        label = alg if len(report.datasets) == 1 else f"{ds}: {alg}"
                        rows.append((label if reference == ref else f"{label} - {ref}", diff))
        panels[f"{what} (x100)"] = rows
    return panels if any(panels.values()) else {}
