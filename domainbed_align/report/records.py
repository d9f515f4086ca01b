"""A sweep folder as arrays: `Sweep` holds the usable checkpoints of a sweep (through the cache in `cache`), parsed by
`lib.records`; full records are re-read lazily, a few lines at a time, for the metrics of the
selected models.
"""
import json
import multiprocessing
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.records import RESULTS_FILE, parse_line, read_lines, read_run
from domainbed_align.model_selection import Checkpoints, RunPart, record_arrays, run_meta
from domainbed_align.report.cache import RecordCache, RunEntry, checkpoints_key, file_stat

PARALLEL_MIN_FILES = 200   # below this, one process reads faster than a pool starts


def _read_run_part(job):
    """Worker: one run folder -> compact arrays (pickling 100 floats per record is the cost
    we avoid by not sending records back)."""
    run, path = job
    kept, n_skipped, n_dup = read_run(path)
    n_all = len(kept)
    kept = [(i, r) for i, r in kept if run_meta(r.get("args")) is not None]
    n_unusable = n_all - len(kept)
    recs = [r for _, r in kept]
    steps, n_envs, acc_in, acc_out = record_arrays(recs)
    args = recs[-1].get("args") if recs else None
    lines = np.array([i for i, _ in kept], dtype=np.int64)
    # records of one run carry the same keys; the last one names the metrics recorded
    keys = {k for k, v in recs[-1].items() if k.startswith("env") and v is not None} \
        if recs else set()
    return RunPart(args, steps, n_envs, acc_in, acc_out, run=run, lines=lines), \
        n_skipped, n_dup, keys, n_unusable


class Sweep:
    """The usable checkpoints of a sweep folder plus what was left out, for the warnings."""

    def __init__(self, input_dir: str, include_incomplete: bool = False,
                 workers: Optional[int] = None, use_cache: bool = True,
                 write_cache: bool = True):
        if not os.path.isdir(input_dir):
            raise ConfigError(f"--input_dir {input_dir!r} is not a folder; pass the sweep's "
                              "output folder")
        self.input_dir = input_dir
        self.run_names: List[str] = []
        self.n_incomplete = 0
        self.n_done_without_records = 0
        for name in sorted(os.listdir(input_dir)):
            run_dir = os.path.join(input_dir, name)
            records = os.path.join(run_dir, RESULTS_FILE)
            if not os.path.isfile(records) or os.path.getsize(records) == 0:
                self.n_done_without_records += os.path.exists(os.path.join(run_dir, "done"))
                continue
            if not include_incomplete and not os.path.exists(os.path.join(run_dir, "done")):
                self.n_incomplete += 1
                continue
            self.run_names.append(name)
        paths = [self.results_path(i) for i in range(len(self.run_names))]
        stats = [file_stat(p) for p in paths]
        cache = RecordCache.load(input_dir) if use_cache else RecordCache(input_dir)
        todo = [i for i, (name, st) in enumerate(zip(self.run_names, stats))
                if name not in cache.entries or cache.entries[name].stat != st]
        if workers is None:
            workers = min(os.cpu_count() or 1, 8)
        jobs = [(i, paths[i]) for i in todo]
        if workers > 1 and len(jobs) >= PARALLEL_MIN_FILES:
            ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
            with ctx.Pool(workers) as pool:
                out = pool.map(_read_run_part, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
        else:
            out = [_read_run_part(j) for j in jobs]
        for i, o in zip(todo, out):
            cache.entries[self.run_names[i]] = RunEntry(stats[i], *o)
        entries = [cache.entries[name] for name in self.run_names]
        self._record_cache = cache
        self.ckpts_key = key = checkpoints_key(self.run_names, stats)
        self.n_skipped_lines = sum(e.n_skipped for e in entries)
        self.n_files_with_skips = sum(1 for e in entries if e.n_skipped)
        self.n_duplicates = sum(e.n_dup for e in entries)
        self.keys = set().union(*(e.keys for e in entries)) if entries else set()
        if cache.ckpts is not None and cache.ckpts_key == key and not todo:
            self.ckpts = cache.ckpts   # nothing changed since the last call
        else:
            parts = [cache.part(name) for name in self.run_names]
            for run, part in enumerate(parts):
                part.run = run
            self.ckpts = Checkpoints.from_parts(parts)
            self.ckpts.n_unusable += sum(e.n_unusable for e in entries)
            if use_cache and write_cache:
                cache.save(self.run_names, key, self.ckpts)
        self._cache: Dict[int, Dict[int, dict]] = {}

    def split_by(self, names: Sequence[str]) -> None:
        """Label each run's algorithm with the values its --hparams JSON sets for `names`
        (a grid sweep's variants: `RES[res_target_rescale=false]`), so that each variant is
        selected, tabulated and compared as an algorithm of its own."""
        if not names:
            return
        labels = {}
        for run, name in enumerate(self.run_names):
            args = self._record_cache.part(name).args or {}
            try:
                hp = json.loads(args.get("hparams") or "{}")
            except (TypeError, ValueError):
                hp = {}
            hp = hp if isinstance(hp, dict) else {}
            parts = [f"{n}={v if isinstance(v, str) else json.dumps(v)}"
                     for n, v in sorted(hp.items()) if n in names]
            labels[run] = "[" + ",".join(parts) + "]" if parts else ""
        meta = self.ckpts.meta
        suffix = meta["run"].map(labels).fillna("")
        meta["algorithm"] = (meta["algorithm"] + suffix).astype(object)

    def results_path(self, run: int) -> str:
        return os.path.join(self.input_dir, self.run_names[run], RESULTS_FILE)

    def records_at(self, rows: np.ndarray) -> Dict[int, dict]:
        """Full records of the given checkpoint rows (re-read lazily, a few files)."""
        meta = self.ckpts.meta
        out = {}
        want = meta.loc[rows, ["run", "line"]]
        for run, group in want.groupby("run"):
            if run not in self._cache:
                lines = {}
                with open(self.results_path(run), "r", encoding="utf-8",
                          errors="replace") as f:
                    for i, line in enumerate(f):
                        lines[i] = line
                self._cache[run] = lines
            for row, line in zip(group.index, group["line"]):
                out[row] = parse_line(self._cache[run][line]) or {}
        return out

    def last_records(self) -> Dict[int, dict]:
        """Run index -> the last record of that run."""
        meta = self.ckpts.meta
        if not len(meta):
            return {}
        last = meta.groupby("run", sort=True).tail(1)
        return {int(run): read_lines(self.results_path(int(run)), [line])[0]
                for run, line in zip(last["run"], last["line"])}

    def history(self, run: int) -> List[dict]:
        """Every record of one run, in step order (one per step, as the tables use them)."""
        meta = self.ckpts.meta
        lines = meta["line"].to_numpy()[meta["run"].to_numpy() == run]
        return read_lines(self.results_path(run), lines)

    def warnings(self) -> List[str]:
        w = []
        if self.n_skipped_lines:
            w.append(f"warning: skipped {self.n_skipped_lines} truncated or unreadable line(s) "
                     f"in {self.n_files_with_skips} results.jsonl file(s)")
        if self.n_duplicates:
            w.append(f"warning: dropped {self.n_duplicates} duplicate-step record(s) "
                     "(requeued runs); kept the last of each step")
        if self.n_incomplete:
            w.append(f"warning: excluded {self.n_incomplete} incomplete run(s) without a "
                     "'done' file; pass --include_incomplete to use them")
        if self.n_done_without_records:
            w.append(f"warning: skipped {self.n_done_without_records} run(s) marked done without "
                     "records (results.jsonl missing or empty); `sweep status` names them")
        if self.ckpts.n_unusable:
            w.append(f"warning: ignored {self.ckpts.n_unusable} record(s) whose args lack "
                     "algorithm, dataset or test_envs (or a single_source run with more than "
                     "one training domain)")
        return w
