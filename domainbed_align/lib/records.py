"""Reading results.jsonl files tolerantly: a job killed mid-write leaves a half line."""
import json
import os


def read_jsonl(path):
    """Return (records, n_skipped): records parsed from `path`, lines that do not parse skipped.

    DomainBed reads `json.loads(line[:-1])` and crashes on a pre-empted half line; we skip it
    and let the caller warn with the count.
    """
    records, skipped = [], 0
    with open(path, "rb") as f:  # bytes: a damaged block is not UTF-8, and must not raise
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError
                skipped += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                skipped += 1
    return records, skipped


def is_done(run_dir) -> bool:
    """`done` is the only completion signal (DomainBed)."""
    return os.path.exists(os.path.join(run_dir, "done"))
