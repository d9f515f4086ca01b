"""A small chainable query layer over lists of records (DomainBed's `Q`, written afresh).

    Q(records).filter(lambda r: len(r["args"]["test_envs"]) == 1).group("args.hparams_seed")

Selectors are a callable, a key, a dotted path ("args.dataset") or a comma list of those
("args.dataset, args.algorithm" -> a tuple). Pure Python, no torch: the collector's readable
path and the reference the vectorised selection is tested against.
"""
import json
import math
from typing import Any, Callable, Iterable, Union

import numpy as np

Selector = Union[str, Callable[[Any], Any]]


def selector_fn(selector: Selector) -> Callable[[Any], Any]:
    """Turn a selector string into a function; pass callables through."""
    if callable(selector):
        return selector
    if not isinstance(selector, str):
        raise TypeError(f"a selector is a string or a callable, not {type(selector).__name__}")
    if "," in selector:
        parts = [selector_fn(p) for p in selector.split(",")]
        return lambda obj: tuple(p(obj) for p in parts)
    keys = [k.strip() for k in selector.split(".")]

    def get(obj):
        for k in keys:
            obj = obj[k]
        return obj
    return get


def _hashable(x):
    try:
        hash(x)
        return x
    except TypeError:
        return json.dumps({"_": x}, sort_keys=True)


# upstream's names, so ported code imports them unchanged
make_selector_fn = selector_fn
hashable = _hashable


def _nan_low(x):
    """Sort key that puts NaN below every number (DomainBed's convention)."""
    if isinstance(x, (float, np.floating)) and math.isnan(x):
        return float("-inf")
    return x


class Q:
    """An immutable-by-convention list with chainable group/map/filter/select/argmax."""

    def __init__(self, items: Iterable = ()):
        self._items = list(items)

    def __len__(self):
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]

    def __iter__(self):
        return iter(self._items)

    def __eq__(self, other):
        return self._items == (other._items if isinstance(other, Q) else other)

    def __repr__(self):
        return f"Q({self._items!r})"

    def group(self, selector: Selector) -> "Q":
        """[(key, Q(members)), ...] sorted by key; members keep their order."""
        sel = selector_fn(selector)
        groups = {}
        for x in self._items:
            key = sel(x)
            groups.setdefault(_hashable(key), (key, []))[1].append(x)
        return Q((groups[k][0], Q(groups[k][1])) for k in sorted(groups))

    def group_map(self, selector: Selector, fn: Callable) -> "Q":
        return self.group(selector).map(fn)

    def map(self, fn: Callable) -> "Q":
        """Apply fn; (key, group) pairs from `group` are unpacked into fn(key, group)."""
        return Q(fn(*x) if isinstance(x, tuple) and _arity(fn) > 1 else fn(x)
                 for x in self._items)

    def select(self, selector: Selector) -> "Q":
        sel = selector_fn(selector)
        return Q(sel(x) for x in self._items)

    def filter(self, fn: Callable[[Any], bool]) -> "Q":
        return Q(x for x in self._items if fn(x))

    def filter_equals(self, selector: Selector, value) -> "Q":
        sel = selector_fn(selector)
        return self.filter(lambda x: sel(x) == value)

    def filter_not_none(self) -> "Q":
        return self.filter(lambda x: x is not None)

    def unique(self) -> "Q":
        seen, out = set(), []
        for x in self._items:
            h = _hashable(x)
            if h not in seen:
                seen.add(h)
                out.append(x)
        return Q(out)

    def sorted(self, key: Selector = None) -> "Q":
        sel = selector_fn(key) if key is not None else (lambda x: x)
        return Q(sorted(self._items, key=lambda x: _nan_low(sel(x))))

    def argmax(self, selector: Selector):
        """The first element with the largest selected value (NaN counts as lowest)."""
        sel = selector_fn(selector)
        return max(self._items, key=lambda x: _nan_low(sel(x)))

    def mean(self) -> float:
        return float(np.mean(self._items)) if self._items else float("nan")

    def std(self) -> float:
        return float(np.std(self._items)) if self._items else float("nan")

    def mean_std(self):
        return self.mean(), self.std()

    def min(self):
        return min(self._items)

    def max(self):
        return max(self._items)

    def sum(self):
        return sum(self._items)

    def len(self) -> int:
        return len(self._items)

    def filter_not_nan(self) -> "Q":
        return self.filter(lambda x: not np.isnan(x))

    def flatten(self) -> "Q":
        return Q(y for x in self._items for y in x)

    def list(self) -> list:
        return list(self._items)


def _arity(fn) -> int:
    code = getattr(fn, "__code__", None)
    if code is None:
        return 1
    return code.co_argcount - (1 if hasattr(fn, "__self__") else 0)
