"""A machine without SLURM: the tests that need a scheduler skip, saying why, unless
REQUIRE_SLURM=1 (CI) turns that into a failure; the sweep refuses the slurm launcher in one line
(tests/test_sweep.py). Run as a child pytest whose PATH holds no scheduler command, so this
holds on a machine that has one too."""
import os
import subprocess
import sys

from conftest import REPO

TARGET = "tests/test_slurm.py::test_small_sweep_runs_as_one_job_array"


def _pytest_without_slurm(tmp_path, **env):
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    child = {k: v for k, v in os.environ.items() if k != "REQUIRE_SLURM"}  # CI sets it
    child.update(PATH=str(empty), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           TARGET], cwd=REPO, env=child, capture_output=True, text=True)


def test_slurm_tests_skip_with_the_reason_where_no_scheduler_is_installed(tmp_path):
    p = _pytest_without_slurm(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 skipped" in p.stdout
    assert ("no SLURM here (sbatch, srun, squeue, scontrol, scancel absent); REQUIRE_SLURM=1 "
            "makes this a failure") in p.stdout


def test_require_slurm_turns_the_skip_into_a_failure(tmp_path):
    p = _pytest_without_slurm(tmp_path, REQUIRE_SLURM="1")
    assert p.returncode != 0 and "skipped" not in p.stdout
    assert ("REQUIRE_SLURM=1 but sbatch, srun, squeue, scontrol, scancel not on PATH: run "
            "scripts/slurm_local_cluster.sh first") in p.stdout + p.stderr
