"""Algorithm registry: `@register_algorithm` adds a class; ALGORITHMS is the table row order.

Importing this package imports every built-in algorithm module, so registration is complete.
Plug-ins call `register_algorithm` on their own subclass of `Algorithm`.
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


from domainbed_align.algorithms.base import Algorithm, ERM  # noqa: E402,F401  (registers)
from domainbed_align.algorithms import align, dre  # noqa: E402,F401
from domainbed_align.algorithms import align_vrex, align_irm  # noqa: E402,F401
from domainbed_align.algorithms import (sgt, gradia, res, care, input_gradient,  # noqa: E402,F401
                                        haics, actdiff)
