"""Issue 19's mask-density figure: where the selected models' learned masks put their mass on
the held-out domain (density = mass share / area share, 1 = uniform), on the cue and on the
strokes, against the training agreement, one panel per cue, one colour per masker objective.

    python results/beyond_align_densities.py OUT.png CELL.csv [CELL.csv ...]

Each CSV is what `collect_results --csv FILE --selection training_domain` writes for one
sweep folder `digits_beyond_align_<cue><agreement>` (the selected model of each trial, one
row each); the cell's cue and agreement are read from the folder's name, which the sweep file
fixes. Prints the numbers behind the figure (mean +/- s.e. over trials) and writes OUT.png.
"""
import os
import re
import sys

import pandas as pd

from domainbed_align.lib.paired import paired_difference
from domainbed_align.report.draw import FONT_PT, figure, palette, save_figure
from domainbed_align.report.selected import mean_se

CELL = re.compile(r"digits_beyond_align_(patch|background)(\d+)\.csv$")
REGIONS = (("cue", "-", "o"), ("strokes", "--", "s"))


def read_cells(paths):
    frames = []
    for path in paths:
        m = CELL.search(os.path.basename(path))
        if not m:
            sys.exit(f"error: {path}: expected digits_beyond_align_<patch|background><NN>.csv")
        f = pd.read_csv(path)
        f = f[f["selection"] == "training_domain"].assign(cue=m.group(1),
                                                          agreement=int(m.group(2)) / 100)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def density_points(cells: pd.DataFrame):
    """{(cue, algorithm, region): [(agreement, mean, se, n)]} of ood_mask_density_<region>."""
    out = {}
    for (cue, alg, a), g in cells.groupby(["cue", "algorithm", "agreement"]):
        for region, _, _ in REGIONS:
            mean, se, n = mean_se(g[f"ood_mask_density_{region}"].dropna().tolist())
            if n:
                out.setdefault((cue, alg, region), []).append((a, mean, se, n))
    return {k: sorted(v) for k, v in out.items()}


def cue_minus_strokes(cells: pd.DataFrame):
    """{(cue, algorithm, agreement): PairedDifference} of density on the cue minus density on
    the strokes within each selected model (criterion (1): the interval lies below 0)."""
    out = {}
    for (cue, alg, a), g in cells.groupby(["cue", "algorithm", "agreement"]):
        d = (g["ood_mask_density_cue"] - g["ood_mask_density_strokes"]).dropna().tolist()
        out[cue, alg, a] = paired_difference(d)
    return out


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    out, paths = argv[0], argv[1:]
    cells = read_cells(paths)
    points = density_points(cells)
    cues = [c for c in ("patch", "background") if any(k[0] == c for k in points)]
    algs = sorted({k[1] for k in points}, key=lambda a: (a != "ALIGN", a))
    colours = palette(algs)
    print("learned-mask density on the held-out domain (selected models, mean +/- s.e.)")
    print(f"{'cue':<11}{'algorithm':<12}{'region':<9}" + "agreement: mean +/- s.e. (trials)")
    fig, axes = figure(len(cues))
    for ax, cue in zip(axes, cues):
        for i, alg in enumerate(algs):
            dodge = 0.004 * (i - (len(algs) - 1) / 2)  # points at one agreement side by side
            for region, style, marker in REGIONS:
                pts = points.get((cue, alg, region))
                if not pts:
                    continue
                xs, ms, ses, ns = zip(*pts)
                ax.errorbar([x + dodge for x in xs], ms, yerr=ses, color=colours[alg], linestyle=style, marker=marker,
                            capsize=3, label=f"{alg}, {region}")
                print(f"{cue:<11}{alg:<12}{region:<9}" + "  ".join(
                    f"{x:g}: {m:.2f} +/- {s:.2f} ({n})" for x, m, s, n in pts))
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{cue} cue: learned mask on the held-out domain", fontsize=FONT_PT + 1)
        ax.set_xlabel("training agreement of the cue (a)", fontsize=FONT_PT)
        ax.set_ylabel("mask density (mass share / area share)", fontsize=FONT_PT)
        ax.legend(fontsize=FONT_PT - 1)
    print("\ndensity on the cue minus density on the strokes, within each selected model "
          "(mean [95% interval])")
    for (cue, alg, a), d in sorted(cue_minus_strokes(cells).items()):
        if d is not None:
            print(f"{cue:<11}{alg:<12}a={a:<6g}{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] "
                  f"n={d.n}  {d.verdict}")
    save_figure(fig, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
