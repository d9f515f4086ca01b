"""Turn a sweep folder into DomainBed tables, ID/OOD tables and explanation tables.

    python -m domainbed_align.collect_results --input_dir SWEEP [--latex | --markdown]
        [--csv FILE] [--selection NAMES] [--metrics NAMES] [--include_incomplete]
        [--figures DIR [--figures_vs HPARAM ...] [--figures_metric NAME]] [--html DIR]

Output, in this order:
1. DomainBed's part, byte-identical to upstream `collect_results` in text mode: "Total records",
   then per selection method one table per dataset and an averages table.
2. ID/OOD tables per selection method: per dataset the OOD table (test-domain accuracy of the
   selected model) and the ID table (its mean accuracy on the training domains' held-out
   splits), then an averages table with both.
3. Explanation tables (only when records carry AUC or explanation metrics): per selection
   method and dataset, on the test domain and on the training domains' held-out splits,
   at most four metrics per table, each column with an arrow for its direction.
4. Single-source tables (only for runs with args.task == "single_source").
Text mode tees stdout into <input_dir>/results.txt (DomainBed); --latex writes results.tex,
--markdown results.md. Warnings go to stderr. --figures DIR also writes PNG figures of the same
selection; --html DIR a self-contained page with every table, figure, saliency grid, learning
curve and the run list (matplotlib is imported only for these).

A thin entry point over `domainbed_align.report`. Never imports torch: it runs on a login node.
"""
import argparse
import os
import shlex
import sys
import time
from typing import List, Optional

from domainbed_align.lib.cli import ArgumentError, Parser
from domainbed_align.lib.errors import ConfigError, DomainBedAlignError
from domainbed_align.lib.records import parse_line, read_run  # noqa: F401  (public names)
from domainbed_align.model_selection import get_selection_methods
from domainbed_align.report.cache import cached_report, report_key, save_report
from domainbed_align.report.comparisons import (check_references, compare_column,  # noqa: F401
                                                comparison_rows)
from domainbed_align.report.names import (METRICS, UPSTREAM_DATASET_ENVIRONMENTS,  # noqa: F401
                                          algorithm_order, dataset_order, environment_names,
                                          parse_metrics)
from domainbed_align.report.records import Sweep
from domainbed_align.report.selected import index_selection  # noqa: F401
from domainbed_align.report.tables import Report


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m domainbed_align.collect_results",
        description="DomainBed tables, ID/OOD tables and explanation tables of a sweep folder.")
    p.add_argument("--input_dir", required=True, help="the sweep's output folder")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--latex", action="store_true", help="LaTeX document -> results.tex")
    fmt.add_argument("--markdown", action="store_true", help="markdown -> results.md")
    p.add_argument("--csv", help="also write the selected models, one row each, to this file")
    p.add_argument("--selection", nargs="+",
                   help="selection methods (training_domain|iid, leave_one_out|loo, oracle); "
                        "default all three")
    p.add_argument("--metrics", nargs="+",
                   help="metrics of the explanation tables (default: all recorded): "
                        + ", ".join(METRICS))
    p.add_argument("--include_incomplete", action="store_true",
                   help="also use runs without a 'done' file")
    p.add_argument("--compare_to", nargs="+", metavar="ALG", default=[],
                   help="also print paired differences to these algorithms (same trial seed "
                        "and test domain) with 95%% Student-t intervals; [name=value] compares "
                        "each algorithm's --split_by variants to its variant with that value")
    p.add_argument("--split_by", nargs="+", metavar="HPARAM", default=[],
                   help="treat the values a grid sweep sets for these hparams as algorithms of "
                        "their own, e.g. RES[res_target_rescale=false]")
    p.add_argument("--workers", type=int, default=None,
                   help="processes reading results.jsonl files (default: CPU count, max 8)")
    p.add_argument("--no_cache", action="store_true",
                   help="parse every results.jsonl again; do not read or write "
                        "<input_dir>/_collect_cache.npz")
    p.add_argument("--no_write", action="store_true",
                   help="print only; do not write results.txt/.tex/.md (nor update the cache) "
                        "into input_dir")
    p.add_argument("--figures", metavar="DIR",
                   help="also write PNG figures into DIR: ood_vs_id.png, comp_vs_suff.png "
                        "(training-domain validation selection), over_training.png (when "
                        "records carry learned-mask densities), <metric>_vs_<hparam>.png")
    p.add_argument("--figures_vs", nargs="+", metavar="HPARAM", default=[],
                   help="with --figures: for grid sweeps (hparams_seed 0), the test-domain "
                        "metric of each run's last record against this hparam, one line per "
                        "algorithm")
    p.add_argument("--html", metavar="DIR",
                   help="also write a self-contained page DIR/index.html (images beside it): "
                        "run list with states, every table, figures, saliency grids, learning "
                        "curves")
    p.add_argument("--figures_metric", default="acc", metavar="NAME",
                   help="metric of the --figures_vs figures (default acc): " + ", ".join(METRICS))
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        methods = get_selection_methods(args.selection)
        metrics = parse_metrics(args.metrics)
        if metrics is not None and "acc" not in metrics:
            metrics = ["acc"] + metrics
        if (args.figures_vs or args.figures_metric != "acc") and not (args.figures or
                                                                       args.html):
            raise ConfigError("--figures_vs and --figures_metric need --figures DIR or --html "
                              "DIR (the folder the figures go to)")
        parse_metrics([args.figures_metric])
        t0 = time.perf_counter()
        sweep = Sweep(args.input_dir, args.include_incomplete, args.workers,
                      use_cache=not args.no_cache, write_cache=not args.no_write)
        sweep.split_by(args.split_by)
        if args.compare_to:
            check_references(args.compare_to,
                             algorithm_order(sweep.ckpts.meta["algorithm"].tolist()))
        figures = None
        if args.figures or args.html:  # gathered before any output: a bad flag is one line
            from domainbed_align.report.figures import SweepFigures
            figures = SweepFigures(
                sweep, Report(sweep, get_selection_methods(["training_domain"]), None, "text",
                              args.compare_to),
                args.figures_vs, args.figures_metric)
    except (ArgumentError, DomainBedAlignError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fmt = "latex" if args.latex else "markdown" if args.markdown else "text"
    for w in sweep.warnings():
        print(w, file=sys.stderr)
    # an unchanged sweep asked the same question: the last answer, without selection or layout
    key = report_key(sweep.ckpts_key, fmt, [m.key for m in methods], metrics,
                     args.include_incomplete, sweep.warnings(), args.compare_to, args.split_by)
    text = None if (args.no_cache or args.csv) else cached_report(args.input_dir, key)
    if text is None:
        report = Report(sweep, methods, metrics, fmt, args.compare_to)
        text = report.render()
        if not args.no_cache and not args.no_write:
            save_report(args.input_dir, key, text)
    sys.stdout.write(text)
    sys.stdout.flush()
    if len(sweep.ckpts) == 0:
        print(f"nothing to report: no usable records in {args.input_dir}", file=sys.stderr)
    if not args.no_write:
        name = {"text": "results.txt", "latex": "results.tex", "markdown": "results.md"}[fmt]
        try:
            from domainbed_align.lib.misc import atomic_write_text
            atomic_write_text(os.path.join(args.input_dir, name), text)
        except OSError as e:
            print(f"warning: could not write {name} into {args.input_dir}: {e}",
                  file=sys.stderr)
    if args.csv:
        report.csv_frame().to_csv(args.csv, index=False)
    if args.figures:
        try:
            paths = figures.write(args.figures)
        except OSError as e:
            print(f"error: could not write figures into {args.figures}: {e}", file=sys.stderr)
            return 2
        print(f"wrote {len(paths)} figure(s) into {args.figures}: "
              + ", ".join(os.path.basename(p) for p in paths), file=sys.stderr)
    if args.html:
        t_page = time.perf_counter()
        from domainbed_align.report.html import write_page
        try:
            page = write_page(args.html, sweep,
                              Report(sweep, methods, metrics, "html", args.compare_to), figures,
                              command=shlex.join(["collect_results", *(
                                  sys.argv[1:] if argv is None else argv)]))
        except OSError as e:
            print(f"error: could not write the page into {args.html}: {e}", file=sys.stderr)
            return 2
        print(f"wrote {page} in {time.perf_counter() - t_page:.2f} s", file=sys.stderr)
    print(f"collected {len(sweep.ckpts)} records from {len(sweep.run_names)} runs in "
          f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
