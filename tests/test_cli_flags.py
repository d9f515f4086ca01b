"""The command-line flags of the scripts: DomainBed's names, defaults, types and help texts.

Compared flag by flag (not the rendered --help, whose layout changes between Python versions);
flags added later only need their own line here.
"""
import argparse

from domainbed_align import collect_results, train


def _flags(parser):
    return {a.option_strings[-1]: (a.default, getattr(a.type, "__name__", a.type), a.nargs,
                                   a.choices, a.required, a.help, type(a).__name__)
            for a in parser._actions}


S, I, F = "str", "int", "float"
STORE, TRUE = "_StoreAction", "_StoreTrueAction"

TRAIN = {
    "--data_dir": ("", S, None, None, False, None, STORE),
    "--dataset": ("SpuriousDigits", S, None, None, False, None, STORE),
    "--algorithm": ("ERM", S, None, None, False, None, STORE),
    "--task": ("domain_generalization", S, None, ("domain_generalization", "single_source"),
               False, None, STORE),
    "--hparams": (None, S, None, None, False, "JSON-serialized hparams dict, applied on top",
                  STORE),
    "--hparams_seed": (0, I, None, None, False, "0: default hparams", STORE),
    "--trial_seed": (0, I, None, None, False, "seed for splits and random hparams", STORE),
    "--seed": (0, I, None, None, False, "seed for everything else", STORE),
    "--steps": (None, I, None, None, False, "default: the dataset's N_STEPS", STORE),
    "--checkpoint_freq": (None, I, None, None, False, "default: the dataset's", STORE),
    "--test_envs": ([0], I, "+", None, False, None, STORE),
    "--output_dir": ("train_output", S, None, None, False, None, STORE),
    "--holdout_fraction": (0.2, F, None, None, False, None, STORE),
    "--uda_holdout_fraction": (0.0, F, None, None, False, None, STORE),
    "--skip_model_save": (False, None, 0, None, False, None, TRUE),
    "--save_model_every_checkpoint": (False, None, 0, None, False, None, TRUE),
    "--mask_dir": (None, S, None, None, False,
                   "relevance-mask folder mirroring the image tree (image datasets)", STORE),
    "--tensorboard": (False, None, 0, None, False,
                      "also write every record's numbers and each step's update() terms as "
                      "TensorBoard event files in --output_dir (pip install -e "
                      "\".[tensorboard]\")", TRUE),
}


def test_train_flags():
    p = train.build_parser()
    assert p.prog == "python -m domainbed_align.train"
    assert p.description == ("One run: `python -m domainbed_align.train` (DomainBed's flags, "
                             "plus --mask_dir).")
    flags = _flags(p)
    for flag, spec in TRAIN.items():
        assert flags[flag] == spec, flag


def test_collect_results_flags():
    p = collect_results.build_parser()
    assert p.prog == "python -m domainbed_align.collect_results"
    assert p.description == ("DomainBed tables, ID/OOD tables and explanation tables of a "
                             "sweep folder.")
    expected = {
        "--input_dir": (None, None, None, None, True, "the sweep's output folder", STORE),
        "--latex": (False, None, 0, None, False, "LaTeX document -> results.tex", TRUE),
        "--markdown": (False, None, 0, None, False, "markdown -> results.md", TRUE),
        "--csv": (None, None, None, None, False,
                  "also write the selected models, one row each, to this file", STORE),
        "--selection": (None, None, "+", None, False,
                        "selection methods (training_domain|iid, leave_one_out|loo, oracle); "
                        "default all three", STORE),
        "--metrics": (None, None, "+", None, False,
                      "metrics of the explanation tables (default: all recorded): "
                      + ", ".join(collect_results.METRICS), STORE),
        "--include_incomplete": (False, None, 0, None, False,
                                 "also use runs without a 'done' file", TRUE),
        "--workers": (None, I, None, None, False,
                      "processes reading results.jsonl files (default: CPU count, max 8)", STORE),
        "--no_cache": (False, None, 0, None, False,
                       "parse every results.jsonl again; do not read or write "
                       "<input_dir>/_collect_cache.npz", TRUE),
        "--no_write": (False, None, 0, None, False,
                       "print only; do not write results.txt/.tex/.md (nor update the cache) "
                       "into input_dir", TRUE),
        "--html": (None, None, None, None, False,
                   "also write a self-contained page DIR/index.html (images beside it): run "
                   "list with states, every table, figures, saliency grids, learning curves",
                   STORE),
    }
    flags = _flags(p)
    for flag, spec in expected.items():
        assert flags[flag] == spec, flag
    groups = [sorted(a.dest for a in g._group_actions) for g in p._mutually_exclusive_groups]
    assert ["latex", "markdown"] in groups
    assert isinstance(p, argparse.ArgumentParser)
