"""makd/file_lock.py: an exclusive flock whose holder a second process names; free again the moment its holder dies
(SIGKILL included); a folder made for the lock file is removed when the command is refused; local-only locks of
network file systems are recognised from the mount table."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from makd.file_lock import ExclusiveLock, Holder, LockHeldError, exclusive_lock, local_only_reason

REPO = Path(__file__).resolve().parents[1]
# A holder in another process: takes the lock, says so, then waits (until killed).
HOLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from makd.file_lock import ExclusiveLock
ExclusiveLock(sys.argv[2], "the test's place").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def hold_in_another_process(lock_path: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(REPO), str(lock_path)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_naming_the_holder_and_gets_the_lock_once_the_holder_is_killed(tmp_path):
    lock_path = tmp_path / "place.lock"
    holder = hold_in_another_process(lock_path)
    try:
        recorded = json.loads(lock_path.read_text())
        assert recorded["pid"] == holder.pid and recorded["host"] == socket.gethostname()
        with pytest.raises(LockHeldError) as refused:
            ExclusiveLock(lock_path, "the test's place").acquire()
        message = str(refused.value)
        assert message.startswith(f"the test's place is in use by pid {holder.pid} on {socket.gethostname()} since ")
        assert recorded["since"] in message and f"lock file {lock_path}" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    with exclusive_lock(lock_path, "the test's place") as lock:  # no cleanup: the kernel released it
        assert lock.locked and json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert time.monotonic() - started < 5 and not lock_path.exists()  # removed on the way out


def test_a_refused_lock_leaves_no_folder_and_a_released_one_removes_the_folders_it_made(tmp_path):
    nested = tmp_path / "a" / "b" / "place.lock"
    with exclusive_lock(nested, "nested place"):
        assert nested.exists()
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("a file where a folder belongs")
    with pytest.raises(Exception) as refused:
        ExclusiveLock(tmp_path / "file" / "x.lock", "the output").acquire()
    assert str(refused.value) == f"the output cannot be written: {tmp_path / 'file'} is a file, not a folder (ENOTDIR)"


def test_a_holder_whose_process_is_gone_is_recognised():
    assert Holder(os.getpid(), socket.gethostname(), "t", "").is_dead_here() is False
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert Holder(int(finished.stdout), socket.gethostname(), "t", "").is_dead_here() is True
    assert Holder(int(finished.stdout), "another-host", "t", "").is_dead_here() is False  # cannot tell: not dead


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 0:25 / / rw,relatime - overlay overlay rw,lowerdir=/l
95 27 0:51 / /shared rw,relatime - nfs4 server:/export rw,vers=4.2,local_lock=none,addr=10.0.0.1
96 27 0:52 / /scratch rw,relatime - nfs server:/scratch rw,vers=3,nolock,local_lock=all,addr=10.0.0.2
97 27 0:53 / /lustre rw - lustre 10.0.0.3@tcp:/fs rw,localflock
"""


def test_locks_that_bind_one_host_are_recognised_from_the_mount_table(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    assert local_only_reason(Path("/shared/run"), mountinfo) is None  # NFS forwarding locks: exclusive everywhere
    assert local_only_reason(Path("/scratch/run/x.lock"), mountinfo) == "/scratch is NFS mounted with nolock"
    assert local_only_reason(Path("/lustre/a"), mountinfo) == "/lustre is Lustre mounted with localflock"
    assert local_only_reason(Path("/home/x"), mountinfo) is None
