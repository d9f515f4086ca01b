"""Launch a 1,000-job sweep on the local SLURM cluster: count sbatch calls, time launch and status.

    bash scripts/slurm_local_cluster.sh            # once, as root
    python benchmarks/slurm_launch_speed.py [--jobs 1000] [--sweep_dir DIR]

The sweep is SpuriousDigits x ERM x 4 test domains x (jobs / 4) hparams seeds, submitted held
(`--slurm_additional_parameters '{"hold": true}'`) so nothing runs; the array is cancelled at
the end. A shim first on PATH counts the calls to sbatch and squeue and then runs the real ones.
Targets: one sbatch call, launch under 10 s, status in a second or two (one squeue call).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def shim(bin_dir: str, name: str, log: str) -> None:
    real = shutil.which(name)
    if real is None:
        sys.exit(f"error: {name} not found; start SLURM with scripts/slurm_local_cluster.sh")
    path = os.path.join(bin_dir, name)
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\necho {name} >> "{log}"\nexec "{real}" "$@"\n')
    os.chmod(path, 0o755)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000, help="a multiple of 4")
    p.add_argument("--sweep_dir", default=None)
    a = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="slurm_launch_speed_")
    sweep_dir = a.sweep_dir or os.path.join(work, "sweep")
    bin_dir = os.path.join(work, "bin")
    os.makedirs(bin_dir)
    log = os.path.join(work, "calls.log")
    for name in ("sbatch", "squeue"):
        shim(bin_dir, name, log)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    flags = ["--datasets", "SpuriousDigits", "--algorithms", "ERM", "--single_test_envs",
             "--n_trials", "1", "--n_hparams", str(a.jobs // 4), "--steps", "10",
             "--output_dir", sweep_dir]

    def run(command, *extra):
        open(log, "w").close()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "domainbed_align.sweep", command, *flags,
                               *extra], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"{command} failed ({proc.returncode}):\n{proc.stderr}")
        calls = open(log).read().split()
        return wall, proc.stdout.strip().splitlines()[-2:], calls

    array = None
    try:
        wall, tail, calls = run("launch", "--command_launcher", "slurm", "--gpus_per_job", "0",
                                "--cpus_per_job", "1", "--skip_confirmation",
                                "--slurm_additional_parameters", '{"hold": true}')
        ids = {open(os.path.join(sweep_dir, d, "slurm_job_id")).read().split("_")[0]
               for d in os.listdir(sweep_dir) if not d.startswith("_")}
        array = sorted(ids)
        print(f"launch: {a.jobs} jobs in {wall:.2f} s wall; sbatch calls: "
              f"{calls.count('sbatch')}; SLURM array ids: {', '.join(array)}")
        wall, tail, calls = run("status")
        print(f"status: {wall:.2f} s wall; squeue calls: {calls.count('squeue')}; {tail[-1]}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        for job_id in array or []:
            subprocess.run(["scancel", job_id], capture_output=True)
        if a.sweep_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
