"""Atomic writes: a final name never holds a partial file or folder, whatever interrupts the writer.

The temporary file (or folder) beside the target is removed on any exception, Ctrl-C and SIGTERM, so an
interrupted write leaves the previous target as it was and nothing else. The result gets the permissions
a plain ``open(path, "w")`` / ``mkdir`` would give (the umask, or the replaced file's mode), not the
private 0600/0700 of the temporary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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


def atomic_write(path: Path, write, *, folder: bool = False) -> None:
    """Call ``write(tmp_path)`` on a temporary file (or empty folder) beside ``path``, then rename it to ``path``.

    A folder replaces only a missing or empty folder at ``path``: the rename fails on a non-empty one, so
    nothing the caller did not write is ever deleted.
    """
    path = Path(path)
    with sigterm_raises():
        tmp = None
        try:
            # The temporary name keeps the suffix: writers such as imageio pick the format from it.
            if folder:
                tmp = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            else:
                handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
                os.close(handle)
            write(tmp)
            os.chmod(tmp, _mode(path, folder))
            os.replace(tmp, path)
        finally:
            if tmp is not None and folder:
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp is not None and os.path.lexists(tmp):
                os.remove(tmp)
