"""Issue 19: the domain-aware maskers (ALIGN_VREx, ALIGN_IRM). Each new term against its formula
on small tensors worked out by hand, the masker's loss as ALIGN's plus the term, the domain
index that update() hands the masker, the search space, the plug-in and the sweep."""
import json
import math
import os

import pytest
import torch

from domainbed_align import hparams_registry, sweep
from domainbed_align.algorithms import ALGORITHMS, get_algorithm_class
from domainbed_align.algorithms import align as align_module
from domainbed_align.algorithms.align_irm import irm_penalty
from domainbed_align.algorithms.align_vrex import domain_risks, vrex_penalty
from test_align import _Capture, _ConstantMask
from test_plugin import _upstream_train, upstream  # noqa: F401  (fixture)

NEW = ("ALIGN_VREx", "ALIGN_IRM")
L3 = math.log(3.0)


def _two_class(rows):
    """[(a, b, y, domain), ...] -> logits (N, 2), y (N,), domains (N,)."""
    logits = torch.tensor([[a, b] for a, b, _, _ in rows], dtype=torch.float64)
    y = torch.tensor([r[2] for r in rows])
    d = torch.tensor([r[3] for r in rows])
    return logits, y, d


# Three domains, unequal sizes, interleaved in the batch. With two classes and logits (a, b):
# (ln3, 0) y=0 -> p_y = 3/4, CE ln(4/3); (0, 0) -> CE ln 2; (0, ln3) y=0 -> p_y = 1/4, CE ln 4.
ROWS = [(L3, 0.0, 0, 0), (0.0, 0.0, 0, 1), (0.0, 0.0, 1, 0), (0.0, L3, 0, 2),
        (L3, 0.0, 0, 1), (L3, 0.0, 0, 2), (0.0, L3, 1, 0)]


def test_domain_risks_by_hand():
    logits, y, d = _two_class(ROWS)
    # domain 0: ln(4/3), ln 2, ln(4/3) (last: (0, ln3) with y=1 has p_y 3/4); domain 1: ln 2,
    # ln(4/3); domain 2: ln 4, ln(4/3)
    r0 = (2 * math.log(4 / 3) + math.log(2)) / 3
    r1 = (math.log(2) + math.log(4 / 3)) / 2
    r2 = (math.log(4) + math.log(4 / 3)) / 2
    assert domain_risks(logits, y, d).tolist() == pytest.approx([r0, r1, r2], rel=1e-12)


def test_vrex_penalty_is_the_population_variance_of_domain_risks():
    logits, y, d = _two_class(ROWS)
    r = [(2 * math.log(4 / 3) + math.log(2)) / 3, (math.log(2) + math.log(4 / 3)) / 2,
         (math.log(4) + math.log(4 / 3)) / 2]
    mean = sum(r) / 3
    expected = sum((v - mean) ** 2 for v in r) / 3  # population variance, not / (E - 1)
    assert float(vrex_penalty(logits, y, d)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.032911, abs=1e-6)  # the number, written out
    # one domain: no spread; the same risk in every domain: none either
    assert float(vrex_penalty(logits, y, torch.zeros_like(d))) == 0.0
    same = torch.tensor([[L3, 0.0]] * 4, dtype=torch.float64)
    assert float(vrex_penalty(same, torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 1]))) == \
        pytest.approx(0.0, abs=1e-15)


def _dce_dscale(a, b, y):
    """d/dw CE(w (a, b), y) at w = 1 for two classes: E_p[z] - z_y."""
    pa = math.exp(a) / (math.exp(a) + math.exp(b))
    return pa * a + (1 - pa) * b - (a, b)[y]


def test_irm_penalty_by_hand():
    # d/dw at w=1 per sample (negative where the prediction is right, positive where wrong):
    # (ln3, 0) y=0: -ln3/4; (0, 0): 0; (0, ln3) y=0: +3 ln3/4; (0, ln3) y=1: -ln3/4.
    rows = [(L3, 0.0, 0, 0), (0.0, L3, 0, 1), (0.0, 0.0, 0, 0), (L3, 0.0, 0, 1),
            (0.0, L3, 0, 1), (0.0, L3, 1, 1), (0.0, L3, 0, 0), (0.0, L3, 1, 0)]
    logits, y, d = _two_class(rows)
    g = [_dce_dscale(a, b, yy) for a, b, yy, _ in rows]
    assert g[:4] == pytest.approx([-L3 / 4, 3 * L3 / 4, 0.0, -L3 / 4])
    assert g[5] == pytest.approx(-L3 / 4)
    # Domain 0 = batch positions 0, 2, 6, 7: even halves (its samples 0, 2): -ln3/4, +3ln3/4,
    # mean ln3/4; odd (1, 3): 0, -ln3/4, mean -ln3/8; product -ln3^2/32.
    # Domain 1 = positions 1, 3, 4, 5: even 3ln3/4, 3ln3/4; odd -ln3/4, -ln3/4: -3 ln3^2/16.
    # Mean over the two domains: -7 ln3^2 / 64. (First and second halves instead of even and
    # odd positions would give +ln3^2/16 for domain 1; a sum over domains, twice the value.)
    assert float(irm_penalty(logits, y, d).detach()) == pytest.approx(-7 * L3 ** 2 / 64, rel=1e-12)
    # a domain whose halves agree: the product of two equal gradients is their square
    logits, y, d = _two_class([(L3, 0.0, 0, 0)] * 4)
    assert float(irm_penalty(logits, y, d).detach()) == pytest.approx(L3 ** 2 / 16, rel=1e-12)
    # a domain with one sample in the batch is left out; none left: 0, with a graph
    logits, y, d = _two_class([(L3, 0.0, 0, 0)] * 4 + [(0.0, L3, 0, 1)])
    assert float(irm_penalty(logits, y, d).detach()) == pytest.approx(L3 ** 2 / 16, rel=1e-12)
    lone = irm_penalty(logits[-1:].clone().requires_grad_(), y[-1:], d[-1:])
    assert float(lone.detach()) == 0.0 and lone.requires_grad


def test_irm_penalty_has_a_gradient_through_the_logits():
    """The masker gets IRM's gradient through the kept part's logits (create_graph)."""
    logits = torch.tensor([[1.0, 0.0], [0.5, 0.2], [0.0, 2.0], [0.3, 0.1]], requires_grad=True)
    y, d = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 0, 0])
    (grad,) = torch.autograd.grad(irm_penalty(logits, y, d), logits)
    assert grad.abs().sum() > 0


def _alg(name, **overrides):
    hp = hparams_registry.default_hparams(name, "SpuriousDigits")
    hp.update(overrides)
    torch.manual_seed(0)
    return get_algorithm_class(name)((3, 28, 28), 10, 3, hp)


@pytest.mark.parametrize("name,weight,penalty", [("ALIGN_VREx", "align_vrex_lambda", vrex_penalty),
                                                 ("ALIGN_IRM", "align_irm_lambda", irm_penalty)])
def test_masker_loss_is_aligns_plus_the_weighted_term(monkeypatch, name, weight, penalty):
    alg = _alg(name, align_l1=0.3, align_l2=0.7, **{weight: 2.5})
    torch.manual_seed(3)
    alg.network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, 10))
    x, y = torch.randn(6, 3, 28, 28), torch.tensor([0, 3, 3, 7, 9, 1])
    d = torch.tensor([0, 1, 2, 0, 1, 2])
    m = torch.zeros(6, 1, 28, 28)
    m[:, :, :14] = 0.8
    alg.masker = _ConstantMask(m)
    capture = _Capture()
    monkeypatch.setattr(align_module, "_descend", capture)
    vals = alg.masker_step(x, y, d)
    with torch.no_grad():
        kept = alg.network(x * m)
        p_kept = kept.softmax(1)[torch.arange(6), y]
        p_removed = alg.network(x * (1 - m)).softmax(1)[torch.arange(6), y]
    dist = ((p_kept - p_removed - 1) ** 2).mean()
    align_loss = dist + 0.3 * 0.4 + 0.7 * 0.5 * (0.8 / 27)
    term = penalty(kept.detach(), y, d)
    assert abs(float(term.detach())) > 1e-4  # the check below would not see the term otherwise
    assert float(capture.losses[0].detach()) == pytest.approx(float((align_loss + 2.5 * term).detach()), rel=1e-5)
    assert vals[get_algorithm_class(name).PENALTY] == pytest.approx(float(term.detach()), rel=1e-5)


@pytest.mark.parametrize("name", NEW)
def test_update_hands_the_masker_each_samples_training_domain(monkeypatch, name):
    alg = _alg(name, align_warmup_steps=0, align_masker_warmup_steps=0)
    seen = []
    real = alg.masker_penalty
    monkeypatch.setattr(alg, "masker_penalty", lambda kl, y, d: seen.append(d.clone()) or real(kl, y, d))
    g = torch.Generator().manual_seed(1)
    mbs = [(torch.randn(n, 3, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in (3, 4, 2)]
    vals = alg.update(mbs)
    assert seen[0].tolist() == [0] * 3 + [1] * 4 + [2] * 2
    assert get_algorithm_class(name).PENALTY in vals and "align" in vals


def test_align_itself_adds_no_term():
    alg = _alg("ALIGN", align_warmup_steps=0)
    g = torch.Generator().manual_seed(1)
    mbs = [(torch.randn(4, 3, 28, 28, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(3)]
    assert not {"mask_vrex", "mask_irm"} & set(alg.update(mbs))


def _drawn(name, seeds=range(1, 25)):
    """Names whose random-search value varies over seeds (the drawn hparams)."""
    draws = [hparams_registry.random_hparams(name, "SpuriousDigits", s) for s in seeds]
    return {k for k in draws[0] if len({json.dumps(d[k]) for d in draws}) > 1}, draws


@pytest.mark.parametrize("name,weight", [("ALIGN_VREx", "align_vrex_lambda"), ("ALIGN_IRM", "align_irm_lambda")])
def test_search_space_is_aligns_size_with_l2_traded_for_the_new_weight(name, weight):
    align_drawn, align_draws = _drawn("ALIGN")
    drawn, draws = _drawn(name)
    assert drawn == (align_drawn - {"align_l2"}) | {weight}
    assert len(drawn) == len(align_drawn)
    for a, b in zip(align_draws, draws):  # the same seed draws the same shared values
        assert {k: b[k] for k in drawn - {weight}} == {k: a[k] for k in drawn - {weight}}
        assert b["align_l2"] == 0.1 and 1.0 <= b[weight] <= 100.0
    default = hparams_registry.default_hparams(name, "SpuriousDigits")
    assert set(default) == set(hparams_registry.default_hparams("ALIGN", "SpuriousDigits")) | {weight}
    assert default[weight] == 10.0


def test_registered_after_align_in_table_order():
    assert ALGORITHMS[ALGORITHMS.index("ALIGN"):] == ["ALIGN", *NEW]


@pytest.mark.parametrize("name", NEW)
def test_upstream_trainer_runs_them_past_the_warm_up(upstream, name):  # noqa: F811
    out = _upstream_train("--algorithm", name, "--dataset", "SpuriousDigits", "--steps", "2",
                          "--test_envs", "3", "--hparams",
                          '{"batch_size": 4, "align_warmup_steps": 0, "align_masker_warmup_steps": 0}')
    assert out["algorithm"] == f"domainbed_align.algorithms.{name.lower()}.{name}"
    assert out["logits_shape"] == [1, 10]
    assert get_algorithm_class(name).PENALTY in out["step_vals"] and "align" in out["step_vals"]


def _sweep_file(name):
    """A committed sweep file as a config; keys this checkout's sweep does not know yet must be
    the ID test split's (issue 18 adds `idtest_fraction` to the sweep)."""
    raw = json.load(open(os.path.join(sweep.SWEEPS_DIR, name)))
    cfg = {k: v for k, v in raw.items() if not k.startswith("_")}
    assert set(cfg) - set(sweep.DEFAULTS) <= {"idtest_fraction"}
    return raw, dict(sweep.DEFAULTS, **{k: v for k, v in cfg.items() if k in sweep.DEFAULTS})


CELLS = {"patch95": ("patch", 0.95), "patch80": ("patch", 0.8),
         "background95": ("background", 0.95), "background80": ("background", 0.8)}


@pytest.mark.parametrize("tag", CELLS)
def test_beyond_align_sweeps_have_aligns_budget_one_cell_each_and_say_their_size(tag):
    raw, cfg = _sweep_file(f"digits_beyond_align_{tag}.json")
    assert cfg["algorithms"] == ["ALIGN", *NEW] and cfg["test_envs"] == [3]
    assert raw["idtest_fraction"] == 0.2
    assert (cfg["steps"], cfg["n_hparams_from"], cfg["n_hparams"]) == (800, 0, 5) and cfg["n_trials"] >= 10
    cue, agreement = CELLS[tag]
    assert json.loads(cfg["hparams"]) == {"batch_size": 16, "explain_n": 32, "digits_cue": cue,
                                          "cue_agreement": agreement}
    assert cfg["output_dir"] == f"results/sweeps/digits_beyond_align_{tag}"  # a folder per cell
    main = json.load(open(os.path.join(sweep.SWEEPS_DIR, "digits_main.json")))
    for name in cfg["algorithms"]:  # ALIGN's schedule for all three, as in the main sweep
        assert cfg["algorithm_hparams"][name] == main["algorithm_hparams"]["ALIGN"]
    jobs = sweep.make_args_list(cfg)
    assert all(json.loads(j["hparams"])["cue_agreement"] == agreement for j in jobs)
    assert len(jobs) == 3 * 5 * cfg["n_trials"]
    assert f"= {len(jobs)} runs" in raw["_comment"]
    # pairs: every ALIGN run has its partner in each new objective (same trial, hparams seed)
    by_alg = {a: {(j["trial_seed"], j["hparams_seed"]) for j in jobs if j["algorithm"] == a}
              for a in cfg["algorithms"]}
    assert by_alg["ALIGN"] == by_alg["ALIGN_VREx"] == by_alg["ALIGN_IRM"]


def test_sweep_command_launches_them_like_any_algorithm(tmp_path, capsys):
    """`sweep launch` with the new names and the patch95 cell's flags (dummy launcher: the
    registries and hparam checks run, nothing trains); every job's hparams are valid."""
    _, cfg = _sweep_file("digits_beyond_align_patch95.json")
    argv = ["launch", "--datasets", "SpuriousDigits", "--algorithms", "ALIGN", *NEW,
            "--test_envs", "3", "--n_trials", "2", "--n_hparams", "2", "--steps", "800",
            "--hparams", cfg["hparams"], "--algorithm_hparams", json.dumps(cfg["algorithm_hparams"]),
            "--output_dir", str(tmp_path / "out"), "--command_launcher", "dummy", "--skip_confirmation"]
    capsys.readouterr()
    assert sweep.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert sum(line.startswith("Dummy launcher:") for line in out.splitlines()) == 3 * 2 * 2
    for name in NEW:
        assert f"--algorithm {name}" in out
    for job in sweep.make_args_list(cfg):  # all 150 jobs of the committed cell resolve their hparams
        hp = hparams_registry.run_hparams(job["algorithm"], job["dataset"], job["hparams_seed"],
                                          job["trial_seed"], json.loads(job["hparams"]))
        assert (hp["digits_cue"], hp["cue_agreement"], hp["align_warmup_steps"]) == ("patch", 0.95, 400)


def test_density_figure_script_reads_cells_and_pairs_cue_with_strokes_within_a_model(tmp_path):
    """results/beyond_align_densities.py: cue and agreement from the CSV's name, only the
    training-domain selection, and criterion (1)'s difference taken within each selected model."""
    import importlib.util
    import pandas as pd
    path = os.path.join(os.path.dirname(__file__), os.pardir, "results", "beyond_align_densities.py")
    spec = importlib.util.spec_from_file_location("beyond_align_densities", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [("training_domain", "ALIGN", 2.0, 1.0), ("training_domain", "ALIGN", 3.0, 1.0),
            ("training_domain", "ALIGN", 4.0, 4.0), ("oracle", "ALIGN", 9.0, 0.0)]
    csv = tmp_path / "digits_beyond_align_patch95.csv"
    pd.DataFrame(rows, columns=["selection", "algorithm", "ood_mask_density_cue",
                                "ood_mask_density_strokes"]).to_csv(csv, index=False)
    cells = mod.read_cells([str(csv)])
    assert len(cells) == 3 and set(cells["cue"]) == {"patch"} and set(cells["agreement"]) == {0.95}
    points = mod.density_points(cells)
    # the tables' standard error (DomainBed's: population std / sqrt(n)), values 2, 3, 4
    se = math.sqrt(2 / 3) / math.sqrt(3)
    assert points["patch", "ALIGN", "cue"] == [(0.95, 3.0, pytest.approx(se), 3)]
    d = mod.cue_minus_strokes(cells)["patch", "ALIGN", 0.95]
    assert (d.mean, d.n) == (pytest.approx(1.0), 3)
    # paired: the spread of the differences 1, 2, 0 (sd 1), not of either region's densities
    assert d.low == pytest.approx(1.0 - 4.302653 * 1.0 / math.sqrt(3), abs=1e-5)
    with pytest.raises(SystemExit, match="expected digits_beyond_align"):
        mod.read_cells([str(tmp_path / "cells.csv")])
