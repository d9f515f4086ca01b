"""Trainer input a new user gets wrong, and files on shared disks that must not run code."""
import os

import pytest
import torch

from conftest import run_module


class _Payload:
    """Unpickling this runs a command: what a tampered checkpoint on a shared disk could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("flag", ["--steps", "--checkpoint_freq"])
def test_non_positive_steps_are_one_line_and_write_nothing(tmp_path, flag):
    out = tmp_path / "o"
    proc = run_module("domainbed_align.train", "--dataset", "Debug28", flag, "-5", "--output_dir", out,
                      check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {flag} must be a positive number of steps, got -5; "
                                   f"leave it out for the dataset's default")
    assert not out.exists()


def test_output_dir_under_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    proc = run_module("domainbed_align.train", "--dataset", "Debug28", "--output_dir",
                      tmp_path / "afile" / "run", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: cannot create --output_dir {tmp_path}/afile/run (Not a "
                                   f"directory); pass a folder you can write")


def test_checkpoint_and_model_load_without_running_code(tmp_path, capsys):
    """A tampered checkpoint.pt is refused with one line (weights_only), the payload never runs;
    the trainer's own files load with weights_only=True."""
    from domainbed_align.train import main
    from domainbed_align.lib.saved import load_run
    out = tmp_path / "run"
    args = ["--dataset", "Debug28", "--steps", "3", "--checkpoint_freq", "1", "--output_dir", str(out),
            "--hparams", '{"explain_n": 4}']
    out.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"next_step": 1, "x": _Payload(marker)}, out / "checkpoint.pt")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot read {out}/checkpoint.pt (UnpicklingError)")
    assert not marker.exists()
    os.remove(out / "checkpoint.pt")
    assert main(args) == 0
    saved = load_run(str(out))  # weights_only=True inside
    assert saved["args"]["steps"] == 3 and isinstance(saved["model_hparams"], dict)
    with open(out / "model.pkl", "rb") as f:
        assert torch.load(f, weights_only=True)["model_num_domains"] == 2
    # the checkpoint of an unfinished run holds only tensors and plain types too
    state_args = args[:-4] + ["--steps", "30", "--output_dir", str(tmp_path / "r2"), "--hparams",
                              '{"explain_n": 4}']
    from domainbed_align.train import Trainer, parse_args
    trainer = Trainer(parse_args(state_args))
    trainer.request_stop()
    from domainbed_align.train import Preempted
    with pytest.raises(Preempted):
        trainer()
    state = torch.load(tmp_path / "r2" / "checkpoint.pt", weights_only=True)
    assert state["next_step"] == 1 and isinstance(state["rng"]["python"][1], list)


def test_an_empty_split_scores_nan_instead_of_crashing():
    """holdout_fraction * n < 1 leaves an `out` split empty: NaN, not a torch.cat error."""
    import math
    from domainbed_align.evaluation import evaluate_split
    out = evaluate_split(algorithm=None, dataset=None, indices=[], explain_positions=None,
                         num_classes=3, device="cpu")
    assert math.isnan(out["acc"]) and math.isnan(out["auc"]) and set(out) == {"acc", "auc"}
