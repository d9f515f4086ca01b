"""Seeds, hashing and atomic file writes shared by every script."""
import contextlib
import hashlib
import json
import os
import tempfile


def seed_hash(*args) -> int:
    """DomainBed's seed_hash: md5 of repr of the argument tuple, mod 2**31."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


@contextlib.contextmanager
def atomic_open(path, mode="w", fsync=True):
    """Open a temp file beside `path`; on success rename it over `path` (readers never see half).

    `fsync=False` for small files that can be rebuilt (a thousand fsyncs cost seconds)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str, fsync=True) -> None:
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)


def json_line(record: dict) -> str:
    """One records line as DomainBed writes it: keys sorted."""
    return json.dumps(record, sort_keys=True) + "\n"
