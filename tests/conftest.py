import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, check=True, timeout=600, **kwargs):
    """Run `python -m module args...` in a subprocess (argv list, no shell)."""
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def weird_tmp_path(tmp_path):
    """A folder whose name has spaces and quotes (submitit's trick for quoting bugs)."""
    p = tmp_path / "a b'; echo \"x"
    p.mkdir()
    return p


# Keys that differ between an interrupted and an unbroken run of the same job.
TIMING_KEYS = {"step_time", "mem_gb"}


def without_timing(records):
    """Records minus timing keys and the run folder, for comparing a resumed run with a reference."""
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k not in TIMING_KEYS}
        r["args"] = {k: v for k, v in r["args"].items() if k != "output_dir"}
        out.append(r)
    return out
