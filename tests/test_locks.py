"""lib/locks.py: a flock that a killed holder cannot leave stuck, and liveness markers."""
import os
import signal
import subprocess
import sys
import time

import pytest

from domainbed_align.lib import locks

HOLD = """
import sys, time
from domainbed_align.lib.locks import FileLock
FileLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_busy_lock_names_its_holder_and_a_killed_holder_frees_it(tmp_path):
    path = tmp_path / ".sweep.lock"
    proc = _holder(path)
    try:
        with pytest.raises(locks.LockBusy) as e:
            locks.FileLock(str(path), advice="wait for it").acquire()
        msg = str(e.value)
        assert msg.startswith(f"{path} is held by ") and f" {proc.pid} " in msg
        assert msg.endswith("; wait for it") and "\n" not in msg
    finally:
        proc.send_signal(signal.SIGKILL)   # no clean-up runs: the kernel drops the flock
        proc.wait()
    assert path.exists()                    # the file stays, the lock does not
    with locks.FileLock(str(path)):
        assert f" {os.getpid()} " in path.read_text()
    assert not path.exists()                # released: removed


def test_waiting_acquirer_gets_the_lock_when_the_holder_ends(tmp_path):
    path = tmp_path / "x.lock"
    proc = _holder(path)
    start = time.monotonic()
    subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -9 {proc.pid}"])
    with locks.FileLock(str(path), wait_s=30):
        assert 0.4 < time.monotonic() - start < 30
    proc.wait()


def test_a_lock_removed_by_its_releasing_holder_is_not_shared(tmp_path):
    """The acquirer checks that the file it locked is still the one at the path."""
    path = str(tmp_path / "y.lock")
    a = locks.FileLock(path).acquire()
    stale_fd = os.open(path, os.O_RDWR)      # what a racing acquirer opened before release
    a.release()
    b = locks.FileLock(path).acquire()       # a new file at the path
    assert os.fstat(stale_fd).st_ino != os.stat(path).st_ino
    with pytest.raises(locks.LockBusy):
        locks.FileLock(path).acquire()
    b.release()
    os.close(stale_fd)


def test_markers_alive_dead_and_foreign(tmp_path):
    m = tmp_path / "queued"
    m.write_text(locks.marker_text())
    assert locks.marker_alive(str(m))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    m.write_text(f"{os.uname().nodename} {dead.pid}\n")
    assert not locks.marker_alive(str(m))
    m.write_text("another-host 1\n")
    assert locks.marker_alive(str(m))           # another machine's process: trusted
    m.write_text("garbage")
    assert not locks.marker_alive(str(m))
    assert not locks.marker_alive(str(tmp_path / "absent"))
