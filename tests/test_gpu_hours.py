"""benchmarks/gpu_hours.py: the step-cost table it reads and the hours it computes, by hand."""
import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location("gpu_hours", os.path.join(REPO, "benchmarks",
                                                                             "gpu_hours.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TABLE = """device: cuda

small CNN 28px, batch 192 (3 domains x 64)
algorithm        ms  time x    GFLOP  FLOP x  time/FLOP
ERM             2.5    1.00     2.15    1.00       1.00

ResNet-50 224px, batch 96 (3 domains x 32)
algorithm        ms  time x    GFLOP  FLOP x  time/FLOP
ERM            36.0    1.00  2331.54    1.00       1.00
ALIGN         180.0    5.00  7909.45    3.39       1.02

target time ratio <= 1.2 x FLOP ratio for every algorithm: NOT met
"""


def test_hours_follow_steps_costs_and_training_domains(tmp_path):
    gh = _module()
    costs = tmp_path / "costs.txt"
    costs.write_text(TABLE)
    assert gh.resnet_costs(str(costs)) == {"ERM": 36.0, "ALIGN": 180.0}   # not the small CNN
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"datasets": ["VLCS"], "algorithms": ["ERM", "ALIGN"],
                               "task": ["domain_generalization", "single_source"],
                               "single_test_envs": True, "n_hparams": 1, "n_trials": 2,
                               "steps": 1000, "output_dir": str(tmp_path / "o")}))
    rows = gh.sweep_hours(str(cfg), gh.resnet_costs(str(costs)))
    # ERM, leave-one-out: 4 test envs x 2 trials, 3 training domains: 8 x 1000 x 36 ms
    assert rows["VLCS", "ERM", "domain_generalization"] == [8, pytest.approx(8 * 36 / 3600)]
    # single-source: one training domain, a third of the measured 3-domain batch
    assert rows["VLCS", "ALIGN", "single_source"] == [8, pytest.approx(8 * 60 / 3600)]
    bad = tmp_path / "bad.txt"
    bad.write_text("device: cpu\n")
    with pytest.raises(SystemExit, match="no 'ResNet-50' table"):
        gh.resnet_costs(str(bad))


def test_two_cost_tables_give_each_total_and_its_share_of_the_first(tmp_path, capsys):
    """float32 and bf16 tables side by side (issue 23): a table with every step at half the cost
    gives half the hours."""
    gh = _module()
    fp32, bf16 = tmp_path / "fp32.txt", tmp_path / "bf16.txt"
    fp32.write_text(TABLE)
    bf16.write_text(TABLE.replace("36.0    1.00", "18.0    1.00").replace("180.0    5.00", "90.0    5.00"))
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"datasets": ["VLCS"], "algorithms": ["ERM", "ALIGN"],
                               "n_hparams": 1, "n_trials": 1, "steps": 3600,
                               "output_dir": str(tmp_path / "o")}))
    assert gh.main(["--costs", str(fp32), "--costs", str(bf16), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"GPU hours, 100% of {fp32}" in out and f"GPU hours, 50% of {fp32}" in out
    assert out.count("all sweeps:") == 2


def test_a_table_without_an_algorithm_of_the_sweep_is_one_clear_error(tmp_path):
    gh = _module()
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"datasets": ["VLCS"], "algorithms": ["ERM", "SGT", "DRE"],
                               "n_hparams": 1, "n_trials": 1, "output_dir": str(tmp_path / "o")}))
    with pytest.raises(SystemExit, match="table has no DRE, SGT; run benchmarks/step_cost.py"):
        gh.sweep_hours(str(cfg), {"ERM": 36.0})
