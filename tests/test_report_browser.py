"""The sweep page in a real browser (headless Chromium): no console error, every image loads,
every table shows the text collector's cells, a header click sorts, and a screenshot is saved.

Skipped when chromium / chromedriver are absent, unless REQUIRE_CHROMIUM=1 (CI sets it and
installs Debian's `chromium chromium-driver`): then absence fails.
"""
import io
import os
import contextlib

import pytest

import browser
from domainbed_align import collect_results as cr
from test_report_html import build_page

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_SWEEP = os.path.join(REPO, "results", "sweeps", "digits_main")
MAIN_PAGE = os.path.join(REPO, "results", "report", "digits_main", "index.html")

# Every table as the browser shows it: title, header cells, body cells.
TABLES_JS = """
return Array.from(document.querySelectorAll("table[data-title]")).map(function (t) {
  return {title: t.dataset.title,
          rows: Array.from(t.rows).map(function (r) {
            return Array.from(r.cells).map(function (c) { return c.textContent; }); })};
});"""
BROKEN_IMAGES_JS = """
return Array.from(document.images).filter(function (i) {
  return !i.complete || i.naturalWidth === 0; }).map(function (i) { return i.getAttribute("src"); });
"""


@pytest.fixture(scope="module")
def chromium():
    if browser.binaries() is None:
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            raise RuntimeError("REQUIRE_CHROMIUM=1 but chromium or chromedriver is not on PATH: "
                               "apt-get install -y chromium chromium-driver")
        pytest.skip("no chromium here; REQUIRE_CHROMIUM=1 makes this a failure")
    with browser.Browser() as b:
        yield b


def text_tables(argv):
    """title -> rows of cells of every table the text collector prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cr.main(argv + ["--no_write", "--no_cache"]) == 0
    tables, lines = {}, out.getvalue().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("-------- "):
            body = []
            for row in lines[i + 1:]:
                if not row.strip():
                    break
                body.append(row)
            tables[line[len("-------- "):]] = body
    return tables


def same_cells(text_rows, shown_rows, title):
    """Each text line is its cells, each cut to the column width, joined by two spaces."""
    assert len(text_rows) == len(shown_rows), title
    for line, cells in zip(text_rows, shown_rows):
        n = len(cells)
        width = (len(line) - 1 - 2 * (n - 1)) // n
        expected = "  ".join(c.replace("±", "+/-").ljust(width)[:width] for c in cells) + " "
        assert line == expected, f"{title}: browser shows {cells}, the text report {line!r}"


def check_page(b, page, sweep_argv, screenshot):
    b.console()                                           # drop what came before
    b.open(browser.file_url(page))
    errors = [e for e in b.console() if e.get("level") in ("SEVERE", "ERROR")]
    assert errors == [], errors
    assert b.run(BROKEN_IMAGES_JS) == []
    assert b.run("return document.images.length") >= 3
    shown = b.run(TABLES_JS)
    text = text_tables(sweep_argv)
    assert [t["title"] for t in shown] == list(text)      # every table, in the same order
    for t in shown:
        same_cells(text[t["title"]], t["rows"], t["title"])
    b.screenshot(screenshot)
    assert os.path.getsize(screenshot) > 10000
    # a click on a number column sorts the rows by value; a second click sorts them downward
    column = b.run("""
      var t = document.querySelector("table[data-title]"), th = t.tHead.rows[0].cells[1];
      th.click(); var up = Array.from(t.tBodies[0].rows).map(function (r) {
        return r.cells[1].textContent; });
      th.click(); var down = Array.from(t.tBodies[0].rows).map(function (r) {
        return r.cells[1].textContent; });
      return [up, down];""")
    up, down = ([float(c.split()[0]) for c in cells if c.split()[0] != "X"] for cells in column)
    assert up == sorted(up) and down == sorted(down, reverse=True) and len(up) == len(down)
    assert sorted(column[0]) == sorted(column[1])               # the same cells, reordered
    assert [e for e in b.console() if e.get("level") == "SEVERE"] == []


def test_fresh_page_in_chromium(chromium, tmp_path):
    sweep, out = build_page(tmp_path)
    check_page(chromium, str(out / "index.html"), ["--input_dir", str(sweep)],
               str(tmp_path / "screenshot.png"))
    assert "ValueError: loss is NaN" in chromium.run("return document.body.innerText")


def test_committed_digits_main_page_matches_the_text_collector(chromium, tmp_path):
    """results/report/digits_main (make_study.sh) against the records it was made from."""
    if not os.path.exists(MAIN_PAGE):
        pytest.skip("results/report/digits_main not generated (bash results/make_study.sh)")
    check_page(chromium, MAIN_PAGE, ["--input_dir", MAIN_SWEEP],
               str(tmp_path / "screenshot.png"))
