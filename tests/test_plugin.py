"""The plug-in for an upstream DomainBed checkout, against a stand-in with upstream's layout
(tests/data/fake_upstream; upstream itself is not on PyPI and the tests run offline)."""
import contextlib
import io
import json
import os
import runpy
import subprocess
import sys

import pytest

from conftest import REPO
from domainbed_align import hparams_registry, plugin
from domainbed_align.lib.misc import seed_hash

FAKE_UPSTREAM = os.path.join(REPO, "tests", "data", "fake_upstream")


@pytest.fixture
def upstream(monkeypatch):
    """Upstream's package importable, the hook installed; both undone afterwards."""
    def forget():
        for name in [m for m in sys.modules if m == "domainbed" or m.startswith("domainbed.")]:
            del sys.modules[name]
    forget()
    monkeypatch.syspath_prepend(FAKE_UPSTREAM)
    meta_path = list(sys.meta_path)
    plugin.install()
    plugin.install()  # idempotent
    assert sum(isinstance(f, plugin.UpstreamFinder) for f in sys.meta_path) == 1
    yield
    sys.meta_path[:] = meta_path
    forget()


def _upstream_train(*argv):
    out = io.StringIO()
    old = sys.argv
    sys.argv = ["train.py", *argv]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module("domainbed.scripts.train", run_name="__main__", alter_sys=False)
    finally:
        sys.argv = old
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_enable_disable_status(tmp_path, capsys):
    assert plugin.main(["enable", "--target", str(tmp_path)]) == 0
    pth = tmp_path / plugin.PTH_NAME
    assert pth.read_text() == plugin.PTH_LINE and pth.read_text().startswith("import ")
    assert plugin.main(["status", "--target", str(tmp_path)]) == 0
    assert "plug-in: enabled" in capsys.readouterr().out
    assert plugin.main(["disable", "--target", str(tmp_path)]) == 0
    assert not pth.exists()
    assert plugin.main(["disable", "--target", str(tmp_path)]) == 0
    assert "already disabled" in capsys.readouterr().out
    assert plugin.main(["enable", "--target", str(tmp_path / "nope")]) == 2
    assert plugin.site_packages() in {p for p in sys.path}  # the default target is a real site dir


def test_upstream_registries_gain_our_names(upstream):
    from domainbed import algorithms, datasets
    from domainbed_align.algorithms import ALGORITHMS, get_algorithm_class
    assert algorithms.ALGORITHMS[:2] == ["ERM", "IRM"]
    assert algorithms.ALGORITHMS[2:] == [n for n in ALGORITHMS if n != "ERM"]
    assert algorithms.get_algorithm_class("ALIGN") is get_algorithm_class("ALIGN")
    assert algorithms.get_algorithm_class("ERM").__module__ == "domainbed.algorithms"  # theirs stays
    assert datasets.DATASETS == ["Debug28", "SpuriousDigits"]
    assert datasets.num_environments("SpuriousDigits") == 4
    plugin.install()  # again, with the modules already imported: nothing doubles
    assert algorithms.ALGORITHMS.count("ALIGN") == 1 and datasets.DATASETS.count("SpuriousDigits") == 1


def test_upstream_hparams_are_wrapped(upstream):
    from domainbed import hparams_registry as theirs
    hp = theirs.default_hparams("DRE", "SpuriousDigits")
    assert (hp["lr"], hp["batch_size"]) == (1e-3, 64)  # our 28 px dataset: small-image defaults
    assert hp["resnet50_augmix"] is True and hp["dre_weight"] == 1.0 and "cnn_width" in hp
    seed = seed_hash(3, 0)
    drawn, ours = theirs.random_hparams("ALIGN", "VLCS", seed), hparams_registry.random_hparams("ALIGN", "VLCS", seed)
    assert drawn["align_l3"] == ours["align_l3"] and drawn["align_warmup_steps"] == ours["align_warmup_steps"]
    assert drawn["lr"] == theirs._hparams.__wrapped__("ALIGN", "VLCS", seed)["lr"][1]  # shared: upstream's
    assert theirs.default_hparams("IRM", "Debug28") == {k: d for k, (d, _) in
                                                        theirs._hparams.__wrapped__("IRM", "Debug28", 0).items()}


@pytest.mark.parametrize("name", ["DRE", "SGT", "ALIGN"])
def test_upstream_trainer_runs_our_algorithm(upstream, name):
    out = _upstream_train("--algorithm", name, "--dataset", "SpuriousDigits", "--steps", "2",
                          "--test_envs", "3", "--hparams", '{"batch_size": 4}')
    assert out["algorithm"].startswith("domainbed_align.algorithms.")
    assert out["logits_shape"] == [1, 10] and out["n_envs"] == 4
    assert "loss" in out["step_vals"] and all(isinstance(v, float) for v in out["step_vals"].values())


def test_mask_based_algorithm_in_upstream_trainer_is_one_clear_line(upstream):
    with pytest.raises(ValueError) as e:
        _upstream_train("--algorithm", "GRADIA", "--dataset", "SpuriousDigits", "--steps", "1",
                        "--test_envs", "3", "--hparams", '{"batch_size": 4}')
    msg = str(e.value)
    assert "\n" not in msg and "GRADIA needs (x, y, m) batches" in msg and "python -m domainbed_align.train" in msg


@pytest.mark.slow
def test_enable_in_a_fresh_environment_reaches_sweep_subprocesses(tmp_path):
    """Real start-up path: a new venv, `plugin enable` into its site-packages, then upstream's
    sweep (run from the checkout) starts train subprocesses that know our algorithms."""
    import sysconfig
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = str(env_dir / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # this environment's packages (torch, ...) and our source, as plain path entries
    with open(os.path.join(purelib, "deps.pth"), "w") as f:
        f.write(f"{REPO}\n{sysconfig.get_paths()['purelib']}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([python, "-m", "domainbed_align.plugin", "enable"], check=True, cwd=tmp_path, env=env,
                   capture_output=True)
    assert os.path.exists(os.path.join(purelib, plugin.PTH_NAME))
    proc = subprocess.run([python, "-m", "domainbed.scripts.sweep", "launch", "--algorithms", "DRE", "ERM",
                           "--datasets", "SpuriousDigits"], cwd=FAKE_UPSTREAM, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["algorithm"] for r in lines] == ["domainbed_align.algorithms.dre.DRE", "domainbed.algorithms.ERM"], \
        proc.stderr[-2000:]
    subprocess.run([python, "-m", "domainbed_align.plugin", "disable"], check=True, cwd=tmp_path, env=env,
                   capture_output=True)
    proc = subprocess.run([python, "-m", "domainbed.scripts.train", "--algorithm", "DRE"], cwd=FAKE_UPSTREAM,
                          env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "Algorithm not found: DRE" in proc.stderr
