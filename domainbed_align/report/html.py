"""One self-contained page per sweep: `collect_results --input_dir SWEEP --html DIR`.

DIR/index.html with its PNGs beside it; no network, no framework, nothing from a CDN: it
opens from a file:// URL and behind a cluster's file server. It shows, from records alone
(no torch): the run list with each job's state (failing runs first, with their last error
line), every table of the text report (same cells), the sweep figures, a saliency grid per
dataset from the runs' explanations.npz, and learning curves of the selected runs. Tables
sort on a click on a column header (a few lines of plain JavaScript).
"""
import html
import os
import re
from collections import Counter
from typing import List, Optional, Sequence, Tuple

from domainbed_align.lib.errors import DataError
from domainbed_align.lib.misc import atomic_open
from domainbed_align.lib.tables import Table
from domainbed_align.model_selection import IIDAccuracySelectionMethod
from domainbed_align.report.curves import draw_selected_curves, selected_curves
from domainbed_align.report.draw import save_figure
from domainbed_align.report.runs import DONE, FAILED, INCOMPLETE, RunState, run_states
from domainbed_align.report.saliency import saliency_figure
from domainbed_align.report.tables import Heading, Note, Raw

PAGE = "index.html"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #1f2328; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.05em; } h4 { font-size: .95em; margin: 1.2em 0 .3em; }
nav a { margin-right: 1em; }
.scroll { overflow-x: auto; }
.tbl { display: inline-block; vertical-align: top; margin-right: 2em; max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: .5em; }
th, td { border: 1px solid #d0d7de; padding: 2px 8px; white-space: nowrap; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f8fa; cursor: pointer; }
tr.failed td { background: #ffebe9; } tr.incomplete td { background: #fff8c5; }
.state-failed { color: #cf222e; font-weight: bold; }
.note { color: #57606a; } .warn { color: #9a6700; }
img { max-width: 100%; border: 1px solid #d0d7de; margin: .3em 0 1em; }
"""

# Click a header: sort the body rows by that column, numbers as numbers, again to reverse.
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.dataset.dir = th.dataset.dir === "asc" ? "desc" : "asc";
    function key(row) {
      var t = row.cells[col].textContent.trim(), v = parseFloat(t);
      return isNaN(v) ? [1, t] : [0, v];
    }
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      var c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
      return dir === "asc" ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def file_name(prefix: str, name: str) -> str:
    """A PNG name for a dataset: only characters safe in a URL and on every file system."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"


def table_html(table: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>\n"
                   for row in table.rows)
    return (f'<div class="tbl"><h4>{esc(table.title)}</h4>\n<div class="scroll"><table '
            f'class="sortable" data-title="{esc(table.title)}"><thead><tr>{head}</tr></thead>\n'
            f"<tbody>{rows}</tbody></table></div></div>\n")


def blocks_html(blocks) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Table):
            out.append(table_html(b))
        elif isinstance(b, Heading):
            out.append(f"<h3>{esc(b.text)}</h3>\n")
        elif isinstance(b, Note):
            out.append(f'<p class="note">{esc(b.text)}</p>\n')
        elif isinstance(b, Raw) and b.text.startswith("Total records:"):
            out.append(f"<p>{esc(b.text.strip())}</p>\n")
    return "".join(out)


def runs_html(runs: Sequence[RunState]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("Run folder", "State", "Algorithm", "Dataset",
                                             "Test domains", "Trial seed", "Hparams seed",
                                             "Last step", "Last error line / note"))
    rows = []
    for r in runs:
        cells = [r.name, r.state, r.algorithm, r.dataset, r.test_envs,
                 "" if r.trial_seed is None else r.trial_seed,
                 "" if r.hparams_seed is None else r.hparams_seed,
                 "" if r.last_step is None else r.last_step, r.detail]
        tds = "".join(f'<td class="state-{r.state}">{esc(c)}</td>' if k == 1 else
                      f"<td>{esc(c)}</td>" for k, c in enumerate(cells))
        rows.append(f'<tr class="{r.state}">{tds}</tr>\n')
    return (f'<div class="scroll"><table class="sortable runs"><thead><tr>{head}</tr></thead>'
            f'\n<tbody>{"".join(rows)}</tbody></table></div>\n')


def images_html(images: Sequence[Tuple[str, str]]) -> str:
    return "".join(f'<figure><img src="{esc(name)}" alt="{esc(alt)}"><figcaption>'
                   f"{esc(alt)}</figcaption></figure>\n" for name, alt in images)


def draw_images(out_dir: str, input_dir: str, report, figures,
                notes: List[str]) -> Tuple[list, list, list, list]:
    """Write every file of the page; returns (figures, the text files of grid figures,
    saliency grids, learning curves), images as [(file name, caption)]. What cannot be drawn
    becomes a note on the page."""
    made, tables = [], []
    for path in figures.write(out_dir) if figures is not None else []:
        name = os.path.basename(path)
        if name.endswith(".png"):
            made.append((name, name[:-4].replace("_", " ")))
        else:   # the numbers behind a grid figure: linked under the figures
            tables.append(name)
    saliency, curves = [], []
    for ds in report.datasets:
        name = file_name("saliency", ds)
        try:
            saliency_figure(input_dir, os.path.join(out_dir, name), dataset=ds)
            saliency.append((name, f"{ds}: Grad-CAM of one run per algorithm on the same "
                                   "test-domain images (hparams_seed 0 first; in a grid sweep, "
                                   "whichever variant comes first: figures saliency --hparam "
                                   "NAME=VALUE picks one)"))
        except DataError:
            notes.append(f"{ds}: no run has explanations.npz: no saliency grid")
    method = next((m for m in report.methods if m is IIDAccuracySelectionMethod),
                  report.methods[0] if report.methods else None)
    for ds in report.datasets if method is not None else []:
        data = selected_curves(report, method, ds)
        if data:
            name = file_name("curves", ds)
            save_figure(draw_selected_curves(data, ds, report.n_envs[ds], method.name),
                        os.path.join(out_dir, name))
            curves.append((name, f"{ds}: learning curves of the runs selected by "
                                 f"{method.name}"))
    return made, tables, saliency, curves


def write_page(out_dir: str, sweep, report, figures=None, extra_blocks=(),
               command: Optional[str] = None) -> str:
    """Write DIR/index.html and its images; returns the page's path.

    `report`: a `tables.Report` in the "html" format; `figures`: a `figures.SweepFigures` or
    None; `extra_blocks`: more headings/tables (paired comparisons) after the report's."""
    os.makedirs(out_dir, exist_ok=True)
    notes: List[str] = []
    made, tables, saliency, curves = draw_images(out_dir, sweep.input_dir, report, figures,
                                                 notes)
    runs = run_states(sweep.input_dir)
    count = Counter(r.state for r in runs)
    failed = [r for r in runs if r.state == FAILED]
    name = os.path.basename(os.path.normpath(sweep.input_dir))
    sections = [("runs", "Runs"), ("tables", "Tables"), ("figures", "Figures"),
                ("saliency", "Saliency"), ("curves", "Learning curves"),
                ("all-runs", "Run list")]
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<link rel="icon" href="data:,">',
        f"<title>Sweep {esc(name)}</title><style>{STYLE}</style></head><body>\n",
        f"<h1>Sweep {esc(name)}</h1>\n",
        "<nav>" + "".join(f'<a href="#{k}">{v}</a>' for k, v in sections) + "</nav>\n",
        f'<p class="note">{esc(sweep.input_dir)}'
        + (f"; made by <code>{esc(command)}</code>" if command else "") + "</p>\n",
        '<h2 id="runs">Runs</h2>\n',
        f"<p>{len(runs)} run folders: <b>{count[DONE]}</b> done, <b>{count[INCOMPLETE]}"
        f"</b> incomplete, <b class=\"state-failed\">{count[FAILED]}</b> failed.</p>\n",
    ]
    parts += [f'<p class="warn">{esc(w)}</p>\n' for w in sweep.warnings()]
    if failed:
        parts += ["<h3>Failing runs</h3>\n", runs_html(failed)]
    parts += ['<h2 id="tables">Tables</h2>\n', blocks_html(report.blocks()),
              blocks_html(extra_blocks)]
    parts += ['<h2 id="figures">Figures</h2>\n',
              images_html(made) or '<p class="note">no figure</p>\n',
              "".join(f'<p><a href="{esc(t)}">{esc(t)}</a>: the numbers behind '
                      f"{esc(t[:-4])}.png</p>\n" for t in tables),
              '<h2 id="saliency">Saliency</h2>\n', images_html(saliency),
              '<h2 id="curves">Learning curves</h2>\n', images_html(curves)]
    parts += [f'<p class="note">{esc(n)}</p>\n' for n in notes + getattr(figures, "notes", [])]
    parts += ['<h2 id="all-runs">Run list</h2>\n', runs_html(runs),
              f"<script>{SCRIPT}</script>\n</body></html>\n"]
    path = os.path.join(out_dir, PAGE)
    with atomic_open(path, "wb") as f:
        f.write("".join(parts).encode("utf-8"))
    readable([path] + [os.path.join(out_dir, n) for n in os.listdir(out_dir)
                       if n.endswith((".png", ".txt"))])
    return path


def readable(paths: Sequence[str]) -> None:
    """Give the files the mode a new file gets (atomic writes make them owner-only), so a
    cluster's web server can serve the page."""
    umask = os.umask(0o022)
    os.umask(umask)
    for p in paths:
        os.chmod(p, 0o666 & ~umask)
