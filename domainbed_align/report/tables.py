"""The collector's report: DomainBed tables, ID/OOD tables, explanation tables, single-source.

`Report.render()` gives the text, LaTeX or markdown document; `Report.blocks()` the same
content as a list of headings, tables and notes (what the HTML page lays out). Output order:
1. DomainBed's part, byte-identical to upstream `collect_results` in text mode;
2. ID/OOD tables per selection method;
3. explanation tables (when records carry AUC or explanation metrics), split into parts of
   at most EXPLANATION_COLUMNS metrics so each fits a page, every column with its direction;
4. single-source tables (runs with args.task == "single_source").
"""
import dataclasses
from typing import List, Optional, Sequence, Union

import numpy as np

from domainbed_align.lib.tables import Table, format_avg, format_mean, latex_escape
from domainbed_align.report.comparisons import add_comparisons
from domainbed_align.report.names import (ARROWS, METRICS, algorithm_order,
                                          dataset_order, environment_names)
from domainbed_align.report.selected import Selected, finite, mean_over, trial_means

EXPLANATION_COLUMNS = 4   # metrics per explanation table: 5 columns of 22 characters fit 120


@dataclasses.dataclass
class Heading:
    text: str
    level: int


@dataclasses.dataclass
class Note:
    text: str


@dataclasses.dataclass
class Raw:
    """Format-specific text (LaTeX preamble, markdown title) that has no place in HTML."""
    text: str


Block = Union[Heading, Note, Raw, Table]


def cells_by_env(idx, column: str, dataset: str, algorithms: List[str], env_col: str,
                 n_cols: int, fmt: str):
    """Rows [alg, cell per domain..., Avg]: mean +/- s.e. over trials per domain."""
    rows = []
    for alg in algorithms:
        recs = idx.get((dataset, alg), [])
        cells, means = [], []
        for e in range(n_cols):
            mean, _, cell = format_mean(finite(r[column] for r in recs if r[env_col] == e), fmt)
            cells.append(cell)
            means.append(mean)
        rows.append([alg, *cells, format_avg(means)])
    return rows


def column_parts(names: List[str], per_part: int) -> List[List[str]]:
    """`names` cut into consecutive parts of at most `per_part` (the last may be shorter)."""
    return [names[i:i + per_part] for i in range(0, len(names), per_part)] or [[]]


class Report(Selected):
    """The tables of a sweep in one format ("text", "latex", "markdown" or "html")."""

    def __init__(self, sweep, methods, metrics: Optional[List[str]], fmt: str,
                 compare_to: Sequence[str] = ()):
        super().__init__(sweep, methods, metrics, compare_to)
        self.fmt = fmt
        self.out: List[Block] = []

    # ---------------------------------------------------------------------- output helpers
    def emit(self, text: str):
        self.out.append(Raw(text))

    def table(self, title, columns, rows, colwidth, latex_title=None):
        self.out.append(Table(title, columns, rows, colwidth, latex_title))

    def heading(self, text: str, level: int):
        self.out.append(Heading(text, level))

    def note(self, text: str):
        self.out.append(Note(text))

    def _text(self, block: Block) -> str:
        if isinstance(block, Table):
            return block.render(self.fmt)
        if isinstance(block, Raw):
            return block.text
        if isinstance(block, Note):
            return ("\n% " if self.fmt == "latex" else "\n") + block.text + "\n"
        if self.fmt == "latex":
            cmd = {1: "section", 2: "subsection", 3: "subsubsection"}[block.level]
            return "\n\\" + cmd + "{" + latex_escape(block.text) + "}\n"
        if self.fmt == "markdown":
            return "\n" + "#" * (block.level + 1) + " " + block.text + "\n"
        return "\n" + ("=" * 8 if block.level == 1 else "=" * 4) + " " + block.text + "\n"

    # ---------------------------------------------------------------------- sections
    def domainbed(self):
        latex = self.fmt == "latex"
        if latex:
            self.emit("\\documentclass{article}\n\\usepackage{booktabs}\n"
                      "\\usepackage{adjustbox}\n\\begin{document}\n"
                      "\\section{Full DomainBed results}\n"
                      f"% Total records: {len(self.dg)}\n")
        elif self.fmt == "markdown":
            self.emit(f"# DomainBed results\n\nTotal records: {len(self.dg)}\n")
        else:
            self.emit(f"Total records: {len(self.dg)}\n")
        for method in self.methods:
            sel = self.index[method]
            if latex:
                self.emit(f"\n\\subsection{{Model selection: {method.name}}}\n")
            elif self.fmt == "markdown":
                self.emit(f"\n## Model selection: {method.name}\n")
            for ds in self.datasets:
                envs = environment_names(ds, self.n_envs[ds], self.sweep)
                rows = cells_by_env(sel, "test_acc", ds, self.algorithms, "test_env",
                                    len(envs), self.fmt)
                self.table(f"Dataset: {ds}, model selection method: {method.name}",
                           ["Algorithm", *envs, "Avg"], rows, 20, latex_title=ds)
            rows = []
            for alg in self.algorithms:
                cells, means = [], []
                for ds in self.datasets:
                    mean, _, cell = format_mean(trial_means(sel, "test_acc", ds, alg),
                                                self.fmt)
                    cells.append(cell)
                    means.append(mean)
                rows.append([alg, *cells, format_avg(means)])
            self.table(f"Averages, model selection method: {method.name}",
                       ["Algorithm", *self.datasets, "Avg"], rows, 25,
                       latex_title="Averages")

    def id_ood(self):
        if not self.datasets:
            return
        self.heading("ID/OOD accuracy of the selected models (OOD: test domain; ID: mean over "
                     "the training domains' ID test splits, or where runs have none their "
                     "validation splits, which selection maximised: optimistic)", 1)
        for method in self.methods:
            sel = self.index[method]
            for ds in self.datasets:
                envs = environment_names(ds, self.n_envs[ds], self.sweep)
                for col, what in (("ood_acc", "OOD test-domain accuracy"),
                                  ("id_acc", "ID training-domain accuracy on "
                                   + self.id_what(ds, method))):
                    rows = cells_by_env(sel, col, ds, self.algorithms, "test_env", len(envs),
                                        self.fmt)
                    self.table(f"Dataset: {ds}, model selection method: {method.name}, {what}",
                               ["Algorithm", *envs, "Avg"], rows, 20,
                               latex_title=f"{ds}, {method.name}, {what}")
            cols, rows = ["Algorithm"], []
            for ds in self.datasets:
                cols += [f"{ds} OOD", f"{ds} ID"]
            cols += ["Avg OOD", "Avg ID"]
            for alg in self.algorithms:
                cells, means = [], {"ood_acc": [], "id_acc": []}
                for ds in self.datasets:
                    for col in ("ood_acc", "id_acc"):
                        mean, _, cell = format_mean(trial_means(sel, col, ds, alg), self.fmt)
                        cells.append(cell)
                        means[col].append(mean)
                rows.append([alg, *cells, format_avg(means["ood_acc"]),
                             format_avg(means["id_acc"])])
            self.table(f"Averages, model selection method: {method.name}, ID and OOD",
                       cols, rows, 25, latex_title=f"Averages, {method.name}, ID and OOD")

    def explanations(self):
        extra = [m for m in self.metrics if m != "acc"]
        if not extra or not self.datasets:
            return
        shown = ["acc"] + extra
        self.heading("Explanations and prediction AUC of the selected models (x100, mean "
                     "+/- s.e. over trials of the mean over test domains; ↑ higher is better, "
                     "↓ lower is better, · a control; "
                     + ", ".join(f"{m}: {METRICS[m][0]}" for m in shown) + ")", 1)
        parts = column_parts(shown, EXPLANATION_COLUMNS)
        # wide enough for the longest "name ↑" header: the arrow is never cut off
        width = max(20, max(len(m) + 2 for m in shown))
        for method in self.methods:
            sel = self.index[method]
            for ds in self.datasets:
                for split, what in (("ood", "test domain"),
                                    ("id", "training domains, " + self.id_what(ds, method))):
                    for k, part in enumerate(parts):
                        label = f" (part {k + 1} of {len(parts)})" if len(parts) > 1 else ""
                        cols = ["Algorithm"] + [f"{m} {ARROWS[METRICS[m][1]]}" for m in part]
                        rows = []
                        for alg in self.algorithms:
                            cells = [format_mean(trial_means(sel, f"{split}_{m}", ds, alg),
                                                 self.fmt)[2] for m in part]
                            rows.append([alg, *cells])
                        self.table(f"Explanations: {ds}, model selection method: "
                                   f"{method.name}, {what}{label}", cols, rows, width,
                                   latex_title=f"Explanations, {ds}, {method.name}, "
                                               f"{what}{label}")

    def single_source(self):
        if len(self.ss) == 0:
            return
        self.heading(f"Single-source protocol: train on one domain, test on the others "
                     f"({len(self.ss)} records)", 1)
        algs = algorithm_order(self.ss["algorithm"].tolist())
        dsets = dataset_order(self.ss["dataset"].unique().tolist())
        for method in self.methods:
            sel = method.select_single_source(self.ckpts)
            if sel is None:
                self.note(f"model selection method {method.name}: not applicable to "
                          "single-source runs (one training domain)")
                continue
            for ds in dsets:
                self._single_source_dataset(method, sel, ds, algs)

    def _id_accs(self, recs, rows, src):
        """The source's ID test accuracy where recorded, else its validation one."""
        vals = [recs.get(ri, {}).get(f"env{src}_idtest_acc") for ri in rows]
        what = "ID: the ID test split" if vals and all(v is not None for v in vals) \
            else "ID: the selection split (optimistic)" if not any(
                v is not None for v in vals) else "ID: mixed splits"
        return finite(self.ckpts.acc_out[ri, src] if v is None else v
                      for ri, v in zip(rows, vals)), what

    def _single_source_dataset(self, method, sel, ds, algs):
        r = sel["row"].to_numpy(dtype=np.int64)
        recs = self.sweep.records_at(r) if (self.has_idtest and len(r)) else {}
        s = sel["source"].to_numpy(dtype=np.int64)
        ne = self.n_envs[ds]
        envs = environment_names(ds, ne, self.sweep)
        in_ds = sel["dataset"].to_numpy() == ds
        alg_col, trials = sel["algorithm"].to_numpy(), sel["trial_seed"].to_numpy()

        def picked(alg, src):
            """Positions of (alg, source src) in `sel`, by trial seed (ties: `sel` order)."""
            pick = np.flatnonzero(in_ds & (alg_col == alg) & (s == src))
            return pick[np.argsort(trials[pick], kind="stable")]

        acc_in = self.ckpts.acc_in
        for alg in algs:
            rows = []
            for src in range(ne):
                pick = picked(alg, src)
                cells = ["-" if tgt == src else
                         format_mean(finite(acc_in[r[pick], tgt]), self.fmt)[2]
                         for tgt in range(ne)]
                accs, what = self._id_accs(recs, r[pick], src)
                cells.append(format_mean(accs, self.fmt)[2])
                rows.append([envs[src], *cells])
            self.table(f"Single source: {ds}, {alg}, model selection method: "
                       f"{method.name} (rows: source, columns: target; {what})",
                       ["Source", *envs, "ID"], rows, 20,
                       latex_title=f"Single source, {ds}, {alg}, {method.name}")
        cols = ["Algorithm"]
        for e in envs:
            cols += [f"{e} OOD", f"{e} ID"]
        cols += ["Avg OOD", "Avg ID"]
        rows = []
        for alg in algs:
            cells, ood_means, id_means = [], [], []
            for src in range(ne):
                pick = picked(alg, src)
                ood = [mean_over(acc_in[r[i]], ne, src) for i in pick]
                mean, _, cell = format_mean(finite(ood), self.fmt)
                cells.append(cell)
                ood_means.append(mean)
                accs, what = self._id_accs(recs, r[pick], src)
                mean, _, cell = format_mean(accs, self.fmt)
                cells.append(cell)
                id_means.append(mean)
            rows.append([alg, *cells, format_avg(ood_means), format_avg(id_means)])
        self.table(f"Single source: {ds}, model selection method: {method.name}, "
                   f"mean OOD over targets and ID per source ({what})", cols, rows, 20,
                   latex_title=f"Single source, {ds}, {method.name}, compact")

    def blocks(self) -> List[Block]:
        """Every section, in the document's order (computed once)."""
        if not self.out:
            self.domainbed()
            self.id_ood()
            self.explanations()
            add_comparisons(self)
            self.single_source()
        return self.out

    def render(self) -> str:
        text = "".join(self._text(b) for b in self.blocks())
        return text + ("\\end{document}\n" if self.fmt == "latex" else "")
