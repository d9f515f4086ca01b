"""Use our algorithms inside an upstream DomainBed checkout: `python -m domainbed_align.plugin`.

    python -m domainbed_align.plugin enable    # once per environment
    cd ~/DomainBed && python -m domainbed.scripts.train --algorithm ALIGN --dataset VLCS ...
    python -m domainbed_align.plugin status | disable

`enable` writes a one-line `.pth` file into the active environment's site-packages. Python runs
it at every start-up (so also in the subprocesses that upstream's sweep launchers start); it
only puts an import hook on `sys.meta_path`, imports nothing heavy, and does nothing until
upstream's own modules are imported. Then, right after each has run:
- `domainbed.algorithms`: our algorithms become attributes (`get_algorithm_class` looks names
  up in the module's globals) and are appended to `ALGORITHMS`; upstream's own classes of the
  same name (ERM) are left alone;
- `domainbed.hparams_registry`: `_hparams` is wrapped: upstream's declarations first, ours
  added for the names upstream does not know (same per-name seeded streams, so draws match ours);
- `domainbed.datasets`: `SpuriousDigits` is added (with upstream's `ENVIRONMENTS` attribute and
  `(x, y)` items, as upstream's trainer unpacks).
Upstream's trainer passes `(x, y)` batches only, so mask-based algorithms fail there on their
first step with one line that says to use `python -m domainbed_align.train`.
Written against upstream's module layout at facebookresearch/DomainBed b93c22a (style.md).
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import os
import sys
import sysconfig
from typing import Callable, Dict, List, Optional

PTH_NAME = "domainbed_align_plugin.pth"
# One line; site executes lines that start with "import". Quiet if domainbed_align is gone.
PTH_LINE = ("import importlib.util as _u; _u.find_spec('domainbed_align') and "
            "__import__('domainbed_align.plugin', fromlist=['install']).install()\n")
UPSTREAM_ALGORITHMS, UPSTREAM_HPARAMS, UPSTREAM_DATASETS = (
    "domainbed.algorithms", "domainbed.hparams_registry", "domainbed.datasets")
OUR_DATASETS = ("SpuriousDigits",)


# ------------------------------------------------------------------ what is patched
def patch_algorithms(module) -> List[str]:
    """Add our algorithms to upstream's `domainbed.algorithms`; returns the names added."""
    if not hasattr(module, "get_algorithm_class"):
        return []  # some other package called `domainbed`
    from domainbed_align.algorithms import ALGORITHMS, get_algorithm_class
    added = []
    for name in ALGORITHMS:
        if name in vars(module) and not getattr(vars(module)[name], "_domainbed_align", False):
            continue  # upstream's own class of that name stays
        cls = get_algorithm_class(name)
        cls._domainbed_align = True
        setattr(module, name, cls)
        if name not in module.ALGORITHMS:
            module.ALGORITHMS.append(name)
        added.append(name)
    return added


def wrap_hparams(upstream_hparams: Callable) -> Callable:
    """Upstream's `_hparams(algorithm, dataset, random_seed)` plus ours for the names it lacks.

    For shared names (lr, batch_size, resnet_dropout, ...) upstream's values win, except the
    optimiser defaults on our 28 px datasets, which upstream would treat as 224 px images.
    """
    if getattr(upstream_hparams, "_domainbed_align", False):
        return upstream_hparams

    def _hparams(algorithm, dataset, random_seed):
        hparams = upstream_hparams(algorithm, dataset, random_seed)
        from domainbed_align import hparams_registry as ours
        from domainbed_align.algorithms import ALGORITHMS
        if algorithm not in ALGORITHMS and dataset not in OUR_DATASETS:
            return hparams
        mine = ours._hparams(algorithm, dataset, random_seed)
        for name, value in mine.items():
            hparams.setdefault(name, value)
        if dataset in OUR_DATASETS:
            for name in ("lr", "weight_decay", "batch_size"):
                hparams[name] = mine[name]
        return hparams

    _hparams._domainbed_align = True
    _hparams.__wrapped__ = upstream_hparams
    return _hparams


def patch_hparams(module) -> None:
    if hasattr(module, "_hparams"):
        module._hparams = wrap_hparams(module._hparams)


def upstream_spurious_digits():
    """SpuriousDigits as upstream's trainer reads it: `ENVIRONMENTS` set, items `(x, y)`."""
    from torch.utils.data import TensorDataset
    from domainbed_align.catalog import DATASET_ENVIRONMENTS
    from domainbed_align.datasets.digits import SpuriousDigits as Ours

    class SpuriousDigits(Ours):
        __doc__ = Ours.__doc__
        ENVIRONMENTS = list(DATASET_ENVIRONMENTS["SpuriousDigits"])
        HAS_MASKS = False
        _domainbed_align = True

        def __init__(self, root, test_envs, hparams):
            super().__init__(root, test_envs, hparams)
            self.datasets = [TensorDataset(d.x, d.y) for d in self.datasets]
    return SpuriousDigits


def patch_datasets(module) -> List[str]:
    if not hasattr(module, "get_dataset_class"):
        return []
    existing = vars(module).get("SpuriousDigits")
    if existing is not None and not getattr(existing, "_domainbed_align", False):
        return []  # upstream grew its own
    module.SpuriousDigits = upstream_spurious_digits()
    if "SpuriousDigits" not in module.DATASETS:
        module.DATASETS.append("SpuriousDigits")
    return ["SpuriousDigits"]


PATCHES: Dict[str, Callable] = {UPSTREAM_ALGORITHMS: patch_algorithms,
                                UPSTREAM_HPARAMS: patch_hparams,
                                UPSTREAM_DATASETS: patch_datasets}


# ------------------------------------------------------------------ the import hook
class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then our patch on the fresh module."""

    def __init__(self, loader, patch):
        self._loader, self._patch = loader, patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._patch(module)

    def __getattr__(self, name):  # get_source etc. for tracebacks
        return getattr(self._loader, name)


class UpstreamFinder(importlib.abc.MetaPathFinder):
    """Finds upstream's modules with the other finders and wraps their loader."""

    def find_spec(self, fullname, path, target=None):
        patch = PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def install() -> None:
    """Put the hook in place (idempotent); patch upstream modules that are already imported."""
    if not any(isinstance(f, UpstreamFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, UpstreamFinder())
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])


# ------------------------------------------------------------------ enable / disable / status
def site_packages() -> str:
    """The active environment's site-packages (where `pip install` puts packages)."""
    return sysconfig.get_paths()["purelib"]


def enable(target: Optional[str] = None) -> str:
    from domainbed_align.lib.misc import atomic_write_text
    folder = target or site_packages()
    if not os.path.isdir(folder):
        from domainbed_align.lib.errors import ConfigError
        raise ConfigError(f"site-packages folder {folder} does not exist; activate the environment "
                          f"that runs your DomainBed checkout, or pass --target")
    path = os.path.join(folder, PTH_NAME)
    atomic_write_text(path, PTH_LINE)
    return path


def disable(target: Optional[str] = None) -> Optional[str]:
    path = os.path.join(target or site_packages(), PTH_NAME)
    if os.path.exists(path):
        os.remove(path)
        return path
    return None


def status(target: Optional[str] = None) -> List[str]:
    path = os.path.join(target or site_packages(), PTH_NAME)
    lines = [f"plug-in: {'enabled' if os.path.exists(path) else 'disabled'} ({path})"]
    spec = importlib.util.find_spec("domainbed")
    lines.append(f"upstream domainbed: {spec.origin if spec else 'not importable from here'} "
                 f"(run from your DomainBed checkout)")
    from domainbed_align.catalog import ALGORITHM_ORDER
    lines.append(f"adds algorithms: {', '.join(n for n in ALGORITHM_ORDER if n != 'ERM')} "
                 f"(upstream's ERM stays); datasets: {', '.join(OUR_DATASETS)}")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m domainbed_align.plugin",
                                description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("enable", "disable", "status"))
    p.add_argument("--target", help="site-packages folder (default: the active environment's)")
    a = p.parse_args(argv)
    from domainbed_align.lib.errors import DomainBedAlignError
    try:
        if a.command == "enable":
            print(f"enabled: wrote {enable(a.target)}; upstream DomainBed now knows our algorithms")
        elif a.command == "disable":
            removed = disable(a.target)
            print(f"disabled: removed {removed}" if removed else "already disabled")
        else:
            print("\n".join(status(a.target)))
    except DomainBedAlignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
