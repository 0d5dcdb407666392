"""Atomic writes: a final name never holds a partial file or folder, whatever interrupts the writer.

The temporary file (or folder) beside the target is removed on any exception, Ctrl-C and SIGTERM, so an
interrupted write leaves the previous target as it was and nothing else. The result gets the permissions
a plain ``open(path, "w")`` / ``mkdir`` would give (the umask, or the replaced file's mode), not the
private 0600/0700 of the temporary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
from pathlib import Path


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises SystemExit(143) (so ``finally`` blocks run) instead of killing at once.

    Only in the main thread and only where SIGTERM has its default action (an application's own handler
    or an ignored SIGTERM is left alone).
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def signals_deferred():
    """Within the block, SIGINT and SIGTERM are held and delivered at its end (to the handlers in force then).

    For starting a child process that must be stopped on any interruption: a signal inside ``Popen`` would
    raise before its handle is returned, and nobody could stop the child. Main thread only (elsewhere the block
    runs unchanged: signals reach only the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {signum: signal.signal(signum, lambda number, frame: held.append(number))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            os.kill(os.getpid(), signum)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode(path: Path, folder: bool) -> int:
    """The mode a plain write would give: the replaced file's, else the default under the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return (0o777 if folder else 0o666) & ~_umask()


def _host() -> str:
    """This machine's name as it appears in temporary names (a shared folder may be written from several hosts,
    and a process id means something only on its own)."""
    return re.sub(r"[^\w-]", "_", socket.gethostname())


def _temporary_prefix(path: Path) -> str:
    """The start of this process's temporary names for ``path``: ``.<name>.<host>-<pid>.`` (the rest is random)."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` that a process of this host left when it was killed (kill -9, power
    loss: no ``finally`` ran); a live writer's are kept. Returns what was removed."""
    host = _host()
    # mkstemp/mkdtemp's random part is [a-z0-9_]; a file keeps the target's suffix after ".tmp", a folder has none.
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(host)}-(\d+)\.[a-z0-9_]+\.tmp"
                         rf"(?:{re.escape(path.suffix)})?")
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def atomic_write(path: Path, write, *, folder: bool = False) -> None:
    """Call ``write(tmp_path)`` on a temporary file (or empty folder) beside ``path``, then rename it to ``path``.

    A folder replaces only a missing or empty folder at ``path``: the rename fails on a non-empty one, so
    nothing the caller did not write is ever deleted. Temporaries of ``path`` left by killed processes are
    removed first (see :func:`remove_stale_temporaries`).
    """
    path = Path(path)
    remove_stale_temporaries(path)
    with sigterm_raises():
        tmp = None
        try:
            # The temporary name keeps the suffix: writers such as imageio pick the format from it.
            prefix = _temporary_prefix(path)
            if folder:
                tmp = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent)
            else:
                handle, tmp = tempfile.mkstemp(prefix=prefix, suffix=f".tmp{path.suffix}", dir=path.parent)
                os.close(handle)
            write(tmp)
            os.chmod(tmp, _mode(path, folder))
            os.replace(tmp, path)
        finally:
            if tmp is not None and folder:
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp is not None and os.path.lexists(tmp):
                os.remove(tmp)
