"""Result tables as text (DomainBed's layout, byte for byte), LaTeX and markdown.

No torch, no pandas: a table is a title, column labels and rows of already formatted cells.
"""
import dataclasses
from typing import List, Optional, Sequence

import numpy as np

FORMATS = ("text", "latex", "markdown")

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    # the direction arrows of metric columns and headings: math symbols, not raw unicode
    "↑": r"$\uparrow$", "↓": r"$\downarrow$", "·": r"$\cdot$", "±": r"$\pm$",
}
_PM = {"text": "+/-", "latex": r"$\pm$", "markdown": "±", "html": "±"}


def latex_escape(text: str) -> str:
    """Escape the ten LaTeX special characters (upstream crashes or breaks on them); arrows
    and ± become math symbols."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def format_mean(values: Sequence[float], fmt: str = "text", scale: float = 100.0):
    """Return (mean, err, cell): mean x scale and standard error over `values`.

    The error is DomainBed's: numpy population std of `values / sqrt(n)`. Empty -> "X".
    """
    if len(values) == 0:
        return None, None, "X"
    data = list(values)
    mean = scale * np.mean(data)
    err = scale * np.std(data / np.sqrt(len(data)))
    return mean, err, "{:.1f} {} {:.1f}".format(mean, _PM[fmt], err)


def format_avg(means: Sequence[Optional[float]]) -> str:
    """The Avg column: mean of the row's means, "X" when any cell is missing."""
    if len(means) == 0 or any(m is None for m in means):
        return "X"
    return "{:.1f}".format(sum(means) / len(means))


@dataclasses.dataclass
class Table:
    """One table: `title` (the text-mode header after "-------- "), labels, rows of cells.

    `columns[0]` labels the row-label column ("Algorithm"); every row is [label, *cells].
    `latex_title` is printed as a \\subsubsection before the LaTeX table when set.
    """
    title: str
    columns: List[str]
    rows: List[List[str]]
    colwidth: int = 20
    latex_title: Optional[str] = None

    def render(self, fmt: str = "text") -> str:
        if fmt == "text":
            return self._text()
        if fmt == "latex":
            return self._latex()
        if fmt == "markdown":
            return self._markdown()
        raise ValueError(f"unknown table format {fmt!r}; known: {', '.join(FORMATS)}")

    def _text(self) -> str:
        # DomainBed: blank line, header line, then each row's cells left-justified and cut to
        # the column width, joined by two spaces; print(..., "") leaves one trailing space.
        w = self.colwidth
        lines = ["", "-------- " + self.title]
        for row in [self.columns, *self.rows]:
            lines.append("  ".join(str(c).ljust(w)[:w] for c in row) + " ")
        return "\n".join(lines) + "\n"

    def _latex(self) -> str:
        # Same layout as DomainBed's LaTeX mode, but names are escaped and never cut.
        w = self.colwidth
        out = [""]
        if self.latex_title is not None:
            out += ["\\subsubsection{" + latex_escape(self.latex_title) + "}", ""]
        out += ["\\begin{center}", "\\adjustbox{max width=\\textwidth}{%",
                "\\begin{tabular}{l" + "c" * (len(self.columns) - 1) + "}", "\\toprule"]
        header = ["\\textbf{" + latex_escape(c) + "}" for c in self.columns]
        out.append(" & ".join(c.ljust(w) for c in header) + " \\\\")
        out.append("\\midrule")
        for row in self.rows:
            cells = [latex_escape(row[0])] + [str(c) for c in row[1:]]
            out.append(" & ".join(c.ljust(w) for c in cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}}", "\\end{center}"]
        return "\n".join(out) + "\n"

    def _markdown(self) -> str:
        def cell(c):
            return str(c).replace("|", "\\|")
        out = ["", "#### " + self.title, "",
               "| " + " | ".join(cell(c) for c in self.columns) + " |",
               "|" + "|".join(["---"] + [":---:"] * (len(self.columns) - 1)) + "|"]
        for row in self.rows:
            out.append("| " + " | ".join(cell(c) for c in row) + " |")
        return "\n".join(out) + "\n"
