"""One writer at a time: an exclusive OS file lock (flock) on a lock file, held while a command writes a place.

The kernel releases the lock when its holder exits in any way (a crash, SIGKILL), so a lock left by a dead run
is free at once: nothing to clean up by hand. The holder writes who it is into the lock file (pid, host, since
when, command), and a second writer stops at once with one line naming it.

File systems: flock is exclusive across the hosts of an NFS mount only when the client forwards the locks to the
server (the default since Linux 2.6.12); a mount with `nolock` or `local_lock=flock|all` (Lustre: `localflock`)
keeps them on one host. That is detected from the mount table and said in a warning, as is a file system that
refuses locks altogether (the command then goes on without one): a lock that does not exclude is never pretended.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from makd.errors import EnvironmentFailure, MakdError, blocking_file, describe_os_error, is_environment_error

# A holder on this host whose pid is gone may still hold the lock for a few seconds through forked helpers that
# inherited it (DataLoader workers notice their parent's death within about 5 s): wait that long before refusing.
ORPHAN_WAIT_SECONDS = 15.0
_NO_LOCK_ERRNOS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockHeldError(MakdError):
    """Another process holds the lock: it is writing the same run folder, stage-2 output or study."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as it wrote itself into the lock file."""

    pid: int
    host: str
    since: str  # UTC, ISO 8601
    command: str

    @classmethod
    def me(cls) -> Holder:
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        return cls(os.getpid(), socket.gethostname(), now, shlex.join(sys.argv) if sys.argv else "")

    @classmethod
    def read(cls, fd: int) -> Holder | None:
        try:
            data = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8"))
            return cls(int(data["pid"]), str(data["host"]), str(data["since"]), str(data.get("command", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        command = f" ({self.command[:160]})" if self.command else ""
        return f"pid {self.pid} on {self.host} since {self.since}{command}"

    def is_dead_here(self) -> bool:
        """The holder ran on this host and its process is gone (only inherited copies of the lock may remain)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


MOUNTINFO = Path("/proc/self/mountinfo")


def _mount_of(path: Path, mountinfo: Path = MOUNTINFO) -> tuple[str, str, set[str]] | None:
    """(mount point, file system type, options) of the mount holding `path`, from the mount table (Linux)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    best = None
    target = str(path.resolve())
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 3:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            options = set(fields[5].split(",")) | set(tail[2].split(","))
            best = (point, tail[0], options)
    return best


def local_only_reason(path: Path, mountinfo: Path = MOUNTINFO) -> str | None:
    """Why a flock on `path` would bind this host only (a network file system mounted without lock forwarding)."""
    mount = _mount_of(path, mountinfo)
    if mount is None:
        return None
    point, fstype, options = mount
    if fstype.startswith("nfs"):
        for option in ("nolock", "local_lock=flock", "local_lock=all"):
            if option in options:
                return f"{point} is NFS mounted with {option}"
    if fstype == "lustre" and "localflock" in options:
        return f"{point} is Lustre mounted with localflock"
    return None


def _warn(line: str) -> None:
    print(f"[makd] warning: {line}", file=sys.stderr, flush=True)


class ExclusiveLock:
    """The lock on one lock file; `acquire` raises LockHeldError (one line) when another process holds it."""

    def __init__(self, lock_path: str | os.PathLike, what: str, warn: Callable[[str], None] = _warn) -> None:
        self.path, self.what, self.warn = Path(lock_path), what, warn
        self.fd: int | None = None
        self.locked = False  # False after acquire only where the file system gives no lock (warned)
        self.created: list[Path] = []  # folders made to hold the lock file, removed on release when left empty

    def acquire(self) -> ExclusiveLock:
        deadline = None
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = Holder.read(fd)
                os.close(fd)
                if holder is not None and holder.is_dead_here():
                    deadline = deadline or time.monotonic() + ORPHAN_WAIT_SECONDS
                    if time.monotonic() < deadline:
                        time.sleep(0.2)
                        continue
                self.release_folders()
                raise LockHeldError(self._held_message(holder)) from None
            except OSError as err:
                if err.errno not in _NO_LOCK_ERRNOS:
                    os.close(fd)
                    raise
                self.warn(f"cannot lock {self.path} ({os.strerror(err.errno)}): this file system gives no locks, so "
                          f"a second process writing {self.what} would not be stopped")  # fmt: skip
                self.fd, self.locked = fd, False
                return self
            if self._still_the_lock_file(fd):
                break
            os.close(fd)  # its holder removed the file as we locked it: lock the file that is there now
        self.fd, self.locked = fd, True
        reason = local_only_reason(self.path)
        if reason:
            self.warn(f"{reason}: the lock on {self.what} ({self.path}) holds on this host only; do not write it "
                      "from another host at the same time")  # fmt: skip
        self._write_holder()
        return self

    def _open(self) -> int:
        try:
            self._make_folder()
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except (FileExistsError, NotADirectoryError):  # a file stands where a folder of the path belongs
            blocker = blocking_file(self.path) or self.path.parent
            raise MakdError(f"{self.what} cannot be written: {blocker} is a file, not a folder (ENOTDIR)") from None
        except OSError as err:
            if is_environment_error(err):
                raise EnvironmentFailure(describe_os_error(err, self.path, "create the lock file")) from None
            raise

    def _make_folder(self) -> None:
        missing = []
        for folder in self.path.parents:
            if folder.exists() or folder.is_symlink():
                break
            missing.append(folder)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.created = self.created or missing  # innermost first

    def _still_the_lock_file(self, fd: int) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)

    def _write_holder(self) -> None:
        data = json.dumps(Holder.me().__dict__).encode("utf-8")
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError:  # a full disk: the lock holds all the same, only the holder's name is missing
            pass

    def _held_message(self, holder: Holder | None) -> str:
        if holder is None:
            who = "another process (it has not written its name yet)"
        else:
            who = holder.describe()
            if holder.is_dead_here():
                who += f" (gone, but processes it started still hold the lock after {ORPHAN_WAIT_SECONDS:.0f} s)"
        return f"{self.what} is in use by {who}; wait until it ends, or stop it (lock file {self.path})"

    def release_folders(self) -> None:
        """Remove the folders made for the lock file when nothing else was put in them."""
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break
        self.created = []

    def release(self, remove: bool = False) -> None:
        """Let go; `remove` deletes the lock file first (while still holding it, so no one locks a deleted file)."""
        if self.fd is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                if self._still_the_lock_file(self.fd):
                    os.unlink(self.path)
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd, self.locked = None, False
        if remove:  # a command refused at once leaves no folder it made only for its lock
            self.release_folders()


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike, what: str, *, remove: bool = True) -> Iterator[ExclusiveLock]:
    """Hold the lock on `lock_path` for the block (LockHeldError when another process holds it); the lock file is
    removed on the way out when `remove`."""
    lock = ExclusiveLock(lock_path, what).acquire()
    try:
        yield lock
    finally:
        lock.release(remove=remove)
