"""Dataset registry: `@register_dataset` adds a class; DATASETS keeps registration order."""
from domainbed_align.datasets.registry import (DATASETS, get_dataset_class,  # noqa: F401
                                              register_dataset)
from domainbed_align.datasets.base import MultipleDomainDataset, TensorDomain  # noqa: E402,F401
from domainbed_align.datasets import digits, image_folder  # noqa: E402,F401  (registers)
