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


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    """Run Python `code` in a fresh interpreter and check that it never imported torch (the
    collector and the figures run on login nodes)."""
    code += ("\nimport sys\nbad = [m for m in sys.modules if m == 'torch' or "
             "m.startswith('torch.')]\nprint('TORCH' if bad else 'NO_TORCH')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("NO_TORCH")
    return res


def kill_after_records(proc: subprocess.Popen, results_path, n: int, max_delay_s: float = 0.5,
                       timeout_s: float = 300) -> None:
    """kill -9 `proc` at a moment we do not choose: once `results_path` holds `n` records,
    plus a random delay of up to `max_delay_s`, and never more than 0.8 of the time the
    previous record took to arrive, so the kill lands before the next record whatever the
    machine's speed (a fixed delay let a fast machine finish the run first)."""
    import time
    deadline = time.time() + timeout_s
    seen, arrived = 0, {}
    while time.time() < deadline:
        if os.path.exists(results_path):
            with open(results_path) as f:
                seen = len(f.read().splitlines())
            arrived.setdefault(seen, time.time())
            if seen >= n:
                break
        time.sleep(0.002)
    interval = arrived.get(seen, 0.0) - max((t for k, t in arrived.items() if k < seen),
                                            default=arrived.get(seen, 0.0))
    cap = min(max_delay_s, 0.8 * interval) if interval > 0 else max_delay_s
    time.sleep(float(os.urandom(1)[0]) / 255 * cap)
    proc.send_signal(9)
    proc.wait()


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


# --------------------------------------------------------------------------------------------
# Tests marked `slurm` need a scheduler: they skip where `sbatch`/`srun` are absent, unless
# REQUIRE_SLURM=1 (CI), which turns the skip into a failure. One rule for every test file.
# --------------------------------------------------------------------------------------------
import shutil  # noqa: E402

SLURM_BINARIES = ("sbatch", "srun", "squeue", "scontrol", "scancel")


def slurm_missing():
    """The scheduler commands absent from PATH (empty when a cluster is reachable)."""
    return [b for b in SLURM_BINARIES if shutil.which(b) is None]


def pytest_collection_modifyitems(config, items):
    missing = slurm_missing()
    if not missing:
        return
    marked = [item for item in items if item.get_closest_marker("slurm")]
    if not marked:
        return
    if os.environ.get("REQUIRE_SLURM") == "1":
        raise pytest.UsageError(f"REQUIRE_SLURM=1 but {', '.join(missing)} not on PATH: run "
                                f"scripts/slurm_local_cluster.sh first")
    skip = pytest.mark.skip(reason=f"no SLURM here ({', '.join(missing)} absent); "
                                   f"REQUIRE_SLURM=1 makes this a failure")
    for item in marked:
        item.add_marker(skip)
