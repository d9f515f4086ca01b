"""The run list of a sweep folder with each job's state, read from its files alone.

done: the `done` file exists (DomainBed's only completion signal). failed: the job wrote an
error (the launchers' `error.txt`, or a traceback / `error:` line in the trainer's `err.txt`);
the last line of that error is kept, so a failing run is found at a glance. incomplete:
anything else (running, pre-empted, or killed without a word). No queue is asked: the page
regenerates from a copy of the folder too.
"""
import dataclasses
import os
import re
from typing import List, Optional

from domainbed_align.lib.records import RESULTS_FILE, first_record, parse_line

DONE, INCOMPLETE, FAILED = "done", "incomplete", "failed"
ERROR_FILE = "error.txt"        # written by the launchers when a job raises
ERR_FILE = "err.txt"            # the trainer's stderr (DomainBed's)
RUNNING_FILE = "running"        # the local launchers' marker while a job runs
RUN_FILES = (RESULTS_FILE, "done", ERR_FILE, "out.txt", ERROR_FILE)
TAIL_BYTES = 65536
_ERROR_LINE = re.compile(r"^(error: |Traceback |\w+(\.\w+)*(Error|Exception|Interrupt)\b)")


@dataclasses.dataclass
class RunState:
    name: str
    state: str
    algorithm: str = ""
    dataset: str = ""
    test_envs: str = ""
    trial_seed: Optional[int] = None
    hparams_seed: Optional[int] = None
    last_step: Optional[int] = None
    detail: str = ""          # failed: the last line of its error; incomplete: a hint


def _tail_lines(path: str) -> List[str]:
    """The non-empty lines of the last TAIL_BYTES of a file (whole lines only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > TAIL_BYTES:
        lines = lines[1:]           # the first one is cut
    return [line.strip() for line in lines if line.strip()]


def last_error_line(run_dir: str) -> Optional[str]:
    """The last line of the job's error, or None when it reported none.

    error.txt (the launchers) wins; in err.txt a traceback's last line or an `error:` line
    counts, warnings and progress lines do not."""
    lines = _tail_lines(os.path.join(run_dir, ERROR_FILE))
    if lines:
        return lines[-1]
    lines = _tail_lines(os.path.join(run_dir, ERR_FILE))
    for k in range(len(lines) - 1, -1, -1):
        if lines[k].startswith("Traceback "):
            after = lines[k + 1:]
            return after[-1] if after else lines[k]
        if _ERROR_LINE.match(lines[k]):
            return lines[k]
    return None


def last_step(run_dir: str) -> Optional[int]:
    """The step of the last complete record (read from the end of the file)."""
    for line in reversed(_tail_lines(os.path.join(run_dir, RESULTS_FILE))):
        rec = parse_line(line)
        if rec is not None and isinstance(rec.get("step"), (int, float)):
            return int(rec["step"])
    return None


def run_state(run_dir: str) -> RunState:
    name = os.path.basename(os.path.normpath(run_dir))
    args = (first_record(run_dir) or {}).get("args") or {}
    if os.path.exists(os.path.join(run_dir, "done")):
        state, detail = DONE, ""
    else:
        error = last_error_line(run_dir)
        state, detail = (FAILED, error) if error else (INCOMPLETE, "")
        if state == INCOMPLETE and os.path.exists(os.path.join(run_dir, RUNNING_FILE)):
            detail = "running marker present"
    envs = args.get("test_envs")
    return RunState(name, state, str(args.get("algorithm", "")), str(args.get("dataset", "")),
                    " ".join(str(e) for e in envs) if isinstance(envs, list) else "",
                    args.get("trial_seed"), args.get("hparams_seed"), last_step(run_dir),
                    detail)


def run_states(input_dir: str) -> List[RunState]:
    """Every run folder under the sweep folder (one holding any of RUN_FILES), failed first,
    then incomplete, then done; by folder name within each."""
    out = []
    for name in sorted(os.listdir(input_dir)):
        run_dir = os.path.join(input_dir, name)
        if os.path.isdir(run_dir) and any(os.path.exists(os.path.join(run_dir, f))
                                          for f in RUN_FILES):
            out.append(run_state(run_dir))
    order = {FAILED: 0, INCOMPLETE: 1, DONE: 2}
    return sorted(out, key=lambda r: (order[r.state], r.name))
