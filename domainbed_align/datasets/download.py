"""Resumable HTTP(S) downloads with progress bars, and sha256 of files.

A download is written to `<dest>.part`, beside a sidecar `<dest>.part.json` (URL, validator,
total size); `<dest>` appears only once complete. A rerun asks for `Range: bytes=<have>-` with
`If-Range: <ETag or Last-Modified>`, so a killed download continues where it stopped, and a
remote file that changed in between is fetched again from zero instead of being spliced.
A dropped connection that made progress is retried at once from where it stopped.
"""
import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from domainbed_align.lib.errors import DataError
from domainbed_align.lib.misc import atomic_write_text

CHUNK = 1 << 20
USER_AGENT = "domainbed_align-prepare/1"
OFFLINE_HINT = "on a machine without network pass --archive PATH (README, 'Preparing data')"


class DownloadError(DataError):
    """A download could not be completed; the partial file stays for the next run."""


def progress_bar(total: Optional[int], desc: str, initial: int = 0):
    """A byte progress bar on stderr, silent when stderr is not a terminal (logs, tests)."""
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, mininterval=0.5, disable=not sys.stderr.isatty())


def sha256_file(path: str, desc: Optional[str] = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, progress_bar(os.path.getsize(path), desc or "sha256") as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


class _Dropped(Exception):
    """The connection ended before the body did."""

    def __init__(self, made_progress: bool, reason: str):
        super().__init__(reason)
        self.made_progress = made_progress


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_meta(path: str) -> dict:
    try:
        with open(path) as f:
            meta = json.load(f)
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _content_range(value: Optional[str]):
    """(start, total) of `bytes start-end/total` or `bytes */total`; None where absent."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def download(url: str, dest: str, timeout: float = 30.0, retries: int = 5,
             desc: Optional[str] = None) -> str:
    """Fetch `url` to `dest` (resuming `dest.part`); returns `dest`. Raises DownloadError."""
    if os.path.exists(dest):
        return dest
    part, meta_path = dest + ".part", dest + ".part.json"
    meta = _read_meta(meta_path)
    if meta.get("url") != url:  # a part of another URL (or of unknown origin) cannot continue
        _remove(part)
        meta = {"url": url}
    drops = restarts = 0
    while True:
        have = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            if _fetch(url, part, have, meta, meta_path, timeout, desc or os.path.basename(dest)):
                break
            restarts += 1  # the server refused the range: start again from zero, once
            if restarts > 1:
                raise DownloadError(f"{url} keeps refusing to continue {part}; delete it and "
                                    f"run again")
        except _Dropped as e:
            drops += 1
            if not e.made_progress or drops > retries:
                size = os.path.getsize(part) if os.path.exists(part) else 0
                raise DownloadError(f"download of {url} broke off after {size:,} bytes ({e}); "
                                    f"run the same command again to resume") from None
    os.replace(part, dest)
    _remove(meta_path)
    return dest


def _fetch(url, part, have, meta, meta_path, timeout, desc) -> bool:
    """One request; True when `part` is complete, False to restart from zero."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    host = urllib.parse.urlsplit(url).netloc or url
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # asked past the end: complete already, or stale
            if _content_range(e.headers.get("Content-Range"))[1] == have:
                return True
            _remove(part)
            return False
        raise DownloadError(f"{url} answered HTTP {e.code} ({e.reason}); the link may have "
                            f"moved: pass --url with a mirror, or --archive PATH with a copy "
                            f"you have") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot reach {host} ({reason}); check the network or the URL, "
                            f"or {OFFLINE_HINT}") from None
    with resp:
        if resp.headers.get("Content-Type", "").startswith("text/html"):
            raise DownloadError(f"{url} sent a web page instead of a file (a login, quota or "
                                f"confirmation page?); fetch it in a browser and pass "
                                f"--archive PATH")
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                _remove(part)
                return False
            mode = "ab"
            total = total if total is not None else (have + length if length is not None else None)
        else:  # 200: the server ignored the range (or the remote file changed)
            have, mode, total = 0, "wb", length
        meta.update(validator=resp.headers.get("ETag") or resp.headers.get("Last-Modified"),
                    total=total)
        atomic_write_text(meta_path, json.dumps(meta))
        got = 0
        read = getattr(resp, "read1", resp.read)  # what has arrived, not a full CHUNK
        with open(part, mode) as f, progress_bar(total, desc, initial=have) as bar:
            while True:
                try:
                    block = read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Dropped(got > 0, f"{type(e).__name__}: {e}") from None
                if not block:
                    break
                try:
                    f.write(block)
                    f.flush()  # a killed run keeps every byte it received
                except OSError as e:
                    raise DownloadError(f"cannot write {part} ({e.strerror or e}); free some "
                                        f"space or pick another --data_dir") from None
                got += len(block)
                bar.update(len(block))
        if total is not None and have + got < total:
            raise _Dropped(got > 0, f"got {have + got:,} of {total:,} bytes")
        return True
