"""A file lock held while a SQLite store is opened, so processes started together create it only once.

Two ``aloss-tune tune`` commands started at the same moment in a fresh folder both create ``mlflow.db``
(MLflow runs its schema migrations) and ``aloss_tune.db`` (Optuna creates its tables); without a lock one of
them fails on a table the other has just made (``table ... already exists``). The lock is ``<file>.lock``
beside the store, taken with ``fcntl.flock`` (POSIX) and removed when released; elsewhere, or for stores that
are not SQLite files, it is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (relative or absolute), or ``None`` (in memory, not SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


@contextlib.contextmanager
def store_lock(url: str) -> Iterator[None]:
    """Hold ``<file>.lock`` for a SQLite URL within the block (waits for another process holding it).

    The holder removes the lock file when it is done, so none is left beside the store; a process that got
    the lock on a file removed meanwhile takes it again on the new one.
    """
    path = sqlite_path(url)
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a folder we cannot write to: opening the store reports it better
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before us removed this file: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)  # releases the lock
