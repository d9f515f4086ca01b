"""Regenerate the collector's golden files (and, with --data, the synthetic sweeps they read).

    python tests/make_golden.py            # rewrite tests/data/*.golden.* from committed records
    python tests/make_golden.py --data     # also rebuild the synthetic sweep folders first

Goldens are made from the COMMITTED records (never re-trained), so they are machine-independent.
Check every diff by eye before committing: the DomainBed part of upstream_sweep.golden.txt was
verified against the reference selection in tests/test_model_selection.py.
"""
import argparse
import contextlib
import io
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

# (sweep folder under tests/data, extra CLI flags, golden file name)
CASES = [
    ("upstream_sweep", [], "upstream_sweep.golden.txt"),
    ("metrics_sweep", [], "metrics_sweep.golden.txt"),
    ("metrics_sweep", ["--latex"], "metrics_sweep.golden.tex"),
    ("metrics_sweep", ["--markdown"], "metrics_sweep.golden.md"),
    ("tiny_sweep", [], "tiny_sweep.golden.txt"),
    ("tiny_sweep", ["--latex"], "tiny_sweep.golden.tex"),
    ("tiny_sweep", ["--markdown"], "tiny_sweep.golden.md"),
]
REGEN = "python tests/make_golden.py"


def make_data():
    from make_synthetic_sweep import make_sweep
    for name in ("upstream_sweep", "metrics_sweep"):
        shutil.rmtree(os.path.join(DATA, name), ignore_errors=True)
    make_sweep(os.path.join(DATA, "upstream_sweep"), 10**9, upstream_only=True, seed=1,
               algorithms=("ERM", "MyPlugin"), datasets={"VLCS": 4}, n_trials=2,
               checkpoint_freq=10, steps_per_run=3, n_hparams=2)
    make_sweep(os.path.join(DATA, "metrics_sweep"), 10**9, seed=2,
               algorithms=("ERM", "ALIGN"), datasets={"Debug28": 3}, n_trials=2,
               checkpoint_freq=10, steps_per_run=2, n_hparams=1, single_source=True)


def render(sweep, flags):
    """The collector's stdout on tests/data/<sweep> (results files not written)."""
    from domainbed_align import collect_results
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = collect_results.main(["--input_dir", os.path.join(DATA, sweep), "--no_write",
                                   "--workers", "1", *flags])
    assert rc == 0, err.getvalue()
    return out.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="store_true", help="rebuild the synthetic sweeps first")
    a = p.parse_args(argv)
    if a.data:
        make_data()
    for sweep, flags, golden in CASES:
        if not os.path.isdir(os.path.join(DATA, sweep)):
            print(f"skip {golden}: tests/data/{sweep} missing")
            continue
        with open(os.path.join(DATA, golden), "w", encoding="utf-8") as f:
            f.write(render(sweep, flags))
        print(f"wrote tests/data/{golden}")


if __name__ == "__main__":
    main()
