"""Drawing the report's figures with matplotlib's Agg canvas (no pyplot, no display).

matplotlib is imported inside the functions, so importing this module costs nothing on a
login node that only wants tables. Every PNG is written atomically.
"""
import math
from typing import Dict, Sequence

import numpy as np

from domainbed_align.lib.misc import atomic_open
from domainbed_align.report.grid import DENSITY_REGIONS, REFERENCE, axis_order, fmt_value
from domainbed_align.report.names import algorithm_order

PANEL_IN = 4.0                   # inches per panel side
MAX_PANELS_PER_ROW = 3
FONT_PT = 8


def palette(names: Sequence[str]) -> Dict[str, tuple]:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def figure(n_panels: int, width: float = PANEL_IN, height: float = PANEL_IN):
    """A figure with one axes per panel (at most three per row), on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    cols = max(1, min(n_panels, MAX_PANELS_PER_ROW))
    rows = max(1, math.ceil(n_panels / cols))
    fig = Figure(figsize=(width * cols, height * rows), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(n_panels, 1))]
    return fig, axes


def save_figure(fig, path: str) -> str:
    """Write a PNG atomically (a reader never sees half a file)."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


_LABEL_OFFSETS = ((4, 4), (4, -11), (-4, 4), (-4, -11), (4, 14), (4, -21), (-4, 14), (-4, -21))


def _place_labels(ax, items):
    """Annotate points [(text, x, y, colour)], each at the first offset whose (estimated) text
    box overlaps no label placed before it, so close algorithms stay readable."""
    ax.figure.canvas.draw()       # settle the layout so data -> pixel transforms hold
    pt = ax.figure.dpi / 72.0
    placed = []
    for text, x, y, colour in items:
        px, py = ax.transData.transform((x, y))
        w, h = 0.6 * FONT_PT * len(text) * pt, FONT_PT * pt
        for dx, dy in _LABEL_OFFSETS:
            left = px + dx * pt - (w if dx < 0 else 0)
            box = (left, py + dy * pt, left + w, py + dy * pt + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                    ha="left" if dx >= 0 else "right", fontsize=FONT_PT, color=colour)


def draw_selected(points, x_label: str, y_label: str, title: str, scale: float = 100.0,
                  diagonal: bool = False, left_out: Dict[str, Sequence[str]] = None):
    """One panel per dataset: a labelled point per algorithm with s.e. bars on both axes.

    `left_out`: dataset -> lines naming the algorithms not drawn (incomplete), printed under
    that panel so a missing point is never mistaken for a method that was not run."""
    fig, axes = figure(len(points))
    algs = algorithm_order([a for pts in points.values() for a in pts])
    colours = palette(algs)
    for ax, (ds, pts) in zip(axes, points.items()):
        for alg, (x, xs, y, ys, n) in pts.items():
            ax.errorbar(scale * x, scale * y, xerr=scale * xs, yerr=scale * ys, fmt="o",
                        color=colours[alg], capsize=3, ms=5)
        xlim, ylim = ax.get_xlim(), ax.get_ylim()
        if diagonal and max(xlim[0], ylim[0]) < min(xlim[1], ylim[1]):   # crosses the view
            lo, hi = min(xlim[0], ylim[0]), max(xlim[1], ylim[1])
            ax.plot([lo, hi], [lo, hi], ls=":", color="#888888", lw=0.8, label="OOD = ID")
            ax.set_xlim(xlim)            # the diagonal must not widen the points' view
            ax.set_ylim(ylim)
            ax.legend(fontsize=FONT_PT, loc="best")
        ax.set_title(f"{ds}", fontsize=FONT_PT + 1)
        ax.set_xlabel(x_label, fontsize=FONT_PT)
        ax.set_ylabel(y_label, fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3)
        if (left_out or {}).get(ds):
            ax.text(0.01, 0.01, "not drawn (incomplete):\n" + "\n".join(left_out[ds]),
                    transform=ax.transAxes, fontsize=FONT_PT - 1, color="#cf222e",
                    va="bottom", ha="left")
    fig.suptitle(title, fontsize=FONT_PT + 1)
    for ax, pts in zip(axes, points.values()):
        _place_labels(ax, [(alg, scale * p[0], scale * p[2], colours[alg])
                           for alg, p in pts.items()])
    return fig


def draw_forest(panels, reference: str, scale: float = 100.0):
    """One panel per quantity: each algorithm's mean paired difference to the reference with
    its 95% interval as a horizontal bar; the dotted line is no difference."""
    n_rows = max(len(rows) for rows in panels.values())
    labels = [[f"{label} (n={d.n})" for label, d in reversed(rows)] for rows in panels.values()]
    # Row labels ("GradMask[mask_quality=all_but_cue] - GradMask[mask_quality=gt] (n=5)") can
    # be wider than a panel: the figure widens by their width (constrained layout gives up
    # otherwise and draws them over the next panel), and when every panel has the same rows
    # only the first names them.
    shared = all(lab == labels[0] for lab in labels)
    label_in = max(len(t) for lab in labels for t in lab) * FONT_PT * 0.62 / 72
    per_panel = PANEL_IN + (label_in / min(len(panels), MAX_PANELS_PER_ROW) if shared else label_in)
    fig, axes = figure(len(panels), width=per_panel, height=max(2.0, 0.35 * n_rows + 1.2))
    for i, (ax, (title, rows)) in enumerate(zip(axes, panels.items())):
        for y, (label, d) in enumerate(reversed(rows)):
            lo = d.low if d.n > 1 else d.mean
            hi = d.high if d.n > 1 else d.mean
            colour = {"higher": "#1a7f37", "lower": "#b42318"}.get(d.verdict, "#555555")
            ax.plot([scale * lo, scale * hi], [y, y], color=colour, lw=2)
            ax.plot(scale * d.mean, y, "o", color=colour, ms=5)
        ax.axvline(0, ls=":", color="#888888", lw=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels[i] if i == 0 or not shared else [], fontsize=FONT_PT)
        ax.set_title(title, fontsize=FONT_PT + 1)
        ax.set_xlabel(f"difference to {reference}", fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"Paired differences to {reference} (training-domain validation)\n"
                 "mean and 95% Student-t interval over pairs (same trial seed and test domain)",
                 fontsize=FONT_PT + 1)
    return fig


def draw_hparam_curves(curves, hparam: str, y_label: str, scale: float = 100.0):
    """One panel per dataset: a line per label over `hparam`; references are dashed lines."""
    n_max = max((len(lines) for lines in curves.values()), default=0)
    leg_cols = _legend_columns(n_max)
    fig, axes = figure(len(curves), width=PANEL_IN * 1.3 + 2.4 * leg_cols,
                        height=max(PANEL_IN, 0.14 * math.ceil(n_max / max(leg_cols, 1)) + 1))
    labels = [lab for c in curves.values() for lab in c]
    colours = palette(list(dict.fromkeys(labels)))
    for ax, (ds, lines) in zip(axes, curves.items()):
        xs = [p[0] for label, pts in lines.items() if not label.endswith(REFERENCE)
              for p in pts]
        order, numeric = axis_order(xs, hparam)
        pos = (lambda x: x) if numeric else (lambda x: order.index(x))
        for label, pts in lines.items():
            c = colours[label]
            if label.endswith(REFERENCE):
                _, mean, se, _ = pts[0]
                ax.axhline(scale * mean, ls="--", color=c, lw=1.2, label=label)
                ax.axhspan(scale * (mean - se), scale * (mean + se), color=c, alpha=0.15, lw=0)
                continue
            x = [pos(p[0]) for p in pts]
            ax.errorbar(x, [scale * p[1] for p in pts], yerr=[scale * p[2] for p in pts],
                        marker="o", ms=4, capsize=3, color=c, label=label)
        if not numeric:
            ax.set_xticks(range(len(order)), [fmt_value(v) for v in order])
        elif order and order[0] > 0 and order[-1] / order[0] >= 100:
            ax.set_xscale("log")      # learning rates, weights spanning decades
        ax.set_title(ds, fontsize=FONT_PT + 1)
        ax.set_xlabel(hparam, fontsize=FONT_PT)
        ax.set_ylabel(y_label, fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3)
        legend(ax, len(lines))
    fig.suptitle(f"{y_label} against {hparam}\nlast checkpoint, mean ± s.e. over trial seeds",
                 fontsize=FONT_PT + 1)
    return fig


def _legend_columns(n_entries: int) -> int:
    """Legend columns beside the panel (0: inside it)."""
    return 0 if n_entries <= 6 else 1 + n_entries // 40


def legend(ax, n_entries: int):
    """Inside the panel when short, to its right when long (it never hides the lines)."""
    cols = _legend_columns(n_entries)
    if cols == 0:
        ax.legend(fontsize=FONT_PT - 1)
    else:
        ax.legend(fontsize=FONT_PT - 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncols=cols)


def draw_densities(curves):
    """One panel per (dataset, line): the three region densities against the step."""
    panels = [(ds, label, regions) for ds, lines in curves.items()
              for label, regions in lines.items()]
    fig, axes = figure(len(panels), height=PANEL_IN * 0.8)
    colours = palette(list(DENSITY_REGIONS))
    for ax, (ds, label, regions) in zip(axes, panels):
        for region, pts in regions.items():
            s = np.array([p[0] for p in pts], dtype=float)
            m = np.array([p[1] for p in pts])
            e = np.array([p[2] for p in pts])
            ax.plot(s, m, marker=".", color=colours[region], label=region)
            ax.fill_between(s, m - e, m + e, color=colours[region], alpha=0.2, lw=0)
        ax.axhline(1.0, ls=":", color="#888888", lw=0.8)
        ax.set_title(f"{ds}: {label}", fontsize=FONT_PT + 1)
        ax.set_xlabel("step", fontsize=FONT_PT)
        ax.set_ylabel("mask density (mass share / area share)", fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=FONT_PT - 1)
    fig.suptitle("Where the learned mask puts its mass on the test domain\n(mass share / area "
                 "share, 1 = uniform; mean ± s.e. over runs)", fontsize=FONT_PT + 1)
    return fig
