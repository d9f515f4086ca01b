"""The dataset registry: names -> classes, in registration order.

Its own module so that dataset modules, which register themselves on import, import it and
not their package (whose __init__ imports them: a loop).
"""
from typing import Dict, List, Type

from domainbed_align.lib.errors import ConfigError

_REGISTRY: Dict[str, type] = {}
DATASETS: List[str] = []


def register_dataset(cls: Type) -> Type:
    name = cls.__name__
    if name in _REGISTRY:
        raise ValueError(f"dataset {name!r} is registered twice")
    _REGISTRY[name] = cls
    DATASETS.append(name)
    return cls


def get_dataset_class(name: str) -> Type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
