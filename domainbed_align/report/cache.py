"""The collector's cache of parsed records, so a repeat call on a live sweep reads only what changed.

One file in the sweep folder, `_collect_cache.npz` (numpy arrays plus a JSON header; no pickle,
so a file on a shared disk cannot run code when read). Per run folder it holds what the
collector extracts from `results.jsonl` (steps, accuracies, line numbers, args, metric keys,
skip counts), keyed by the file's size and mtime: a run whose file changed is parsed again.
It also holds the assembled checkpoint table, keyed by the list of runs and their keys, so an
unchanged sweep skips assembly too. Written to a temporary file and renamed, so two collectors
running at once never read half a cache (the last writer wins); a cache that cannot be read
is ignored and rebuilt.
"""
import hashlib
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from domainbed_align.lib.misc import atomic_open
from domainbed_align.model_selection import Checkpoints, RunPart

CACHE_FILE = "_collect_cache.npz"
VERSION = 1
_STR_COLUMNS = ("dataset", "algorithm", "task")

Stat = Tuple[int, int]   # (size in bytes, mtime in ns) of a results.jsonl


def file_stat(path: str) -> Stat:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class RunEntry:
    """What the collector keeps of one results.jsonl (the output of its reader)."""

    __slots__ = ("stat", "part", "n_skipped", "n_dup", "keys", "n_unusable")

    def __init__(self, stat: Stat, part: RunPart, n_skipped: int, n_dup: int, keys: set,
                 n_unusable: int):
        self.stat, self.part, self.n_skipped, self.n_dup = stat, part, n_skipped, n_dup
        self.keys, self.n_unusable = keys, n_unusable


def checkpoints_key(names: Sequence[str], stats: Sequence[Stat]) -> str:
    h = hashlib.sha1()
    for name, (size, mtime) in zip(names, stats):
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


class RecordCache:
    """Load with `RecordCache.load(sweep_dir)`; `entries` maps run name -> RunEntry."""

    def __init__(self, sweep_dir: str):
        self.path = os.path.join(sweep_dir, CACHE_FILE)
        self.entries: Dict[str, RunEntry] = {}
        self.ckpts_key: Optional[str] = None
        self.ckpts: Optional[Checkpoints] = None
        self._lazy: Dict[str, tuple] = {}
        self._parts: Optional[Dict[str, np.ndarray]] = None
        # the cache file as it was when the header was read: the lazy part reads come from
        # this open file, so another collector renaming a new cache over the path meanwhile
        # cannot pair our header's offsets with its arrays (a torn read)
        self._file = None

    @classmethod
    def load(cls, sweep_dir: str) -> "RecordCache":
        cache = cls(sweep_dir)
        if not os.path.exists(cache.path):
            return cache
        try:
            cache._read()
        except Exception as e:  # noqa: BLE001 - any damage: start from scratch
            print(f"warning: ignoring the unreadable collector cache {cache.path} "
                  f"({type(e).__name__}); rebuilding it", file=sys.stderr)
            cache.entries, cache.ckpts_key, cache.ckpts = {}, None, None
        return cache

    def _read(self) -> None:
        self._file = open(self.path, "rb")
        z = np.load(self._file, allow_pickle=False)
        with z:
            header = json.loads(z["header"].tobytes().decode("utf-8"))
            if header.get("version") != VERSION:
                return
            if header.get("ckpts_key"):
                meta = {}
                for c in header["ckpts_columns"]:
                    col = z["c_" + c]
                    if c in _STR_COLUMNS:  # stored as codes into a list of names
                        col = np.array(header["categories"][c], dtype=object)[col]
                    meta[c] = col
                self.ckpts = Checkpoints(pd.DataFrame(meta), z["c_acc_in"], z["c_acc_out"],
                                         header["ckpts_n_unusable"])
                self.ckpts_key = header["ckpts_key"]
        keysets = [set(k) for k in header["keysets"]]
        for k, (name, size, mtime, n_skipped, n_dup, n_unusable, keys_idx, args_json, width) \
                in enumerate(header["runs"]):
            self.entries[name] = RunEntry((size, mtime), None, n_skipped, n_dup,
                                          keysets[keys_idx], n_unusable)
            self._lazy[name] = (k, args_json, width)

    def part(self, name: str) -> RunPart:
        """The run's arrays (read from the cache file on first use: an unchanged sweep never
        needs them)."""
        e = self.entries[name]
        if e.part is None:
            if self._parts is None:
                self._file.seek(0)
                with np.load(self._file, allow_pickle=False) as z:
                    self._parts = {k: z[k] for k in z.files if k.startswith("p_")}
            k, args_json, width = self._lazy[name]
            a, b = int(self._parts["p_offsets"][k]), int(self._parts["p_offsets"][k + 1])
            e.part = RunPart(json.loads(args_json) if args_json else None,
                             self._parts["p_steps"][a:b], self._parts["p_n_envs"][a:b],
                             self._parts["p_acc_in"][a:b, :width],
                             self._parts["p_acc_out"][a:b, :width],
                             lines=self._parts["p_lines"][a:b])
        return e.part

    def save(self, names: Sequence[str], ckpts_key: str, ckpts: Checkpoints) -> None:
        """Keep `names`' entries (others are dropped) and the assembled table; best effort."""
        keysets: List[List[str]] = []
        keyset_index: Dict[frozenset, int] = {}
        runs = []
        parts = [self.part(n) for n in names]
        width = max((p.acc_in.shape[1] for p in parts), default=0)
        for name, part in zip(names, parts):
            e = self.entries[name]
            fk = frozenset(e.keys)
            if fk not in keyset_index:
                keyset_index[fk] = len(keysets)
                keysets.append(sorted(fk))
            runs.append([name, e.stat[0], e.stat[1], e.n_skipped, e.n_dup, e.n_unusable,
                         keyset_index[fk], json.dumps(part.args) if part.args is not None else "",
                         part.acc_in.shape[1]])
        lengths = [len(p.steps) for p in parts]

        def cat(arrays, dtype):
            return np.concatenate([np.asarray(a, dtype) for a in arrays]) if arrays else \
                np.zeros(0, dtype)

        def cat2(arrays):  # (n, w) blocks padded with NaN to the widest
            blocks = [np.pad(np.asarray(a, np.float64), ((0, 0), (0, width - a.shape[1])),
                             constant_values=np.nan) for a in arrays]
            return np.concatenate(blocks) if blocks else np.zeros((0, width))

        arrays = {
            "p_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "p_steps": cat([p.steps for p in parts], np.int64),
            "p_n_envs": cat([p.n_envs for p in parts], np.int64),
            "p_lines": cat([p.lines if p.lines is not None else np.arange(len(p.steps))
                            for p in parts], np.int64),
            "p_acc_in": cat2([p.acc_in for p in parts]),
            "p_acc_out": cat2([p.acc_out for p in parts]),
            "c_acc_in": ckpts.acc_in, "c_acc_out": ckpts.acc_out,
        }
        columns = list(ckpts.meta.columns)
        categories = {}
        for c in columns:
            col = ckpts.meta[c].to_numpy()
            if c in _STR_COLUMNS:
                names_c, codes = np.unique(col.astype(str), return_inverse=True)
                categories[c] = names_c.tolist()
                col = codes.astype(np.int32)
            arrays["c_" + c] = col
        header = {"version": VERSION, "runs": runs, "keysets": keysets, "ckpts_key": ckpts_key,
                  "ckpts_columns": columns, "ckpts_n_unusable": ckpts.n_unusable,
                  "categories": categories}
        blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        try:
            with atomic_open(self.path, "wb") as f:
                np.savez(f, header=blob, **arrays)
        except OSError as e:  # a read-only sweep folder: collect without a cache
            print(f"warning: could not write the collector cache {self.path}: {e.strerror}",
                  file=sys.stderr)


REPORT_FILE = "_collect_cache_report.json"


def cached_report(sweep_dir: str, key: str) -> Optional[str]:
    """The text of the last report when it was made from the same records with the same
    options; None otherwise (or when the file is unreadable)."""
    try:
        with open(os.path.join(sweep_dir, REPORT_FILE), encoding="utf-8") as f:
            saved = json.load(f)
        return saved["text"] if saved.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_report(sweep_dir: str, key: str, text: str) -> None:
    try:
        with atomic_open(os.path.join(sweep_dir, REPORT_FILE), "w") as f:
            json.dump({"key": key, "text": text}, f)
    except OSError:
        pass  # read-only sweep folder: nothing cached


def report_key(ckpts_key: str, *options) -> str:
    return hashlib.sha1(json.dumps([VERSION, ckpts_key, *options], default=str).encode()).hexdigest()
