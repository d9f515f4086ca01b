"""Sweeps end to end on fabricated PACS-, DomainNet- and DomainFolder-shaped trees of real JPEGs:
`sweep launch` (local launcher, in this process), the masks command, the trainer's real image
loading, and `collect_results`, whose DomainBed tables must equal those upstream's
collect_results prints for the same records (upstream's selection rules as written in
tests/test_model_selection.py's reference, its table layout as in tests/test_collect_results.py).

CPU budget: the images are 28 px (the dataset's INPUT_SHAPE patched for the test, so the small
CNN replaces ResNet-50) and loading runs in the main process; everything else is as on a GPU node.
"""
import json

import numpy as np
import pytest

from fake_datasets import jpeg_bytes
from test_model_selection import reference_select
from domainbed_align import collect_results, sweep
from domainbed_align.datasets import get_dataset_class
from domainbed_align.datasets import masks as masks_cli

pytestmark = pytest.mark.slow  # trains: 11-34 s each on 2 cores at load ~11 (3 min at load ~20)

SELECTIONS = (("iid", "training-domain validation set"),
              ("loo", "leave-one-domain-out cross-validation"),
              ("oracle", "test-domain validation set (oracle)"))
HPARAMS = json.dumps({"batch_size": 2, "explain_n": 0})


def _tree(root, domains, classes, per_class=2):
    seed = 0
    for d in domains:
        for c in classes:
            (root / d / c).mkdir(parents=True)
            for k in range(per_class):
                seed += 1
                (root / d / c / f"{k}.jpg").write_bytes(jpeg_bytes(seed, (20, 16)))


def _small(monkeypatch, name):
    cls = get_dataset_class(name)
    monkeypatch.setattr(cls, "INPUT_SHAPE", (3, 28, 28))
    monkeypatch.setattr(cls, "N_WORKERS", 0)


def _launch(capsys, *args):
    rc = sweep.main(["launch", "--n_trials", "1", "--n_hparams", "1", "--steps", "2",
                     "--checkpoint_freq", "1", "--holdout_fraction", "0.5", "--hparams", HPARAMS,
                     "--command_launcher", "local", "--skip_confirmation", *map(str, args)])
    out = capsys.readouterr().out
    assert rc == 0 and "job failed" not in out, out
    return out


def _records(out_dir):
    recs = []
    for path in sorted(out_dir.glob("*/results.jsonl")):
        assert (path.parent / "done").exists()
        recs += [json.loads(line) for line in path.read_text().splitlines()]
    return recs


def upstream_tables(recs, dataset, envs, algorithms):
    """The `-------- Dataset:` blocks upstream's collect_results prints for these records."""
    blocks = {}
    trials = sorted({r["args"]["trial_seed"] for r in recs})
    for key, title in SELECTIONS:
        sel = reference_select(recs, key)
        lines = ["".join(c.ljust(20) + "  " for c in ["Algorithm", *envs, "Avg"])[:-1]]
        for alg in algorithms:
            cells, means = [alg], []
            for t in range(len(envs)):
                vals = [sel[k][2] for k in ((tr, dataset, alg, t) for tr in trials) if k in sel]
                if len(vals) < len(trials) or not vals:
                    cells.append("X")
                    means.append(None)
                    continue
                mean, err = 100 * np.mean(vals), 100 * np.std(np.array(vals) / np.sqrt(len(vals)))
                cells.append(f"{mean:.1f} +/- {err:.1f}")
                means.append(mean)
            cells.append("X" if None in means else f"{sum(means) / len(means):.1f}")
            lines.append("  ".join(c.ljust(20)[:20] for c in cells) + " ")
        blocks[title] = "\n".join(lines)
    return blocks


def assert_same_tables(out_dir, capsys, dataset, envs, algorithms):
    recs = _records(out_dir)
    rc = collect_results.main(["--input_dir", str(out_dir), "--no_write", "--workers", "1"])
    ours = capsys.readouterr().out
    assert rc == 0 and ours.startswith(f"Total records: {len(recs)}\n")
    for title, block in upstream_tables(recs, dataset, envs, algorithms).items():
        head = f"-------- Dataset: {dataset}, model selection method: {title}\n"
        assert head in ours, ours
        got = "\n".join(ours.split(head)[1].split("\n")[:1 + len(algorithms)])
        assert got == block, f"{title}:\nours:\n{got}\nupstream:\n{block}"
    return recs, ours


def test_pacs_shaped_tree_sweeps_and_upstream_reads_the_same_tables(tmp_path, capsys, monkeypatch):
    pacs = get_dataset_class("PACS")
    _tree(tmp_path / "data" / "PACS", pacs.DOMAIN_DIRS, ("dog", "house"))
    _small(monkeypatch, "PACS")
    out = tmp_path / "sweep"
    _launch(capsys, "--datasets", "PACS", "--algorithms", "ERM", "--data_dir", tmp_path / "data",
            "--output_dir", out)
    recs, _ = assert_same_tables(out, capsys, "PACS", ["A", "C", "P", "S"], ["ERM"])
    assert len(recs) == 10 * 2                        # [0], [0, 1], ..., [3]: 10 runs, 2 records
    assert {r["args"]["dataset"] for r in recs} == {"PACS"}
    assert not any("domain_names" in r for r in recs)   # the catalog names PACS's columns


def test_domain_net_shaped_tree_with_masks_sweeps_a_mask_based_method(tmp_path, capsys, monkeypatch):
    dn = get_dataset_class("DomainNet")
    data = tmp_path / "data"
    _tree(data / "domain_net", dn.DOMAIN_DIRS, ("The_Eiffel_Tower", "zigzag"))
    _small(monkeypatch, "DomainNet")
    masks = tmp_path / "masks"
    assert masks_cli.main(["--dataset", "DomainNet", "--data_dir", str(data), "--out", str(masks),
                           "--method", "centre"]) == 0
    assert len(list(masks.rglob("*.png"))) == 6 * 2 * 2
    out = tmp_path / "sweep"
    _launch(capsys, "--datasets", "DomainNet", "--algorithms", "GRADIA", "--data_dir", data,
            "--mask_dir", masks, "--single_test_envs", "--output_dir", out)
    recs, ours = assert_same_tables(out, capsys, "DomainNet",
                                    ["clip", "info", "paint", "quick", "real", "sketch"], ["GRADIA"])
    assert len(recs) == 6 * 2 and all("attention" in r for r in recs)   # the mask loss ran


def test_domain_folder_sweep_names_columns_after_its_folders(tmp_path, capsys, monkeypatch):
    tree = tmp_path / "my data"
    _tree(tree, ("cartoons", "photos", "x-rays"), ("cat", "dog"))
    (tree / "domains.json").write_text(json.dumps({"environments": ["Cartoon", "Photo", "X-ray"]}))
    _small(monkeypatch, "DomainFolder")
    out = tmp_path / "sweep"
    _launch(capsys, "--datasets", "DomainFolder", "--algorithms", "ERM", "--data_dir", tree,
            "--output_dir", out)
    recs, ours = assert_same_tables(out, capsys, "DomainFolder", ["Cartoon", "Photo", "X-ray"], ["ERM"])
    assert len(recs) == 6 * 2 and all(r["args"]["data_dir"] == str(tree) for r in recs)
