"""Cheap, torch-free checks of a run folder's files, for `train`, `sweep status` and the collector.

Our writes are atomic, so a damaged file comes from outside: a file system that lost the
tail of a file in a crash, a copy cut short, a disk that filled under another tool. Each
check reads only the end of a file (a sweep of 10k runs stays a second's work) and answers
None or one line that names the file and says what to do.
- `checkpoint.pt`, `model.pkl`: torch writes zip archives; a truncated or garbage one has no
  zip end record.
- `results.jsonl`: a `done` run must have one, non-empty, whose last line is a whole JSON
  record (a cut tail ends mid-line).
"""
import json
import os
import zipfile
from typing import Optional

RECORDS_FILE = "results.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pkl"
DONE_FILE = "done"
TAIL_BYTES = 1 << 16


def torch_file_problem(path: str) -> Optional[str]:
    """None when `path` is absent or a complete zip archive (torch.save's format), else why."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    if size == 0:
        return "is empty"
    try:
        ok = zipfile.is_zipfile(path)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None if ok else "is truncated or not a torch file"


def records_tail_problem(path: str) -> Optional[str]:
    """None when results.jsonl exists and ends in a whole JSON record; else why."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return "is empty"
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return "is missing"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not tail.endswith(b"\n"):
        return "ends mid-line (cut)"
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        rec = json.loads(last)
    except ValueError:
        return "has an unreadable last line"
    if not isinstance(rec, dict) or "step" not in rec:
        return "has a last line that is not a record"
    return None


def done_run_problem(run_dir: str, needs_model: Optional[bool] = None) -> Optional[str]:
    """One line on a `done` run whose result is damaged, or None.

    `needs_model`: whether the run saves model.pkl (None: check it only where it exists)."""
    rec = records_tail_problem(os.path.join(run_dir, RECORDS_FILE))
    if rec is not None:
        what = "done without records" if rec in ("is missing", "is empty") else "records damaged"
        return (f"{what}: {os.path.join(run_dir, RECORDS_FILE)} {rec}; delete "
                f"{os.path.join(run_dir, DONE_FILE)} and run it again (it retrains from step 0 "
                f"and rewrites the records)")
    model = os.path.join(run_dir, MODEL_FILE)
    if needs_model and not os.path.exists(model):
        problem = "is missing"
    else:
        problem = torch_file_problem(model)
    if problem is not None:
        return (f"model damaged: {model} {problem} (the records are intact and collected); "
                f"to rebuild it delete {model} and {os.path.join(run_dir, DONE_FILE)} and run "
                f"it again")
    return None


def unfinished_run_problem(run_dir: str) -> Optional[str]:
    """One line on an unfinished run whose checkpoint cannot be resumed from, or None."""
    path = os.path.join(run_dir, CHECKPOINT_FILE)
    problem = torch_file_problem(path)
    if problem is None:
        return None
    return (f"checkpoint damaged: {path} {problem}; delete it to restart the run from step 0 "
            f"(the records are rewritten)")
