"""Advisory file locks (flock) and liveness markers, for commands that share one folder.

A `FileLock` is held by an open file description, so the kernel drops it when the holder
exits, however it exits (kill -9, a node's OOM killer): a killed launcher cannot leave a
sweep locked. The lock file names its holder (host, pid, start time, command) so the one
refused can say who has it. On release the file is removed (no empty `.lock` left behind);
an acquirer checks that the file it locked is still the one at the path, so removal cannot
let two holders in. On NFS, Linux implements flock with fcntl byte-range locks, which NFSv4
serves; a file system that ignores locks (Lustre without `-o flock`) gives no exclusion.
"""
import errno
import fcntl
import os
import socket
import sys
import time
from typing import Optional

from domainbed_align.lib.errors import DomainBedAlignError


class LockBusy(DomainBedAlignError):
    """Another live process holds the lock; the message names it and what to do."""


def holder_line() -> str:
    """`host pid start-time command` of this process, one line."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    return f"{socket.gethostname()} {os.getpid()} {stamp} {cmd}"


class FileLock:
    """`with FileLock(path, advice): ...` holds an exclusive flock on `path` inside the block.

    Args:
        path: the lock file (created if absent, removed on release).
        advice: what the refused caller should do, appended to the `LockBusy` message.
        wait_s: how long to wait for a busy lock before raising (0: refuse at once).
    """

    def __init__(self, path: str, advice: str = "", wait_s: float = 0.0):
        self.path, self.advice, self.wait_s = path, advice, wait_s
        self._fd: Optional[int] = None

    def acquire(self) -> "FileLock":
        deadline = time.monotonic() + self.wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    holder = read_holder(self.path) or "a process that has not written its name yet"
                    raise LockBusy(f"{self.path} is held by {holder}"
                                   + (f"; {self.advice}" if self.advice else "")) from None
                time.sleep(0.1)
                continue
            try:  # the holder before us may have removed the file after we opened it
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, (holder_line() + "\n").encode("utf-8", "replace"))
            self._fd = fd
            return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: nobody can lock the old inode then
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_holder(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# Markers: `host pid` files that say a live process on some host owns a job
# --------------------------------------------------------------------------------------------

def marker_text() -> str:
    return f"{socket.gethostname()} {os.getpid()}\n"


def marker_alive(path: str) -> bool:
    """True when the marker's process is alive (on this host; another host's is trusted)."""
    try:
        with open(path) as f:
            host, pid = f.read().split()[:2]
        if host != socket.gethostname():
            return True
        os.kill(int(pid), 0)
        return True
    except PermissionError:
        return True  # alive, another user's
    except (OSError, ValueError):
        return False
