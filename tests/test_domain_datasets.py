"""PACS, OfficeHome, DomainNet and DomainFolder: names, index, labels, masks, hparams, and the
collector's column names for a folder of our own."""
import json
import os

import numpy as np
import pytest

from fake_datasets import jpeg_bytes, png_bytes
from domainbed_align import catalog, hparams_registry
from domainbed_align.datasets import get_dataset_class
from domainbed_align.datasets.image_folder import DomainFolder, DomainIndex, read_folder_spec
from domainbed_align.lib.errors import DataError
from domainbed_align.lib.misc import seed_hash

HP = {"data_augmentation": False}


def test_upstream_names_order_and_classes():
    # upstream datasets.py: ENVIRONMENTS (table columns) in sorted-folder order, and the folders
    want = {"PACS": (("A", "C", "P", "S"), "PACS", ("art_painting", "cartoon", "photo", "sketch")),
            "OfficeHome": (("A", "C", "P", "R"), "office_home", ("Art", "Clipart", "Product", "Real World")),
            "DomainNet": (("clip", "info", "paint", "quick", "real", "sketch"), "domain_net",
                          ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"))}
    for name, (envs, folder, domains) in want.items():
        cls = get_dataset_class(name)
        assert tuple(cls.environments()) == envs == catalog.DATASET_ENVIRONMENTS[name]
        assert (cls.DIR, tuple(cls.DOMAIN_DIRS)) == (folder, domains) and list(domains) == sorted(domains)
    classes = {n: get_dataset_class(n).CLASSES for n in want}
    assert [len(set(c)) for c in classes.values()] == [7, 65, 345]
    assert classes["PACS"] == ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    # ImageFolder's label order is Python's sort: upper case first
    assert classes["DomainNet"][:3] == ("The_Eiffel_Tower", "The_Great_Wall_of_China", "The_Mona_Lisa")
    assert list(classes["DomainNet"]) == sorted(classes["DomainNet"])
    assert get_dataset_class("DomainNet").CHECKPOINT_FREQ == 1000
    assert get_dataset_class("PACS").CHECKPOINT_FREQ == get_dataset_class("OfficeHome").CHECKPOINT_FREQ == 300


def test_domain_net_batch_size_search_is_upstreams():
    for seed in (1, 2, 3, 7):
        rs = np.random.RandomState(seed_hash(seed, "batch_size"))
        draw = rs.uniform(3, 5)
        assert hparams_registry.random_hparams("ERM", "DomainNet", seed)["batch_size"] == int(2 ** draw)
        rs = np.random.RandomState(seed_hash(seed, "batch_size"))
        assert hparams_registry.random_hparams("ERM", "PACS", seed)["batch_size"] == int(2 ** rs.uniform(3, 5.5))
    assert hparams_registry.default_hparams("ERM", "DomainNet")["batch_size"] == 32


def _tree(root, layout):
    """layout: {domain: {class: n images}}; image k of a class is `<k>.jpg`."""
    seed = 0
    for d, per_class in layout.items():
        for c, n in per_class.items():
            (root / d / c).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                seed += 1
                (root / d / c / f"{k}.jpg").write_bytes(jpeg_bytes(seed, (12, 10)))


def test_index_is_two_arrays_sorted_by_class_then_name(tmp_path):
    for name in ("b.jpg", "a.JPG", "c.png", ".hidden.jpg", "notes.txt"):
        (tmp_path / "dom" / "zebra").mkdir(parents=True, exist_ok=True)
        (tmp_path / "dom" / "zebra" / name).write_bytes(b"x")
    (tmp_path / "dom" / "Ant").mkdir()
    (tmp_path / "dom" / "Ant" / "z.jpg").write_bytes(b"x")
    index = DomainIndex.scan(str(tmp_path / "dom"), ["Ant", "missing", "zebra"])
    assert index.names.dtype.kind == "S" and index.labels.dtype == np.int64
    assert index.names.tolist() == [b"z.jpg", b"a.JPG", b"b.jpg", b"c.png"]
    assert index.labels.tolist() == [0, 2, 2, 2]
    assert index.path(1) == os.path.join(str(tmp_path / "dom"), "zebra", "a.JPG")
    assert index.nbytes() == 4 * 5 + 4 * 8


def test_declared_classes_keep_labels_when_a_domain_lacks_one(tmp_path):
    # PACS-shaped: photo has no "dog"; upstream's per-domain ImageFolder would shift its labels
    _tree(tmp_path / "PACS", {"art_painting": {"dog": 1, "house": 2}, "cartoon": {"dog": 1, "person": 1},
                              "photo": {"house": 1}, "sketch": {"person": 3}})
    ds = get_dataset_class("PACS")(str(tmp_path), [0], HP)
    assert ds.num_classes == 7 and [len(d) for d in ds.datasets] == [3, 2, 1, 3]
    assert ds.datasets[2].labels.tolist() == [5]           # house is label 5 everywhere
    assert ds.datasets[0].labels.tolist() == [0, 5, 5]
    x, y = ds.datasets[3][2]
    assert tuple(x.shape) == (3, 224, 224) and y == 6
    (tmp_path / "PACS" / "photo" / "cat").mkdir()
    with pytest.raises(DataError, match=r"photo holds class folder\(s\) PACS does not have: cat"):
        get_dataset_class("PACS")(str(tmp_path), [0], HP)


def test_domain_folder_sorted_or_named_by_domains_json(tmp_path):
    _tree(tmp_path, {"sketch": {"dog": 1, "cat": 2}, "photo": {"cat": 1}, "art": {"bird": 1}})
    assert read_folder_spec(str(tmp_path)) == (("art", "photo", "sketch"), ("art", "photo", "sketch"), None)
    ds = DomainFolder(str(tmp_path), [0], HP)
    assert ds.classes == ["bird", "cat", "dog"] and ds.domain_dirs == ("art", "photo", "sketch")
    assert [d.labels.tolist() for d in ds.datasets] == [[0], [1], [1, 1, 2]]
    (tmp_path / "domains.json").write_text(json.dumps(
        {"domains": ["sketch", "photo", "art"], "environments": ["S", "P", "A"],
         "classes": ["dog", "cat", "bird"]}))
    assert tuple(DomainFolder.environments(str(tmp_path))) == ("S", "P", "A")
    ds = DomainFolder(str(tmp_path), [0], HP)
    assert ds.domain_dirs == ("sketch", "photo", "art") and ds.classes == ["bird", "cat", "dog"]
    assert [d.labels.tolist() for d in ds.datasets] == [[1, 1, 2], [1], [0]]
    for bad, msg in (({"domains": ["sketch"], "environments": ["S", "P"]}, "2 environments for 1 domains"),
                     ({"domian": ["a"]}, "unexpected: domian"), ({"classes": []}, "distinct names")):
        (tmp_path / "domains.json").write_text(json.dumps(bad))
        with pytest.raises(DataError, match=msg):
            read_folder_spec(str(tmp_path))
    (tmp_path / "domains.json").write_text(json.dumps({"domains": ["sketch", "photo"]}))
    with pytest.raises(DataError, match="must hold exactly the domain folders sketch, photo; unexpected: art"):
        DomainFolder(str(tmp_path), [0], HP)


def test_domain_folder_masks_mirror_the_tree(tmp_path):
    data, masks = tmp_path / "data", tmp_path / "masks"
    _tree(data, {"a": {"x": 2}, "b": {"x": 1, "y": 1}})
    for rel in ("a/x/0", "a/x/1", "b/x/0", "b/y/0"):
        (masks / rel).parent.mkdir(parents=True, exist_ok=True)
        (masks / f"{rel}.png").write_bytes(png_bytes((12, 10), box=(0, 0, 6, 10)))
    ds = DomainFolder(str(data), [0], {"data_augmentation": True}, mask_dir=str(masks))
    x, y, m = ds.datasets[1].eval_view()[1]
    assert y == 1 and tuple(m.shape) == (1, 224, 224)
    assert m[0, :, :100].min() == 1 and m[0, :, 124:].max() == 0   # left half relevant
    (masks / "b" / "y" / "0.png").unlink()
    with pytest.raises(DataError, match=r"1 masks missing under .* \(first: .*b/y/0.png\)"):
        DomainFolder(str(data), [0], HP, mask_dir=str(masks))


def test_collector_names_a_domain_folders_columns_from_its_records(tmp_path, capsys):
    from domainbed_align import collect_results as cr
    for te in ([0], [1], [0, 1]):
        run = tmp_path / f"run{len(te)}{te[0]}"
        run.mkdir()
        rec = {"step": 0, "domain_names": ["cartoons", "x-rays"],
               "args": {"algorithm": "ERM", "dataset": "DomainFolder", "test_envs": te,
                        "trial_seed": 0, "hparams_seed": 0},
               "env0_in_acc": 0.5, "env0_out_acc": 0.5, "env1_in_acc": 0.25, "env1_out_acc": 0.75}
        (run / "results.jsonl").write_text(json.dumps(rec) + "\n")
        (run / "done").write_text("done")
    sweep = cr.Sweep(str(tmp_path), workers=1, use_cache=False)
    assert cr.environment_names("DomainFolder", 2, sweep) == ["cartoons", "x-rays"]
    assert cr.environment_names("DomainFolder", 3, sweep) == ["env0", "env1", "env2"]  # mismatch
    rc = cr.main(["--input_dir", str(tmp_path), "--no_write", "--workers", "1"])
    out = capsys.readouterr().out
    header = out.split("-------- Dataset: DomainFolder, model selection method: training-domain "
                       "validation set\n")[1].splitlines()[0]
    assert rc == 0 and header.split() == ["Algorithm", "cartoons", "x-rays", "Avg"]


@pytest.mark.parametrize("name,dataset", [("pacs_align.json", "PACS"), ("officehome_align.json", "OfficeHome")])
def test_pacs_and_officehome_sweeps_have_the_papers_budget(name, dataset):
    from domainbed_align import sweep
    _, cfg, _ = sweep.resolve(["status", "--config", name])
    jobs = sweep.make_args_list(cfg)
    assert cfg["algorithms"] == ["ERM", "SGT", "DRE", "GRADIA", "RES", "CARE", "ALIGN"]
    assert {j["dataset"] for j in jobs} == {dataset} and {j["task"] for j in jobs} == {"domain_generalization"}
    # leave-one-domain-out: 4 single test domains + 6 pairs, x 20 hparams x 3 trials, per algorithm
    assert len(jobs) == 7 * (4 + 6) * 20 * 3
    assert sorted({tuple(j["test_envs"]) for j in jobs}) == [
        (0,), (0, 1), (0, 2), (0, 3), (1,), (1, 2), (1, 3), (2,), (2, 3), (3,)]
    assert cfg["mask_dir"] == f"./data/masks/{dataset}" and cfg["gpus_per_job"] == 1


def test_two_domain_folders_get_no_pair_runs():
    from domainbed_align import sweep
    # a pair of two domains would leave no training domain (leave-one-domain-out needs three)
    assert sweep.test_env_lists(2, "domain_generalization", False, None) == [[0], [1]]
    assert sweep.test_env_lists(3, "domain_generalization", False, None) == [[0], [0, 1], [0, 2], [1], [1, 2], [2]]
