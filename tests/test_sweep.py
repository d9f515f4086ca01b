"""The sweep command: DomainBed's job list and identity, config files, states, bad input."""
import json
import os
import socket

import pytest

from domainbed_align import launchers, sweep

# Upstream's train args of the first job of
#   sweep launch --datasets VLCS --algorithms ERM --data_dir /data --n_trials 1 --n_hparams 1
# and its folder, computed by hand:
#   printf '%s' '<ARGS_JSON>' | md5sum
# seed: seed_hash("VLCS", "ERM", [0], 0, 0) = md5("('VLCS', 'ERM', [0], 0, 0)") mod 2**31.
SEED_MD5 = "32c17b34b548e6405e566127e6a33636"
ARGS_JSON = ('{"algorithm": "ERM", "data_dir": "/data", "dataset": "VLCS", "holdout_fraction": 0.2, '
             '"hparams_seed": 0, "seed": 1721972278, "task": "domain_generalization", '
             '"test_envs": [0], "trial_seed": 0}')
ARGS_MD5 = "84b6c3e0d2648bf36b758f905d297711"
# With upstream's optional steps and hparams: VLCS, ALIGN, test envs [1, 3], hparams seed 2, trial 1.
ARGS2_JSON = ('{"algorithm": "ALIGN", "data_dir": "/data", "dataset": "VLCS", "holdout_fraction": 0.2, '
              '"hparams": "{\\"lr\\": 0.001}", "hparams_seed": 2, "seed": 182048012, "steps": 100, '
              '"task": "domain_generalization", "test_envs": [1, 3], "trial_seed": 1}')
ARGS2_MD5 = "86664977d7f6f641d32cf19bcb818cc7"


def _cfg(**kw):
    cfg = dict(sweep.DEFAULTS, datasets=["VLCS"], algorithms=["ERM"], data_dir="/data")
    cfg.update(kw)
    return cfg


def test_job_identity_is_upstreams_md5():
    assert int(SEED_MD5, 16) % 2**31 == 1721972278
    first = sweep.make_args_list(_cfg(n_trials=1, n_hparams=1))[0]
    assert json.dumps(first, sort_keys=True) == ARGS_JSON
    assert sweep.job_dir_name(first) == ARGS_MD5
    job = sweep.Job(first, "/sweep")
    assert job.output_dir == "/sweep/" + ARGS_MD5
    assert job.train_args["output_dir"] == job.output_dir

    jobs = sweep.make_args_list(_cfg(algorithms=["ALIGN"], n_trials=2, n_hparams_from=2,
                                     n_hparams=3, steps=100, hparams='{"lr": 0.001}'))
    match = [a for a in jobs if a["trial_seed"] == 1 and a["test_envs"] == [1, 3]]
    assert len(match) == 1
    assert json.dumps(match[0], sort_keys=True) == ARGS2_JSON
    assert sweep.job_dir_name(match[0]) == ARGS2_MD5


def test_our_keys_enter_the_identity_only_when_set():
    plain = sweep.make_args_list(_cfg(n_trials=1, n_hparams=1))[0]
    masked = sweep.make_args_list(_cfg(n_trials=1, n_hparams=1, mask_dir="/m"))[0]
    assert "mask_dir" not in plain and "checkpoint_freq" not in plain
    assert masked == dict(plain, mask_dir="/m")


def test_algorithm_hparams_reach_only_their_algorithm():
    """Per-algorithm overrides win over --hparams for that algorithm; the others keep upstream's
    identity (the shared --hparams string, byte for byte)."""
    shared = '{"lr": 0.001, "explain_n": 4}'
    jobs = sweep.make_args_list(_cfg(algorithms=["ERM", "ALIGN"], n_trials=1, n_hparams=1,
                                     single_test_envs=True, hparams=shared,
                                     algorithm_hparams={"ALIGN": {"lr": 0.01, "align_l3": 0.5}}))
    erm = [a["hparams"] for a in jobs if a["algorithm"] == "ERM"]
    align = [a["hparams"] for a in jobs if a["algorithm"] == "ALIGN"]
    assert erm == [shared] * 4
    assert align == ['{"align_l3": 0.5, "explain_n": 4, "lr": 0.01}'] * 4
    alone = sweep.make_args_list(_cfg(algorithms=["ALIGN"], n_trials=1, n_hparams=1,
                                      algorithm_hparams={"ALIGN": {"align_l3": 0.5}}))[0]
    assert alone["hparams"] == '{"align_l3": 0.5}'


def test_grid_variants_list_or_product():
    assert sweep.grid_variants(None) == [{}]
    assert sweep.grid_variants([{"a": 1}, {"a": 2, "b": "x"}]) == [{"a": 1}, {"a": 2, "b": "x"}]
    assert sweep.grid_variants({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def test_hparams_grid_makes_one_job_per_variant_and_wins_over_the_rest():
    jobs = sweep.make_args_list(_cfg(algorithms=["ERM", "ALIGN"], n_trials=1, n_hparams=1,
                                     hparams='{"lr": 0.001}', single_test_envs=True,
                                     algorithm_hparams={"ALIGN": {"align_l1": 0.5, "lr": 0.01}},
                                     hparams_grid={"align_l1": [1.0, 2.0]}))
    assert len(jobs) == 2 * 4 * 2
    first = [a for a in jobs if a["test_envs"] == [0]]
    assert [(a["algorithm"], a["hparams"]) for a in first] == [
        ("ERM", '{"align_l1": 1.0, "lr": 0.001}'), ("ERM", '{"align_l1": 2.0, "lr": 0.001}'),
        ("ALIGN", '{"align_l1": 1.0, "lr": 0.01}'), ("ALIGN", '{"align_l1": 2.0, "lr": 0.01}')]
    # variants are paired: the same seed, different folders
    assert first[0]["seed"] == first[1]["seed"]
    assert sweep.job_dir_name(first[0]) != sweep.job_dir_name(first[1])


def test_hparams_grid_from_a_config_file_and_its_errors(tmp_path, capsys):
    cfg = tmp_path / "g.json"
    _write(cfg, json.dumps({"datasets": ["SpuriousDigits"], "algorithms": ["ERM"], "n_trials": 1,
                            "n_hparams": 1, "single_test_envs": True,
                            "hparams_grid": [{"digits_cue": "patch"}, {"digits_cue": "background"}],
                            "output_dir": str(tmp_path / "o")}))
    rc, out, _ = _main(capsys, "status", "--config", str(cfg))
    assert rc == 0 and "8 jobs: 0 done, 0 incomplete, 8 not launched" in out
    rc, _, err = _main(capsys, "status", "--config", str(cfg), "--hparams_grid", '[1, 2]')
    assert rc == 2 and "must be a non-empty JSON list of objects or an object of non-empty lists" in err
    rc, _, err = _main(capsys, "launch", "--config", str(cfg), "--hparams_grid",
                       '{"digits_kue": ["patch"]}', "--skip_confirmation")
    assert rc == 2 and "unknown hparam 'digits_kue'" in err
    assert not os.path.exists(tmp_path / "o") or not os.listdir(tmp_path / "o")


def test_test_envs_restrict_leave_one_domain_out(tmp_path, capsys):
    assert sweep.test_env_lists(4, "domain_generalization", False, [3, 1]) == [[3], [1]]
    assert sweep.test_env_lists(4, "single_source", False, [3]) == [[1, 2, 3], [0, 2, 3],
                                                                  [0, 1, 3], [0, 1, 2]]
    jobs = sweep.make_args_list(_cfg(n_trials=1, n_hparams=1, test_envs=[2]))
    assert [a["test_envs"] for a in jobs] == [[2]]
    rc, _, err = _main(capsys, "status", "--datasets", "VLCS", "--algorithms", "ERM",
                       "--test_envs", "4", "--output_dir", str(tmp_path))
    assert rc == 2 and "--test_envs 4: VLCS has domains 0 to 3" in err


def test_algorithm_hparams_errors(tmp_path, capsys):
    base = ["status", "--datasets", "SpuriousDigits", "--algorithms", "ERM", "--output_dir", tmp_path]
    rc, _, err = _main(capsys, *base, "--algorithm_hparams", '{"ALIGN": {"align_l3": 1}}')
    assert rc == 2 and "--algorithm_hparams names ALIGN, which is not among the sweep's algorithms" in err
    rc, _, err = _main(capsys, *base, "--algorithm_hparams", '{"ERM": 3}')
    assert rc == 2 and "ERM has 3" in err
    rc, _, err = _main(capsys, "launch", *base[1:], "--skip_confirmation", "--command_launcher", "dummy",
                       "--algorithm_hparams", '{"ERM": {"align_l3": 1}}')
    assert rc == 2 and "align_l3" in err


def test_job_list_order_and_test_envs():
    assert sweep.test_env_lists(4, "domain_generalization", False) == \
        [[0], [0, 1], [0, 2], [0, 3], [1], [1, 2], [1, 3], [2], [2, 3], [3]]
    assert sweep.test_env_lists(4, "domain_generalization", True) == [[0], [1], [2], [3]]
    assert sweep.test_env_lists(3, "single_source", False) == [[1, 2], [0, 2], [0, 1]]
    jobs = sweep.make_args_list(_cfg(datasets=["Debug28", "VLCS"], algorithms=["ERM", "DRE"],
                                     n_trials=2, n_hparams_from=1, n_hparams=3,
                                     single_test_envs=True))
    # trial_seed -> dataset -> algorithm -> test_envs -> hparams_seed
    key = [(a["trial_seed"], a["dataset"], a["algorithm"], a["test_envs"], a["hparams_seed"])
           for a in jobs]
    assert len(jobs) == 2 * 2 * (3 + 4) * 2
    assert key[:5] == [(0, "Debug28", "ERM", [0], 1), (0, "Debug28", "ERM", [0], 2),
                       (0, "Debug28", "ERM", [1], 1), (0, "Debug28", "ERM", [1], 2),
                       (0, "Debug28", "ERM", [2], 1)]
    assert key[6] == (0, "Debug28", "DRE", [0], 1)
    ss = sweep.make_args_list(_cfg(task="single_source", n_trials=1, n_hparams=1))
    assert [a["test_envs"] for a in ss] == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert all(a["task"] == "single_source" for a in ss)


def test_train_job_argv_round_trips_through_the_trainer_parser(weird_tmp_path):
    from domainbed_align.train import parse_args
    args = {"dataset": "Debug28", "algorithm": "ERM", "test_envs": [0, 2], "holdout_fraction": 0.2,
            "hparams_seed": 3, "data_dir": str(weird_tmp_path / "da ta"), "task": "domain_generalization",
            "trial_seed": 1, "seed": 7, "steps": 9, "hparams": '{"lr": 0.01, "explain_n": 4}',
            "output_dir": str(weird_tmp_path / "o u t")}
    job = launchers.TrainJob(args)
    config = parse_args(job.argv())
    assert config.record_args() == dict(config.record_args(), **args)
    assert job.command()[1:3] == ["-m", "domainbed_align.train"]


def _main(capsys, *argv, cwd=None):
    if cwd is not None:
        os.chdir(cwd)
    capsys.readouterr()
    rc = sweep.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_bare_status_is_the_quick_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, _ = _main(capsys, "status")
    quick = json.load(open(sweep.QUICK_CONFIG))
    assert rc == 0 and "quick built-in sweep" in out
    n = len(quick["algorithms"]) * 4 * quick["n_hparams"] * quick["n_trials"]
    assert out.strip().splitlines()[-1] == \
        f"{n} jobs: 0 done, 0 incomplete, {n} not launched, 0 running, 0 pending, 0 failed."
    assert "./sweep_output/" in out


def test_config_file_and_flags_win(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"datasets": ["Debug28"], "algorithms": ["ERM", "DRE"], "n_hparams": 2,
                                "n_trials": 1, "output_dir": str(tmp_path / "sw"),
                                "single_test_envs": True}))
    rc, out, _ = _main(capsys, "status", "--config", path)
    assert rc == 0 and out.strip().splitlines()[-1].startswith("12 jobs:")
    rc, out, _ = _main(capsys, "status", "--config", path, "--algorithms", "ERM", "--n_hparams", "3")
    assert rc == 0 and out.strip().splitlines()[-1].startswith("9 jobs:")


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _vlcs(tmp_path):
    for d in ("Caltech101", "LabelMe", "SUN09", "VOC2007"):
        (tmp_path / "data" / "VLCS" / d / "bird").mkdir(parents=True)
    return tmp_path / "data"


BAD = [
    (["--algorithms", "ALGN"], r"unknown algorithm 'ALGN'; known: ERM"),
    (["--datasets", "VLCSS"], r"unknown dataset 'VLCSS'; known:"),
    (["--datasets", "VLCS", "--data_dir", "{tmp}/nowhere"], r"data folder .*nowhere/VLCS does not exist"),
    (["--n_hparams_from", "3", "--n_hparams", "3"], r"--n_hparams_from 3 must be below --n_hparams 3"),
    (["--hparams", "{lr: 1}"], r"--hparams is not valid JSON"),
    (["--hparams", '{"lrr": 1}'], r"unknown hparam 'lrr' for ERM on Debug28"),
    (["--slurm_partition", "gpu"], r"--slurm_partition is a SLURM flag but --command_launcher is local"),
    (["--command_launcher", "dummy", "--local_workers", "2"], r"--local_workers applies to"),
    (["--steps", "-5"], r"--steps must be a positive number of steps, got -5"),
    (["--output_dir", "{tmp}/afile/sweep"], r"cannot create --output_dir .*afile/sweep \(Not a directory\)"),
    (["--config", "{tmp}/bad.json"], r"unknown key\(s\) n_hparam; known: datasets"),
    (["--config", "nosuch.json"], r"--config nosuch.json: no such file; ready sweeps: .*quick.json"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_stops_before_anything_is_made(tmp_path, capsys, monkeypatch, args, message):
    import re
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "bad.json").write_text('{"n_hparam": 3}')
    base = ["launch", "--datasets", "Debug28", "--algorithms", "ERM", "--n_hparams", "1",
            "--n_trials", "1", "--output_dir", str(tmp_path / "sw"), "--skip_confirmation"]
    rc, out, err = _main(capsys, *base, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), err
    assert not (tmp_path / "sw").exists()


def test_mask_algorithm_without_masks_and_missing_sbatch(tmp_path, capsys, monkeypatch):
    from domainbed_align.algorithms import ERM
    data = _vlcs(tmp_path)
    common = ["launch", "--datasets", "VLCS", "--algorithms", "ERM", "--n_hparams", "1", "--n_trials", "1",
              "--data_dir", data, "--output_dir", tmp_path / "sw", "--skip_confirmation"]
    monkeypatch.setattr(ERM, "NEEDS_MASKS", True)
    rc, _, err = _main(capsys, *common)
    assert rc == 2 and "error: ERM trains on relevance masks but VLCS has none; make a mask folder with `python -m domainbed_align.datasets.masks" in err and "or drop ERM" in err
    (tmp_path / "masks").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rc, _, err = _main(capsys, *common, "--mask_dir", tmp_path / "masks", "--command_launcher", "slurm")
    assert rc == 2 and err.strip() == ("error: --command_launcher slurm but sbatch is not on PATH; run on "
                                       "a SLURM login node or use --command_launcher local")
    assert not (tmp_path / "sw").exists()


def _write_done(folder):
    """A finished run as status checks it: a whole records line, then `done`."""
    _write(folder / "results.jsonl", '{"step": 0}\n')
    _write(folder / "done", "done")


def _fake_bin(tmp_path, name, script):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return bin_dir


def test_states_from_files_and_one_squeue_call(tmp_path, capsys, monkeypatch):
    """Each state from its evidence; squeue is faked (it prints two array tasks) and counted."""
    out = tmp_path / "sw"
    argv = ["status", "--datasets", "Debug28", "--algorithms", "ERM", "DRE", "--n_hparams", "1",
            "--n_trials", "1", "--single_test_envs", "--output_dir", out]
    cfg = _cfg(datasets=["Debug28"], algorithms=["ERM", "DRE"], n_hparams=1, n_trials=1,
               single_test_envs=True, data_dir="./data")
    jobs = [sweep.Job(a, str(out)) for a in sweep.make_args_list(cfg)]
    assert len(jobs) == 6
    _write_done(out / os.path.basename(jobs[0].output_dir))
    _write(out / os.path.basename(jobs[1].output_dir) / "slurm_job_id", "77_1\n")
    _write(out / os.path.basename(jobs[2].output_dir) / "slurm_job_id", "77_2\n")
    _write(out / os.path.basename(jobs[3].output_dir) / "error.txt",
           "Traceback (most recent call last):\n  ...\nRuntimeError: boom at step 3\n\n")
    _write(out / os.path.basename(jobs[4].output_dir) / "out.txt", "")
    _write(out / os.path.basename(jobs[4].output_dir) / "running", f"{socket.gethostname()} {os.getpid()}\n")
    (out / "77_0").mkdir()  # a job folder of some other sweep: not ours, not counted
    calls = tmp_path / "calls"
    bin_dir = _fake_bin(tmp_path, "squeue", f'echo "$@" >> "{calls}"\necho "77_1 RUNNING"\n'
                                            'echo "77_2 PENDING"\necho "12 RUNNING"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    rc, text, _ = _main(capsys, *argv)
    assert rc == 0
    states = [line.split(":")[0] for line in text.splitlines()[:-1]]
    assert states == ["Done", "Running", "Pending", "Failed", "Running", "Not launched"]
    assert text.splitlines()[-1] == "6 jobs: 1 done, 0 incomplete, 1 not launched, 2 running, 1 pending, 1 failed."
    assert len(calls.read_text().splitlines()) == 1
    rc, text, _ = _main(capsys, *argv, "--failed")
    assert text.splitlines()[:2] == [str(jobs[3]).replace("Not launched", "Failed"),
                                     "    RuntimeError: boom at step 3"]
    # the local job stopped (no live process): Incomplete; the SLURM tasks left the queue
    # without `done`: Failed (they will never finish; `launch` resubmits them), with the reason
    (out / os.path.basename(jobs[4].output_dir) / "running").write_text(f"{socket.gethostname()} 999999999\n")
    _fake_bin(tmp_path, "squeue", f'echo "$@" >> "{calls}"\n')
    rc, text, _ = _main(capsys, *argv)
    assert text.splitlines()[-1] == "6 jobs: 1 done, 1 incomplete, 1 not launched, 0 running, 0 pending, 3 failed."
    rc, text, _ = _main(capsys, *argv, "--failed")
    assert "    SLURM job 77_1 left the queue without `done` (killed, node failure or time limit); " \
           f"log: no log at {out}/_submitit/77_1/77_1_0_log.err" in text.splitlines()


def test_launch_again_submits_not_launched_and_failed_only(tmp_path, capsys, monkeypatch):
    got = []
    monkeypatch.setitem(launchers.REGISTRY, "record", lambda jobs, options: got.append(jobs))
    out = tmp_path / "sw"
    argv = ["launch", "--datasets", "Debug28", "--algorithms", "ERM", "--n_hparams", "1", "--n_trials", "1",
            "--single_test_envs", "--output_dir", out, "--command_launcher", "record", "--skip_confirmation"]
    rc, text, _ = _main(capsys, *argv)
    assert rc == 0 and len(got[0]) == 3 and "Launched 3 jobs!" in text
    dirs = sorted(j.output_dir for j in got[0])
    assert all(os.path.isdir(d) for d in dirs)
    _write_done(out / os.path.basename(dirs[0]))
    _write(out / os.path.basename(dirs[1]) / "error.txt", "error: boom\n")
    rc, text, _ = _main(capsys, *argv)  # dirs[2]: Incomplete (crashed without a trace): left alone
    assert [j.output_dir for j in got[1]] == [dirs[1]]
    assert "3 jobs: 1 done, 1 incomplete, 0 not launched, 0 running, 0 pending, 1 failed." in text


def test_delete_incomplete_keeps_done_and_running(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["--datasets", "Debug28", "--algorithms", "ERM", "--n_hparams", "1", "--n_trials", "1",
            "--single_test_envs", "--output_dir", out, "--skip_confirmation"]
    cfg = _cfg(datasets=["Debug28"], n_hparams=1, n_trials=1, single_test_envs=True, data_dir="./data")
    dirs = [out / sweep.job_dir_name(a) for a in sweep.make_args_list(cfg)]
    _write_done(dirs[0])
    _write(dirs[1] / "running", f"{socket.gethostname()} {os.getpid()}\n")
    _write(dirs[2] / "out.txt", "")
    rc, text, _ = _main(capsys, "delete_incomplete", *argv)
    assert rc == 0 and [d.exists() for d in dirs] == [True, True, False]
    rc, text, _ = _main(capsys, "delete_all", *argv)
    assert [d.exists() for d in dirs] == [False, True, False]
    assert "Leaving 1 running or pending job(s) alone" in text


def test_paper_sweeps_have_domainbeds_budget_for_both_protocols(tmp_path, capsys):
    for name, n_envs in (("vlcs_paper.json", 4), ("terra_paper.json", 4)):
        rc, out, _ = _main(capsys, "status", "--config", name, "--output_dir", tmp_path / name)
        per_alg = (n_envs + n_envs * (n_envs - 1) // 2 + n_envs) * 20 * 3   # pairs + single source
        assert rc == 0 and out.strip().splitlines()[-1].startswith(f"{7 * per_alg} jobs: 0 done")
        cfg = json.load(open(os.path.join(sweep.SWEEPS_DIR, name)))
        assert cfg["algorithms"] == ["ERM", "SGT", "DRE", "GRADIA", "RES", "CARE", "ALIGN"]
        assert cfg["command_launcher"] == "slurm" and cfg["gpus_per_job"] == 1


def test_two_tasks_in_one_sweep_keep_each_jobs_identity():
    both = sweep.make_args_list(_cfg(task=["domain_generalization", "single_source"], n_trials=1,
                                     n_hparams=1, single_test_envs=True))
    dg = sweep.make_args_list(_cfg(n_trials=1, n_hparams=1, single_test_envs=True))
    ss = sweep.make_args_list(_cfg(task="single_source", n_trials=1, n_hparams=1))
    assert both == dg + ss
