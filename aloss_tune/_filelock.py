"""A lock held while a store is opened, so processes started together create its tables only once.

Two ``aloss-tune tune`` commands started at the same moment in a fresh folder both create ``mlflow.db``
(MLflow runs its schema migrations) and ``aloss_tune.db`` (Optuna creates its tables); without a lock one of
them fails on a table the other has just made (``table ... already exists``). The same happens on a fresh
database server: workers started together on an empty PostgreSQL database race on ``CREATE TABLE`` (one of
them fails with ``duplicate key value violates unique constraint "pg_type_typname_nsp_index"``).

`store_lock` serialises the opening of a store among processes on any machine:

* a SQLite file: ``<file>.lock`` beside it, taken with ``fcntl.flock`` (POSIX) and removed when released;
* PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on one key of the database;
* MySQL / MariaDB: the named lock ``GET_LOCK('aloss_tune.schema', ...)``.

A database lock is taken on a connection of its own and given up after `DB_LOCK_TIMEOUT_S` (the store is then
opened unlocked, as before). Anything else (another database, a platform without ``fcntl``) opens unlocked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = "aloss_tune.schema"
# PostgreSQL's advisory-lock key (a signed 64-bit integer) for the same name.
PG_LOCK_KEY = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True)
DB_LOCK_TIMEOUT_S = 120.0


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (relative or absolute), or ``None`` (in memory, not SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


@contextlib.contextmanager
def store_lock(url: str, *, connect_args: dict[str, Any] | None = None) -> Iterator[None]:
    """Hold the lock of the store at ``url`` within the block (waits for another process holding it).

    ``connect_args`` go to the database driver when a database lock is taken (a connection timeout).
    """
    if url.startswith(("postgresql", "mysql", "mariadb")):
        with _database_lock(url, connect_args or {}):
            yield
        return
    with _file_lock(url):
        yield


@contextlib.contextmanager
def _file_lock(url: str) -> Iterator[None]:
    """``<file>.lock`` for a SQLite URL. The holder removes the lock file when it is done, so none is left
    beside the store; a process that got the lock on a file removed meanwhile takes it again on the new one."""
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


@contextlib.contextmanager
def _database_lock(url: str, connect_args: dict[str, Any]) -> Iterator[None]:
    """A PostgreSQL advisory lock or a MySQL named lock, on a connection of its own, polled without blocking
    (so that a lock never waits past `DB_LOCK_TIMEOUT_S`). A server that cannot be reached is left to the
    caller, which reports it when it opens the store itself."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    postgres = url.startswith("postgresql")
    if postgres:
        take = sqlalchemy.text(f"SELECT pg_try_advisory_lock({PG_LOCK_KEY})")
        give = sqlalchemy.text(f"SELECT pg_advisory_unlock({PG_LOCK_KEY})")
    else:
        take = sqlalchemy.text(f"SELECT GET_LOCK('{LOCK_NAME}', 0)")
        give = sqlalchemy.text(f"SELECT RELEASE_LOCK('{LOCK_NAME}')")
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        connection = engine.connect()
    except Exception:  # noqa: BLE001 - no driver, unreachable, wrong password: the caller says which
        yield
        return
    held = False
    try:
        deadline = time.monotonic() + DB_LOCK_TIMEOUT_S
        while True:
            held = bool(connection.execute(take).scalar())
            connection.commit()
            if held or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        yield
    finally:
        try:
            if held:
                connection.execute(give)
                connection.commit()
        finally:
            connection.close()
            engine.dispose()
