"""Algorithm registry: `@register_algorithm` adds a class; ALGORITHMS is the table row order.

Importing this package imports every built-in algorithm module, so registration is complete.
Plug-ins call `register_algorithm` on their own subclass of `Algorithm`.
"""
from domainbed_align.algorithms.registry import (ALGORITHMS, get_algorithm_class,  # noqa: F401
                                                register_algorithm)
from domainbed_align.algorithms.base import Algorithm, ERM  # noqa: F401,E402  (registers)
from domainbed_align.algorithms import align, dre  # noqa: F401
from domainbed_align.algorithms import align_vrex, align_irm  # noqa: F401
from domainbed_align.algorithms import (sgt, gradia, res, care, input_gradient,  # noqa: F401
                                        haics, actdiff)
