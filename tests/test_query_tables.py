"""The Q query layer and the table cells, on hand-checked inputs."""
import math

import pytest

from domainbed_align.lib.query import Q, selector_fn
from domainbed_align.lib.tables import Table, format_avg, format_mean, latex_escape


def test_selectors():
    rec = {"a": 1, "b": {"c": 2}}
    assert selector_fn("a")(rec) == 1
    assert selector_fn(" b . c ")(rec) == 2
    assert selector_fn("a, b.c")(rec) == (1, 2)
    f = len
    assert selector_fn(f) is f
    with pytest.raises(TypeError, match="^a selector is a string or a callable, not int$"):
        selector_fn(3)


def test_group_keys_members_and_order():
    recs = [{"k": 2, "v": "x"}, {"k": 1, "v": "y"}, {"k": 2, "v": "z"}]
    groups = Q(recs).group("k")
    assert [k for k, _ in groups] == [1, 2]
    assert [[r["v"] for r in g] for _, g in groups] == [["y"], ["x", "z"]]
    assert isinstance(groups[1][1], Q)


def test_group_and_unique_with_unhashable_keys():
    recs = [{"k": [2, 1]}, {"k": {"b": 1, "a": 2}}, {"k": [2, 1]}, {"k": {"a": 2, "b": 1}}]
    groups = Q(recs).group("k")
    assert [k for k, _ in groups] == [[2, 1], {"b": 1, "a": 2}]   # sorted by JSON text
    assert [len(g) for _, g in groups] == [2, 2]
    assert Q([[1], {"b": 1, "a": 2}, [1], {"a": 2, "b": 1}, 3, 3]).unique() == \
        [[1], {"b": 1, "a": 2}, 3]


class Pairs:
    def both(self, key, group):
        return (key, len(group))

    def one(self, pair):
        return pair[0]


def test_map_unpacks_pairs_only_for_two_argument_functions():
    q = Q([("a", [1, 2]), ("b", [3])])
    assert q.map(lambda k, g: k * len(g)) == ["aa", "b"]
    assert q.map(lambda pair: pair[0]) == ["a", "b"]
    assert q.map(Pairs().both) == [("a", 2), ("b", 1)]          # bound methods: self not counted
    assert q.map(Pairs().one) == ["a", "b"]
    assert q.map(len) == [2, 2]                                 # builtins: one argument
    assert Q([[1, 2]]).map(lambda a, b=0: (a, b)) == [([1, 2], 0)]   # lists are not unpacked
    assert Q([1, 2]).map(lambda x: x + 1) == Q([2, 3])


def test_filters_select_sorted_argmax_mean():
    q = Q([{"a": 3, "b": 1}, {"a": 1, "b": 2}, {"a": 2, "b": 2}])
    assert q.filter_equals("b", 2).select("a") == [1, 2]
    assert q.filter(lambda r: r["a"] > 1).select("a") == [3, 2]
    assert Q([1, None, 0]).filter_not_none() == [1, 0]
    assert Q([3, 1, 2]).sorted() == [1, 2, 3]
    assert Q([{"v": 2}, {"v": float("nan")}, {"v": 1}]).sorted("v").select("v")[1:] == [1, 2]
    assert Q([{"v": 1, "i": 0}, {"v": float("nan"), "i": 1}, {"v": 1, "i": 2}]).argmax("v")["i"] == 0
    assert Q([float("nan"), -5.0]).argmax(lambda x: x) == -5.0
    assert Q([1, 2, 4]).mean() == pytest.approx(7 / 3)
    assert math.isnan(Q([]).mean())
    assert Q([1]) == Q([1]) and Q([1]) != Q([2]) and Q([1]) == [1] and not (Q([1]) == [2])
    assert repr(Q([1])) == "Q([1])" and len(Q([1, 2])) == 2 and list(Q([5])) == [5]
    assert Q((x for x in [1, 2])).list() == [1, 2]


def test_format_mean_and_avg():
    mean, err, cell = format_mean([0.5, 0.75])
    assert (mean, cell) == (62.5, "62.5 +/- 8.8")      # std([0.5, 0.75] / sqrt 2) = 0.0884
    assert err == pytest.approx(100 * 0.125 / math.sqrt(2))
    assert format_mean([0.5, 0.75], "latex")[2] == r"62.5 $\pm$ 8.8"
    assert format_mean([0.5, 0.75], "markdown")[2] == "62.5 ± 8.8"
    assert format_mean([0.2], scale=1.0)[2] == "0.2 +/- 0.0"
    assert format_mean([]) == (None, None, "X")
    assert format_avg([62.5, 37.5, 50.0]) == "50.0"
    assert format_avg([62.5, None]) == "X" and format_avg([]) == "X"


def test_table_formats():
    t = Table("Title", ["Algorithm", "a|b"], [["E_R&M", "1.0 +/- 0.0"]], colwidth=6)
    assert t.render() == "\n-------- Title\nAlgori  a|b    \nE_R&M   1.0 +/ \n"
    assert t.render("markdown") == ("\n#### Title\n\n| Algorithm | a\\|b |\n|---|:---:|\n"
                                    "| E_R&M | 1.0 +/- 0.0 |\n")
    latex = Table("T", ["Algorithm", "x"], [["E_R", "1"]], colwidth=4, latex_title="A_B").render("latex")
    assert latex.splitlines()[:4] == ["", r"\subsubsection{A\_B}", "", r"\begin{center}"]
    assert r"E\_R & 1    \\" in latex and r"\begin{tabular}{lc}" in latex
    with pytest.raises(ValueError, match="^unknown table format 'html'; known: text, latex, "
                                         "markdown$"):
        t.render("html")
    assert latex_escape("a_b%c\\") == r"a\_b\%c\textbackslash{}"
