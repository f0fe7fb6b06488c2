"""The one root of user errors and the one way every command reports them.

A user error (bad config, file, image, reply, environment) is a `MakdError`: the command prints
`error: <one line>` on stderr and exits with `USER_ERROR_EXIT_CODE`. Anything else is a bug in
makd and keeps its traceback. Ctrl-C prints how to continue and exits with 130 (the shell's
convention for SIGINT); SIGTERM (what SLURM and Kubernetes send before a kill) is handled the same way
and exits with 143 (128 + 15).

The machine refusing a read or a write (disk full, a file-size limit, a read-only or forbidden folder, a
file where a folder belongs and the reverse) is a user error too: one line naming the path and the cause.
Writes go through makd.atomic_files, so the file a failed write aimed at still holds its previous content.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT
TERMINATED_EXIT_CODE = 143  # 128 + SIGTERM


class MakdError(Exception):
    """A problem with the user's input or environment, explained in one line (name the value, place and fix).

    Under torchrun every rank checks the same inputs and reaches the same error, so only rank 0 prints it; an error
    one rank can meet alone (its batches, its device) sets `rank_specific` and is printed by that rank, naming it.
    """

    rank_specific: bool = False


class ConfigError(MakdError, ValueError):
    """A configuration value is unknown, of the wrong type or inconsistent with the data.

    Defined here, below every layer, since the readers of the stage files and the methods check config values too.
    """


class EnvironmentFailure(MakdError):
    """The machine refused a read or a write (disk full, file-size limit, read-only folder, ...).

    What the command had finished is kept, so its one line ends with the command's resume hint.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt: every `finally` and every Ctrl-C path
    (keep what is done, stop the children) runs unchanged; only the exit code and the first word differ."""

    exit_code = TERMINATED_EXIT_CODE
    word = "terminated (SIGTERM)"


# errno -> what it means for a user (the errno name follows in parentheses, so it can be searched for)
OS_ERROR_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file-size limit (ulimit -f) or the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "a file of that name is in the way of a folder",
    errno.EIO: "input/output error (a failing disk or a lost network file system)",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error_cause(err: OSError) -> str:
    """`err` in words, with its errno name: "no space left on the device (ENOSPC)"."""
    name = errno.errorcode.get(err.errno or 0, "")
    cause = OS_ERROR_CAUSES.get(err.errno or 0) or (err.strerror or str(err)).lower()
    return f"{cause} ({name})" if name else cause


def blocking_file(path: str | os.PathLike) -> str | None:
    """For ENOTDIR: the nearest ancestor of `path` that exists and is a file (what blocks the folder), if any."""
    current = os.path.abspath(os.fspath(path))
    while True:
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
        if os.path.lexists(current):
            return current if not os.path.isdir(current) else None


def describe_os_error(err: OSError, path: str | os.PathLike | None = None, doing: str = "write") -> str:
    """One line: "cannot write <path>: <cause> (ERRNO)", naming the file that blocks a folder for ENOTDIR."""
    path = os.fspath(path) if path is not None else (err.filename or "")
    if err.errno == errno.ENOTDIR:
        blocker = blocking_file(path)
        if blocker is not None:
            return f"cannot {doing} {path}: {blocker} is a file, not a folder (ENOTDIR)"
    return f"cannot {doing} {path}: {os_error_cause(err)}"


def is_environment_error(err: BaseException) -> bool:
    """An OSError the machine raised about a path (not a bug of makd): the errnos of OS_ERROR_CAUSES."""
    return isinstance(err, OSError) and err.errno in OS_ERROR_CAUSES


def one_line(message: str) -> str:
    """`message` with newlines folded, so an error from a library never spreads over several lines."""
    return " ".join(str(message).split())


def _rank() -> int:
    """This process's rank under torchrun (0 without it)."""
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


# The stop signals this process received (SIGTERM, SIGINT), in order: from the first on, the command is stopping.
_stop_received: list[int] = []


def _ignore_signal(_signum, _frame) -> None:
    pass


def _note_stop_signal(signum: int) -> None:
    _stop_received.append(signum)
    if signum == signal.SIGTERM and hasattr(signal, "SIGCHLD"):
        # SLURM signals every process of a job: the DataLoader workers die of this SIGTERM too, and torch's SIGCHLD
        # handler would raise about each of them at any later moment of the stop (in a save, in the hint, at exit).
        # A handler that does nothing, not SIG_DFL: a SIGCHLD already pending would then be reported as "ignored
        # due to race condition", with a traceback.
        signal.signal(signal.SIGCHLD, _ignore_signal)


def _stop_exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise_stop(signum, _frame):
    _note_stop_signal(signum)
    raise _stop_exception(signum)


def raise_if_stopped() -> None:
    """At a safe point of a long loop (a training step, a stage-2 step): raise the stop a signal asked for.

    The signal handler raises at once, wherever the main thread is; where Python cannot raise (a fork hook, a
    finaliser) it drops the exception (see `_quiet_dropped_stop`), and this raises it at the next safe point.
    """
    if _stop_received:
        raise _stop_exception(signal.SIGTERM if signal.SIGTERM in _stop_received else _stop_received[0])


def _quiet_dropped_stop(default_hook):
    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _stop_received:
            return  # raised again at the next safe point (raise_if_stopped); no stray traceback meanwhile
        default_hook(unraisable)

    return hook


@contextlib.contextmanager
def stop_signals_as_exceptions() -> Iterator[None]:
    """SIGTERM raises Terminated and Ctrl-C KeyboardInterrupt, both remembered (`raise_if_stopped`); SIGXFSZ is
    ignored, so a file-size limit makes the write fail with EFBIG (one line) instead of killing the process without a
    word.

    Main thread only (Python delivers signals there); elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _stop_received.clear()  # a command run in the same process after a stopped one starts afresh
    previous = {number: signal.signal(number, _raise_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    if hasattr(signal, "SIGXFSZ"):
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _quiet_dropped_stop(sys.unraisablehook)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        sys.unraisablehook = previous_hook


@contextlib.contextmanager
def deferred_stop_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends (a checkpoint and the manifest that vouches for it are written
    together), then raise as they would have. Main thread only; elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def remember(signum, _frame):
        caught.append(signum)
        _note_stop_signal(signum)

    previous = {number: signal.signal(number, remember) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if caught:
        raise _stop_exception(signal.SIGTERM if signal.SIGTERM in caught else caught[0])


def _hint(resume_hint: str | Callable[[Sequence[str] | None], str], argv: Sequence[str] | None) -> str:
    return resume_hint(argv) if callable(resume_hint) else resume_hint


def run_command(
    body: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None,
    resume_hint: str | Callable[[Sequence[str] | None], str] = "",
) -> int:
    """Run a command body: a MakdError becomes one line and exit code 2, Ctrl-C one line and 130, SIGTERM one line
    and 143; a failed read or write of the machine (EnvironmentFailure, or an OSError of OS_ERROR_CAUSES) one line
    naming the path and the cause, and exit code 2.

    `resume_hint` says how to continue after an interruption or an environment failure (a string, or a function of
    argv). Under torchrun only rank 0 prints (every rank reaches the same error on the same inputs), except errors
    marked `rank_specific`, which their rank prints with its number.
    """
    rank = _rank()

    def say(line: str) -> None:
        if rank == 0:
            print(line, file=sys.stderr, flush=True)

    with stop_signals_as_exceptions():
        try:
            return body(argv)
        except KeyboardInterrupt as err:
            return _stopped(err, _hint(resume_hint, argv), say)
        except Exception as err:
            if signal.SIGTERM in _stop_received:
                # An error while stopping for SIGTERM (a DataLoader worker killed by the same signal before torch's
                # SIGCHLD handler was quieted) is the termination, not a failure of its own.
                return _stopped(Terminated(), _hint(resume_hint, argv), say)
            if isinstance(err, MakdError):
                line = one_line(err.args[0] if err.args else type(err).__name__)
                if isinstance(err, EnvironmentFailure):
                    line += _then(_hint(resume_hint, argv))
                if err.rank_specific and rank != 0:
                    print(f"error (rank {rank}): {line}", file=sys.stderr, flush=True)
                else:
                    say(f"error: {line}")
                return USER_ERROR_EXIT_CODE
            if is_environment_error(err):
                say(f"error: {one_line(describe_os_error(err, doing='use'))}{_then(_hint(resume_hint, argv))}")
                return USER_ERROR_EXIT_CODE
            raise


def _then(hint: str) -> str:
    return f"; {hint}" if hint else ""


def _stopped(err: KeyboardInterrupt, hint: str, say: Callable[[str], None]) -> int:
    """Ctrl-C or SIGTERM: one line saying how to continue, and the shell's exit code for the signal."""
    say(f"{getattr(err, 'word', 'interrupted')}{_then(hint)}")
    return getattr(err, "exit_code", INTERRUPTED_EXIT_CODE)
