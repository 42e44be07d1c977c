"""SQLite stores in write-ahead-log mode with ``synchronous=NORMAL`` while a study writes them.

A study commits to its SQLite files all the time: every epoch's intermediate value (Optuna), every trial's
attributes, every MLflow call. In SQLite's default rollback-journal mode with ``synchronous=FULL`` each commit
waits for several fsyncs (measured on this project's machines: 4.3 ms a commit, against 0.26 ms in WAL mode
with ``FULL`` and 0.007 ms with ``NORMAL``; an Optuna ``trial.report`` took 15-30 ms, and 0.8 ms in WAL mode).

`use_wal` registers a store file that this process writes; every connection SQLAlchemy then opens to it
(Optuna's storage, MLflow's tracking store) runs ``PRAGMA journal_mode=WAL`` and, once the file is in WAL mode,
``PRAGMA synchronous=NORMAL``. When the process exits, the last process writing the file switches it back to
SQLite's default rollback journal, so that a study at rest is an ordinary SQLite file: a reader that opens it
read-only (``aloss-tune best``, ``report``) creates nothing beside it. What WAL keeps and what it gives up
(SQLite's documentation, "Write-Ahead Logging" and "PRAGMA synchronous"):

* **Several processes of one machine** share a WAL database safely: they coordinate through a shared-memory
  index (the ``-shm`` file beside the database), and readers no longer block the writer nor the writer
  readers, so ``optuna-dashboard`` and ``mlflow ui`` read a study while it runs. That shared memory needs one
  machine: keep SQLite stores on a local disk (never on a network file system, where SQLite's locking is
  unreliable in any mode); workers on several machines share a database server.
* **Consistency** is kept in every case. **Durability**: a process that crashes or is killed loses nothing it
  committed (the next process to open the file replays its log); a power cut or an operating-system crash may
  roll back the last transactions, never corrupt the file, and a resumed study handles those trials like any
  other unfinished one.
* A file is switched only when no other connection holds it in a transaction; when that fails, the connection
  keeps the file's mode and SQLite's default ``synchronous=FULL``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
from typing import Any

from aloss_tune._filelock import sqlite_path

_log = logging.getLogger("aloss_tune")
_FILES: set[str] = set()
_OPEN: dict[int, tuple[str, sqlite3.Connection]] = {}  # id -> (file, connection) of the connections set up here
_LOCK = threading.Lock()
_LISTENING = False


def use_wal(url: str) -> None:
    """Open every later SQLAlchemy connection of this process to the SQLite file of ``url`` in WAL mode with
    ``synchronous=NORMAL`` (see the module docstring). Other URLs are left alone."""
    path = sqlite_path(url)
    if path is None:
        return
    global _LISTENING
    with _LOCK:
        _FILES.add(os.path.realpath(path))
        if _LISTENING:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "connect", _on_connect)
        event.listen(Engine, "close", _on_close)
        atexit.register(_at_exit)
        _LISTENING = True


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    if not _FILES or not isinstance(dbapi_connection, sqlite3.Connection):
        return
    try:
        rows = dbapi_connection.execute("PRAGMA database_list").fetchall()
        main = next((str(row[2]) for row in rows if row[1] == "main"), "")
        path = os.path.realpath(main) if main else ""
        if path not in _FILES:
            return
        mode = dbapi_connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if not mode or str(mode[0]).lower() != "wal":
            return
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:  # locked by another process's transaction: keep the file's own mode
        _log.debug("sqlite: could not set WAL mode (%s)", exc)
        return
    with _LOCK:
        _OPEN[id(dbapi_connection)] = (path, dbapi_connection)


def _on_close(dbapi_connection: Any, connection_record: Any) -> None:
    with _LOCK:
        _OPEN.pop(id(dbapi_connection), None)


def _at_exit() -> None:
    """Close this process's connections to its WAL files; on the last connection of each, switch the file back
    to the rollback journal, which succeeds only when no other process has it open (it is not waited for)."""
    with _LOCK:
        by_file: dict[str, list[sqlite3.Connection]] = {}
        for path, connection in _OPEN.values():
            by_file.setdefault(path, []).append(connection)
        _OPEN.clear()
    for connections in by_file.values():
        *others, last = connections
        for connection in others:
            _close(connection)
        try:
            last.execute("PRAGMA busy_timeout=0")
            last.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:  # another process has it open, or a transaction is left: it stays WAL
            _log.debug("sqlite: left in WAL mode (%s)", exc)
        _close(last)


def _close(connection: sqlite3.Connection) -> None:
    try:
        connection.close()
    except sqlite3.Error:  # in use by a thread that is still running at exit
        pass
