"""The algorithm registry: names -> classes, in table row order.

Its own module so that the algorithm modules, which register themselves on import, import
it and not their package (whose __init__ imports them: a loop).
"""
from typing import Dict, List, Type

from domainbed_align.catalog import ALGORITHM_ORDER
from domainbed_align.lib.errors import ConfigError

_REGISTRY: Dict[str, type] = {}
ALGORITHMS: List[str] = []  # kept in table row order (catalog order, then plug-ins)


def register_algorithm(cls: Type) -> Type:
    """Class decorator: register `cls` under `cls.__name__`; refuses duplicates."""
    name = cls.__name__
    if name in _REGISTRY:
        raise ValueError(f"algorithm {name!r} is registered twice "
                         f"({_REGISTRY[name].__module__} and {cls.__module__})")
    _REGISTRY[name] = cls
    ALGORITHMS.append(name)
    ALGORITHMS.sort(key=lambda n: (ALGORITHM_ORDER.index(n) if n in ALGORITHM_ORDER
                                   else len(ALGORITHM_ORDER)))  # stable: plug-ins keep order
    return cls


def get_algorithm_class(name: str) -> Type:
    """Look an algorithm up by name; the error lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}") from None
