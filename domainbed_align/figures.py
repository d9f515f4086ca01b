"""Figures that need no torch: a saliency grid from the runs' explanations.npz, learning curves.

    python -m domainbed_align.figures saliency --input_dir SWEEP --out FILE [--algorithms ...]
    python -m domainbed_align.figures curves --input_dir DIR --out FILE

Sweep-level figures come with the tables: `collect_results --figures DIR` (or `--html DIR`).
A thin entry point: the figures live in `domainbed_align.report`.
"""
import sys
from typing import List, Optional

from domainbed_align.lib.cli import ArgumentError, Parser
from domainbed_align.lib.errors import ConfigError, DomainBedAlignError
from domainbed_align.report.comparisons import forest_points  # noqa: F401
from domainbed_align.report.curves import learning_curve_points, learning_curves_figure  # noqa: F401
from domainbed_align.report.draw import (draw_densities, draw_forest,  # noqa: F401
                                         draw_hparam_curves, draw_selected)
from domainbed_align.report.figures import SweepFigures, selected_points  # noqa: F401
from domainbed_align.report.grid import (DENSITY_REGIONS, density_curve_points,  # noqa: F401
                                         grid_labels, hparam_curve_points, hparam_curve_table)
from domainbed_align.report.saliency import (draw_saliency, find_explanations,  # noqa: F401
                                             load_explanations, parse_hparam_filters,
                                             saliency_figure, saliency_rows)


def build_parser() -> Parser:
    p = Parser(prog="python -m domainbed_align.figures",
               description="Figures that need no torch. Sweep-level figures: "
                           "collect_results --figures DIR.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("saliency", help="Grad-CAM grid from the runs' explanations.npz")
    s.add_argument("--input_dir", required=True, help="the sweep's output folder")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--algorithms", nargs="+", help="rows, in this order (default: all found)")
    s.add_argument("--dataset")
    s.add_argument("--test_env", type=int,
                   help="default: the test domain (and trial seed) most algorithms have, so "
                        "every row shows the same images")
    s.add_argument("--trial_seed", type=int)
    s.add_argument("--hparams_seed", type=int)
    s.add_argument("--k", type=int, default=6, help="images per row (default 6)")
    s.add_argument("--hparam", action="append", metavar="NAME=VALUE",
                   help="only runs with this hparam value, e.g. digits_cue=patch (repeatable)")
    c = sub.add_parser("curves", help="learning curves of the run folders under --input_dir")
    c.add_argument("--input_dir", required=True)
    c.add_argument("--out", required=True, help="PNG file to write")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "curves":
            n = learning_curves_figure(args.input_dir, args.out)
            print(f"wrote {args.out} ({n} runs)", file=sys.stderr)
            return 0
        if args.k < 1:
            raise ConfigError(f"--k {args.k}: pass at least 1 image per row")
        n = saliency_figure(args.input_dir, args.out, args.algorithms, args.k,
                            dataset=args.dataset, test_env=args.test_env,
                            trial_seed=args.trial_seed, hparams_seed=args.hparams_seed,
                            hparams=parse_hparam_filters(args.hparam))
    except (ArgumentError, DomainBedAlignError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({n} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
