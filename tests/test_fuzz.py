"""Property tests (hypothesis) of every parser a user or a damaged disk feeds (issue 22):
`--hparams`, `--hparams_grid`, `--config` and the records reader. Never a traceback: either
it is accepted, or one `error:` line (exit 2), or, for records, a counted skip."""
import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domainbed_align import collect_results, hparams_registry, sweep, train
from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.records import read_jsonl

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# JSON values that stay small (a fuzzed config must not define a billion jobs)
scalars = (st.none() | st.booleans() | st.integers(-3, 4) | st.floats(allow_nan=True)
           | st.text(string.printable, max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(string.ascii_lowercase + "_", max_size=12),
                                             inner, max_size=3), max_leaves=8)
HPARAM_NAMES = sorted(hparams_registry.default_hparams("ALIGN", "Debug28")) + ["nope", ""]
hparams_objects = st.dictionaries(st.sampled_from(HPARAM_NAMES), json_values, max_size=4)
# text that is often JSON (and often an object of known names), sometimes not JSON at all
json_text = (hparams_objects.map(json.dumps) | json_values.map(json.dumps)
             | st.text(max_size=30))


def _one_error_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


@FAST
@given(text=json_text)
def test_train_hparams_accepted_or_one_config_error(text):
    """train's --hparams: parsed and checked against the registry (names and kinds) before
    anything runs; what passes is a dict of the registry's keys with values of their kinds."""
    try:
        hp = hparams_registry.run_hparams("ALIGN", "Debug28", 0, 0, train._parse_hparams_json(text))
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    defaults = hparams_registry.default_hparams("ALIGN", "Debug28")
    assert set(hp) == set(defaults)
    for k, v in hp.items():
        d = defaults[k]
        if isinstance(d, bool):
            assert isinstance(v, bool)
        elif isinstance(d, str):
            assert isinstance(v, str)
        else:
            assert v is None and d is None or isinstance(v, (int, float)) and not isinstance(v, bool)


LAUNCH = ["launch", "--datasets", "Debug28", "--algorithms", "ERM", "ALIGN", "--n_hparams", "1",
          "--n_trials", "1", "--single_test_envs", "--command_launcher", "dummy",
          "--skip_confirmation"]


def _sweep(capsys, argv):
    capsys.readouterr()
    rc = sweep.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@FAST
@given(text=json_text)
def test_sweep_hparams_and_grid_launch_or_one_error_line(tmp_path, capsys, text):
    for flag in ("--hparams", "--hparams_grid"):
        rc, out, err = _sweep(capsys, [*LAUNCH, "--output_dir", str(tmp_path / "sw"), flag, text])
        assert rc in (0, 2)
        if rc == 2:
            assert _one_error_line(err), err
        else:
            assert "Dummy launcher:" in out or "About to launch 0 jobs." in out


config_objects = st.dictionaries(
    st.sampled_from(sorted(sweep.DEFAULTS) + ["_comment", "unknown_key"]), json_values, max_size=5)


@FAST
@given(config=config_objects | json_values, raw=st.booleans())
def test_config_file_status_or_one_error_line(tmp_path, capsys, config, raw):
    path = tmp_path / "sweep.json"
    if raw and isinstance(config, dict):
        path.write_bytes(json.dumps(config).encode()[:-1])   # cut: not JSON any more
    else:
        path.write_text(json.dumps(config))
    cfg_out = ["--output_dir", str(tmp_path / "sw")]
    rc, out, err = _sweep(capsys, ["status", "--config", str(path), *cfg_out])
    assert rc in (0, 2)
    if rc == 2:
        assert _one_error_line(err), err
    else:
        assert out.splitlines()[-1].endswith(" failed.") and "jobs: " in out.splitlines()[-1]


# --------------------------------------------------------------------------------------------
# The records reader
# --------------------------------------------------------------------------------------------

def _record(step, n_envs=3):
    r = {"step": step, "args": {"algorithm": "ERM", "dataset": "Debug28", "test_envs": [0],
                                "trial_seed": 0, "hparams_seed": 0}}
    for i in range(n_envs):
        r[f"env{i}_in_acc"] = r[f"env{i}_out_acc"] = 0.5
    return r


@FAST
@given(blob=st.binary(max_size=400))
def test_random_bytes_never_raise_in_either_reader(tmp_path, blob):
    path = tmp_path / "results.jsonl"
    path.write_bytes(blob)
    kept, n_skipped, n_dup = collect_results.read_run(str(path))
    n_lines = sum(1 for line in blob.split(b"\n") if line.strip())   # lines end at a newline only
    assert len(kept) + n_skipped + n_dup == n_lines   # every non-blank line accounted for
    records, skipped = read_jsonl(str(path))
    assert all(isinstance(r, dict) for r in records)


# a line is a whole record, a record cut anywhere, garbage bytes, or blank
lines = st.one_of(st.integers(0, 9).map(lambda s: ("good", s)),
                  st.tuples(st.integers(0, 9), st.integers(1, 60)).map(lambda t: ("cut", t)),
                  st.binary(min_size=1, max_size=20).map(lambda b: ("junk", b)),
                  st.just(("blank", None)))


@FAST
@given(spec=st.lists(lines, max_size=12))
def test_collector_counts_every_bad_line_and_keeps_the_last_of_each_step(tmp_path, capsys, spec):
    run = tmp_path / "sweep" / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "done").write_text("done")
    blob, good_steps, expect_bad = b"", [], 0
    for kind, value in spec:
        if kind == "good":
            blob += json.dumps(_record(value)).encode() + b"\n"
            good_steps.append(value)
        elif kind == "cut":
            text = json.dumps(_record(value[0])).encode()
            blob += text[:min(value[1], len(text) - 1)] + b"\n"
        elif kind == "junk":
            blob += value.replace(b"\n", b" ") + b"\n"
        else:
            blob += b"\n"
    (run / "results.jsonl").write_bytes(blob)
    kept, n_skipped, n_dup = collect_results.read_run(str(run / "results.jsonl"))
    assert sorted(r["step"] for _, r in kept) == sorted(set(good_steps))
    assert n_dup == len(good_steps) - len(set(good_steps))
    capsys.readouterr()
    rc = collect_results.main(["--input_dir", str(tmp_path / "sweep"), "--workers", "1",
                               "--no_cache", "--no_write"])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err
    if good_steps or n_skipped:
        assert out.splitlines()[0] == f"Total records: {len(set(good_steps))}"
    if n_skipped:
        assert f"warning: skipped {n_skipped} truncated or unreadable line(s)" in err
