"""benchmarks/precision_agreement.py: fp32 vs bf16 runs compared in units of their standard error."""
import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location(
        "precision_agreement", os.path.join(REPO, "benchmarks", "precision_agreement.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(root, name, test_acc, val=0.9, step_time=0.1, done=True):
    folder = root / name
    folder.mkdir()
    record = {"step": 299, "step_time": step_time, "args": {"test_envs": [0]},
              "env0_in_acc": test_acc, "env0_in_comp": 0.2, "env0_out_acc": 0.1,
              "env1_out_acc": val, "env2_out_acc": val, "env3_out_acc": val}
    (folder / "results.jsonl").write_text(json.dumps({"step": 0}) + "\n" + json.dumps(record) + "\n")
    if done:
        (folder / "done").write_text("done")


def test_differences_are_judged_against_their_standard_error(tmp_path, capsys):
    pa = _module()
    for s, (a, b) in enumerate([(0.70, 0.71), (0.72, 0.70), (0.74, 0.73)]):
        _run(tmp_path, f"fp32_ERM_seed{s}", a, step_time=0.2)
        _run(tmp_path, f"bf16_ERM_seed{s}", b)
        _run(tmp_path, f"fp32_ALIGN_seed{s}", 0.70 + 0.01 * s)
        _run(tmp_path, f"bf16_ALIGN_seed{s}", 0.90 + 0.01 * s)  # 20 points apart, s.e. 0.8 points
    _run(tmp_path, "bf16_ALIGN_seed9", 0.0, done=False)  # unfinished: ignored
    assert pa.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # ERM test accuracy: fp32 0.72 +- 0.0115, bf16 0.7133 +- 0.0088: diff -0.007, 0.46 s.e.
    assert "ERM       test_acc         0.720±0.012       0.713±0.009    -0.007     0.46  agree" in out
    assert "ALIGN     test_acc" in out and "DIFFER" in out.split("ALIGN     test_acc")[1].splitlines()[0]
    assert "ERM       step_s" in out and "0.50x" in out  # bf16 / fp32 seconds per step
    assert "ALIGN     val_acc          0.900±0.000       0.900±0.000     0.000     0.00  agree" in out
    assert "{('ALIGN', 'bf16'): 3" in out
    assert out.rstrip().endswith("(|diff| <= 2 s.e.): NO")


def test_mean_se():
    pa = _module()
    assert pa.mean_se([1.0, 2.0, 3.0]) == (2.0, 1.0 / 3 ** 0.5)
