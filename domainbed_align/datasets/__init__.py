"""Dataset registry: `@register_dataset` adds a class; DATASETS keeps registration order."""
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


from domainbed_align.datasets.base import MultipleDomainDataset, TensorDomain  # noqa: E402,F401
from domainbed_align.datasets import digits, image_folder  # noqa: E402,F401  (registers)
