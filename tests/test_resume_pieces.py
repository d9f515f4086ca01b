"""Resume pieces in the quick subset: RNG state and checkpoint round trips (through the
trainer's own save/load, whatever the file format), and the trainer's pure helpers."""
import copy
import io
import os
import random
import shutil
import signal

import numpy as np
import pytest
import torch

from domainbed_align import train
from domainbed_align.lib.errors import ConfigError


def _draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    _draws()
    state = train._rng_state()
    assert set(state) >= {"python", "numpy", "torch"}
    expected = _draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    assert _draws() != expected
    train._set_rng_state(state)
    assert _draws() == expected
    train._set_rng_state(state)                    # the saved state is not consumed
    assert _draws() == expected


def _trainer(out, **kw):
    cfg = dict(dataset="Debug28", algorithm="ERM", test_envs=(0,), output_dir=str(out),
               hparams='{"explain_n": 0, "batch_size": 8}')
    cfg.update(kw)
    t = train.Trainer(train.TrainConfig(**cfg))
    t._setup()
    return t


def _update(t, step):
    batches = [tuple(b[:2]) for b in [t.dataset[i].batch(torch.arange(step, step + 8))
                                      for i in t.train_envs]]
    return t.algorithm.update(batches)


def _params(t):
    return {k: v.clone() for k, v in t.algorithm.state_dict().items()}


def test_checkpoint_round_trip(tmp_path):
    t = _trainer(tmp_path)
    assert t._load_checkpoint() is None            # nothing saved yet
    _update(t, 0)
    saved_params = _params(t)
    saved_opt = {k: copy.deepcopy(o.state_dict()) for k, o in t.algorithm.optimizers().items()}
    assert all(s["state"] for s in saved_opt.values())      # Adam moments exist
    records = [{"step": 0, "env0_in_acc": 0.5}]
    torch.manual_seed(3)
    t._save_checkpoint(7, {"loss": [0.25, 0.5]}, records)
    after_save = _draws()
    _update(t, 8)                                  # move weights, optimiser and RNG on
    _update(t, 16)
    assert any(not torch.equal(saved_params[k], v) for k, v in t.algorithm.state_dict().items())

    state = t._load_checkpoint()
    assert state["next_step"] == 7 and state["records"] == records
    assert dict(state["checkpoint_vals"]) == {"loss": [0.25, 0.5]}
    for k, v in t.algorithm.state_dict().items():
        assert torch.equal(v, saved_params[k]), k
    for k, o in t.algorithm.optimizers().items():
        got, want = o.state_dict(), saved_opt[k]
        assert got["param_groups"] == want["param_groups"]
        for p, s in want["state"].items():
            for name, value in s.items():
                assert torch.equal(torch.as_tensor(got["state"][p][name]), torch.as_tensor(value))
    assert _draws() == after_save
    # a fresh trainer in the same folder continues from the same state
    t2 = _trainer(tmp_path)
    assert t2._load_checkpoint()["next_step"] == 7
    assert all(torch.equal(v, saved_params[k]) for k, v in t2.algorithm.state_dict().items())
    # the trained result is the same whichever trainer takes the next step
    assert _update(t, 8) == _update(t2, 8)


def test_checkpoint_of_other_arguments_is_refused(tmp_path):
    t = _trainer(tmp_path)
    t._save_checkpoint(1, {}, [])
    other = _trainer(tmp_path, trial_seed=1, hparams_seed=2)
    with pytest.raises(ConfigError, match=r"holds a run with other arguments \(differs in: "
                                          r"hparams_seed, trial_seed\); use another --output_dir"):
        other._load_checkpoint()
    # the output folder is not part of a run's identity: a moved folder resumes
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(os.path.join(tmp_path, train.CHECKPOINT_FILE), moved / train.CHECKPOINT_FILE)
    assert _trainer(moved)._load_checkpoint()["next_step"] == 1


def test_records_file_is_rewritten_whole(tmp_path):
    t = _trainer(tmp_path)
    t._write_records([{"step": 0, "b": 1, "a": 2}, {"step": 2}])
    assert (tmp_path / "results.jsonl").read_text() == \
        '{"a": 2, "b": 1, "step": 0}\n{"step": 2}\n'
    t._write_records([{"step": 0}])
    assert (tmp_path / "results.jsonl").read_text() == '{"step": 0}\n'


def test_identity_is_the_record_args_without_output_dir(tmp_path):
    t = _trainer(tmp_path, test_envs=(0, 2))
    ident = t._identity()
    assert "output_dir" not in ident and ident["test_envs"] == [0, 2]
    assert ident == {k: v for k, v in t.config.record_args().items() if k != "output_dir"}


# --------------------------------------------------------------------------- pure helpers
def test_parse_args_gives_domainbed_args():
    c = train.parse_args(["--dataset", "Debug28", "--test_envs", "1", "2", "--steps", "3",
                          "--hparams", '{"lr": 0.1}', "--skip_model_save"])
    assert c.test_envs == (1, 2) and c.steps == 3 and c.skip_model_save
    args = c.record_args()
    assert args["test_envs"] == [1, 2] and isinstance(args["test_envs"], list)
    assert args == {"dataset": "Debug28", "algorithm": "ERM", "test_envs": [1, 2], "data_dir": "",
                    "task": "domain_generalization", "hparams": '{"lr": 0.1}',
                    "hparams_seed": 0, "trial_seed": 0, "seed": 0, "steps": 3,
                    "checkpoint_freq": None, "output_dir": "train_output",
                    "holdout_fraction": 0.2, "uda_holdout_fraction": 0.0,
                    "skip_model_save": True, "save_model_every_checkpoint": False,
                    "mask_dir": None}
    assert train.parse_args([]) == train.TrainConfig()
    with pytest.raises(SystemExit):
        train.parse_args(["--task", "other"])


@pytest.mark.parametrize("text,expected", [(None, {}), ("", {}), ('{"lr": 0.5}', {"lr": 0.5})])
def test_parse_hparams_json(text, expected):
    assert train._parse_hparams_json(text) == expected


@pytest.mark.parametrize("text,message", [
    ("{lr: 1}", r"--hparams is not valid JSON \(Expecting property name enclosed in double "
                r"quotes at char 1\): '\{lr: 1\}'; example: --hparams '\{\"lr\": 1e-4\}'"),
    ("[1]", r"--hparams must be a JSON object like '\{\"lr\": 1e-4\}', got '\[1\]'"),
])
def test_parse_hparams_json_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        train._parse_hparams_json(text)


def test_one_line():
    assert train.one_line(ConfigError("bad thing")) == "bad thing"
    assert train.one_line(ValueError("")) == "ValueError"
    wrapped = ConfigError("Caught ConfigError in DataLoader worker process 0.\nTraceback:\n"
                          "domainbed_align.lib.errors.ConfigError: missing mask for a.png\n")
    assert train.one_line(wrapped) == "missing mask for a.png"
    assert train.one_line(RuntimeError("x\nlast line")) == "last line"


def test_tee_writes_both(tmp_path):
    stream = io.StringIO()
    tee = train._Tee(stream, str(tmp_path / "out.txt"))
    tee.write("a\n")
    tee.write("b")
    tee.flush()
    assert stream.getvalue() == "a\nb" and (tmp_path / "out.txt").read_text() == "a\nb"
    assert tee.isatty() is False
    tee.file.close()
    tee2 = train._Tee(io.StringIO(), str(tmp_path / "out.txt"))   # appends
    tee2.write("c")
    tee2.file.close()
    assert (tmp_path / "out.txt").read_text() == "a\nbc"


def test_mem_gb_is_peak_resident_memory_in_gib():
    import resource
    if torch.cuda.is_available():
        pytest.skip("CUDA: measured by torch")
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert train._mem_gb() == pytest.approx(kib / 1024.0**2, rel=0.05)
    assert 0.01 < train._mem_gb() < 64


def test_request_stop_records_the_signal(tmp_path):
    t = train.Trainer(train.TrainConfig(output_dir=str(tmp_path)))
    assert t._stop_signal is None
    t.request_stop()
    assert t._stop_signal == signal.SIGTERM
    t.request_stop(signal.SIGUSR2)
    assert t._stop_signal == signal.SIGUSR2


def test_cuda_rng_state_is_saved_and_restored_when_present(monkeypatch):
    """The CUDA branch, with torch.cuda faked (the suite runs on CPU machines too)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["gpu0-state"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = train._rng_state()
    assert state["cuda"] == ["gpu0-state"]
    train._set_rng_state(state)
    assert restored == [["gpu0-state"]]
    train._set_rng_state({k: v for k, v in state.items() if k != "cuda"})   # saved on a CPU
    assert restored == [["gpu0-state"]]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)         # resumed on a CPU
    train._set_rng_state(state)
    assert restored == [["gpu0-state"]]
    assert "cuda" not in train._rng_state()


def test_mem_gb_units(monkeypatch):
    import resource

    class Usage:
        ru_maxrss = 3 * 1024**2          # KiB on Linux
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(resource, "getrusage", lambda who: Usage())
    assert train._mem_gb() == 3.0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 5 * 1024**3)
    assert train._mem_gb() == 5.0


def test_checkpoint_is_read_onto_the_cpu(tmp_path, monkeypatch):
    """A checkpoint written on a GPU must load on any machine and keep the RNG states CPU
    tensors: the trainer reads it with map_location="cpu" (and weights_only, no code runs).
    A CPU-only test cannot hold a CUDA tensor, so this watches the arguments torch.load gets."""
    t = _trainer(tmp_path)
    t._save_checkpoint(1, {}, [])
    seen, real_load = [], torch.load

    def load(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(train.torch, "load", load)
    assert t._load_checkpoint()["next_step"] == 1
    assert seen == [{"map_location": "cpu", "weights_only": True}]
