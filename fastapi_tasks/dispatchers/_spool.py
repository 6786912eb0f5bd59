"""The durable spool: jobs that could not be sent at once, kept in a local SQLite file until their broker takes them.

Off by default; an adapter built with `spool=` (a directory) has one, and the dispatch core
(`fastapi_tasks._dispatch`) uses it. A dispatch that finds its broker unreachable writes its job
(id, name, pickled arguments) here before it waits, goes on retrying in memory as without a
spool, and deletes the row once the broker took the job. A dispatch that gives up (its deadline,
too many waiting, shutdown), or a process that dies, leaves the row: the next dispatch through
the adapter that reaches the broker sends what the spool keeps, oldest first, under each job's
own id. A healthy broker costs nothing here: no SQLite call is made for a job sent at once.

Each process writes a file of its own in the directory, `<pid>-<random>.sqlite3`, and holds an
exclusive lock on its `.lock` file while it lives, so that processes sharing the directory (the
workers of one server) never send each other's jobs. A file whose lock is free was left by a
process that died: the next spool opened in the directory (the restarted process), and each
drain, adopt its rows into their own file. Every SQLite call runs in a worker thread, one at a
time per spool; rows are committed with `synchronous=FULL`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import secrets
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.to_thread

from .._log import logger
from ._retry import unreachable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["DRAIN_BATCH", "Spool", "SpoolEntry", "SpooledJob", "UnknownJobError", "open_spool", "sender"]

DRAIN_BATCH = 100
"""Rows read from the file at once while the spool is drained."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    job_name TEXT NOT NULL,
    payload BLOB NOT NULL
)
"""


class SpooledJob(NamedTuple):
    """One row of the spool: a job kept until its broker takes it."""

    seq: int
    job_id: str
    job_name: str
    payload: bytes


class UnknownJobError(LookupError):
    """The spool keeps a job whose name no queue of this process knows (yet): it stays in the spool."""


def open_spool(spool: object, owner: str) -> Spool | None:
    """The adapter's spool from its `spool=` argument: `None`, or a directory's path.

    `owner` names the call in messages: "TaskiqDispatcher".

    Raises:
        TypeError: `spool` is neither `None` nor a path.
        ValueError: the path is not an existing directory, or this platform has no POSIX file locks.
    """
    if spool is None:
        return None
    if not isinstance(spool, str | os.PathLike):
        raise TypeError(f"{owner}(spool=...) takes the path of a directory, or None (no spool), not {spool!r}")
    directory = Path(spool)
    if not str(spool) or not directory.is_dir():
        raise ValueError(
            f"{owner}(spool=...) must be an existing directory, not {str(spool)!r}: create it first, on a disk "
            "that outlives the process (not a tmpfs if the spool must survive a reboot)."
        )
    if fcntl is None:  # pragma: no cover - Windows
        raise ValueError(f"{owner}(spool=...) needs POSIX file locks (fcntl), which this platform lacks.")
    return Spool(directory)


class Spool:
    """One process's file of jobs waiting for their broker, in a directory that processes may share."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.path = directory / f"{name}.sqlite3"
        self._lock_file = _locked(directory / f"{name}.lock")
        assert self._lock_file is not None  # a fresh name: nobody else holds it
        self._db = _connect(self.path)
        self._mutex = threading.Lock()
        self._held: set[str] = set()  # job ids whose dispatch still retries in memory: not the drain's
        self._draining = False
        self._warned: set[str] = set()
        self.adopted = self._adopt()
        self.maybe_pending = self._count() > 0

    def __repr__(self) -> str:
        return f"<Spool {str(self.directory)!r}>"

    def close(self) -> None:
        """Close the file and give up its lock (its rows stay, for the next process to adopt)."""
        with self._mutex:
            self._db.close()
        self._lock_file.close()

    def count(self) -> int:
        """How many jobs the spool keeps (blocking: call it from a thread, or outside the event loop)."""
        return self._count()

    async def keep(self, job_id: str, job_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Write the job to the file; return whether it is kept (its arguments may not pickle)."""
        try:
            payload = pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            logger.warning(
                "Cannot spool job %r (job id %r): its arguments do not pickle (%s); it waits in memory only.",
                job_name,
                job_id,
                type(exc).__name__,
            )
            return False
        self._held.add(job_id)
        try:
            await anyio.to_thread.run_sync(self._insert, job_id, job_name, payload)
        except sqlite3.Error as exc:
            self._held.discard(job_id)
            logger.warning(
                "Cannot spool job %r (job id %r): %s in %s; it waits in memory only.",
                job_name,
                job_id,
                type(exc).__name__,
                self.path,
            )
            return False
        logger.debug("Spooled job %r (job id %r) while its broker is unreachable.", job_name, job_id)
        return True

    async def forget(self, job_id: str) -> None:
        """The job was sent, or failed for good: delete its row."""
        self._held.discard(job_id)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._delete, [job_id])

    def release(self, job_id: str) -> None:
        """The job's dispatch gave up in memory: the row is the drain's to send."""
        self._held.discard(job_id)
        self.maybe_pending = True

    async def drain(self, send: Callable[[str, str, tuple[Any, ...], dict[str, Any]], Awaitable[Any]]) -> int:
        """Send the jobs the spool keeps, and no dispatch retries, with `send(job_name, job_id, args, kwargs)`.

        One drain at a time: a call while another drains returns at once. It stops at the first
        job its broker cannot take (the rows stay), leaves a job whose name `send` does not know
        (`UnknownJobError`), and deletes, logging it at ERROR, a job that fails otherwise.

        Returns:
            How many jobs were sent.
        """
        if self._draining:
            return 0
        self._draining = True
        self.maybe_pending = False
        sent = 0
        try:
            await anyio.to_thread.run_sync(self._adopt)
            after = 0
            while True:
                rows = [
                    row for row in await anyio.to_thread.run_sync(self._rows, after) if row.job_id not in self._held
                ]
                if not rows:
                    return sent
                done: list[str] = []
                try:
                    for row in rows:
                        after = row.seq
                        outcome = await self._send_row(row, send)
                        if outcome is None:
                            self.maybe_pending = True
                            return sent
                        if outcome:
                            sent += 1
                            done.append(row.job_id)
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(self._delete, done)
        finally:
            self._draining = False

    async def _send_row(
        self, row: SpooledJob, send: Callable[[str, str, tuple[Any, ...], dict[str, Any]], Awaitable[Any]]
    ) -> bool | None:
        """Send one row: `True` sent (or given up for good), `False` left in the spool, `None` the broker is down."""
        try:
            args, kwargs = pickle.loads(row.payload)
            await send(row.job_name, row.job_id, args, kwargs)
        except UnknownJobError:
            if row.job_id not in self._warned:
                self._warned.add(row.job_id)
                logger.warning(
                    "The spool keeps job %r (job id %r), which no queue of this process knows: it stays in %s.",
                    row.job_name,
                    row.job_id,
                    self.path,
                )
            return False
        except Exception as exc:
            if unreachable(exc):
                return None
            logger.error(
                "Could not send spooled job %r (job id %r): %s; it is removed from the spool.",
                row.job_name,
                row.job_id,
                type(exc).__name__,
            )
        else:
            logger.info("Sent spooled job %r (job id %r).", row.job_name, row.job_id)
        return True

    # The blocking calls below run in worker threads, one at a time.

    def _insert(self, job_id: str, job_name: str, payload: bytes) -> None:
        with self._mutex, self._db:
            self._db.execute(
                "INSERT INTO jobs (job_id, job_name, payload) VALUES (?, ?, ?)", (job_id, job_name, payload)
            )

    def _delete(self, job_ids: list[str]) -> None:
        if job_ids:
            with self._mutex, self._db:
                self._db.executemany("DELETE FROM jobs WHERE job_id = ?", [(job_id,) for job_id in job_ids])

    def _rows(self, after: int) -> list[SpooledJob]:
        with self._mutex:
            cursor = self._db.execute(
                "SELECT seq, job_id, job_name, payload FROM jobs WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, DRAIN_BATCH),
            )
            return [SpooledJob(*row) for row in cursor.fetchall()]

    def _count(self) -> int:
        with self._mutex:
            (count,) = self._db.execute("SELECT count(*) FROM jobs").fetchone()
            return int(count)

    def _adopt(self) -> int:
        """Move the rows of every file left by a dead process into this one; return how many."""
        adopted = 0
        for path in sorted(self.directory.glob("*.sqlite3")):
            if path == self.path:
                continue
            with _adoptable(path) as lock:
                if lock is None:
                    continue  # its process lives
                if not path.exists():  # another process adopted it first
                    with contextlib.suppress(FileNotFoundError):
                        path.with_suffix(".lock").unlink()
                    continue
                with self._mutex:
                    self._db.execute("ATTACH DATABASE ? AS dead", (str(path),))
                    try:
                        with self._db:
                            self._db.execute(_SCHEMA.replace("jobs (", "dead.jobs (", 1))
                            cursor = self._db.execute(
                                "INSERT INTO jobs (job_id, job_name, payload) "
                                "SELECT job_id, job_name, payload FROM dead.jobs ORDER BY seq"
                            )
                            adopted += cursor.rowcount
                    finally:
                        self._db.execute("DETACH DATABASE dead")
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        Path(f"{path}{suffix}").unlink()
                with contextlib.suppress(FileNotFoundError):
                    path.with_suffix(".lock").unlink()
        if adopted:
            self.maybe_pending = True
            logger.warning("The spool in %s adopted %d jobs left by a process that ended.", self.directory, adopted)
        return adopted


class SpoolEntry:
    """One dispatch's use of its spool: the job is written once, when it cannot be sent at once."""

    __slots__ = ("args", "job_id", "job_name", "kept", "kwargs", "spool", "tried")

    def __init__(self, spool: Spool, job_id: str, job_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.spool = spool
        self.job_id = job_id
        self.job_name = job_name
        self.args = args
        self.kwargs = kwargs
        self.tried = False
        self.kept = False  # whether the file has the job

    async def keep(self) -> None:
        """Write the job to the spool, the first time only."""
        if self.tried:
            return
        # Kept until told otherwise: a cancellation raised once the row is written must not lose track of it.
        self.tried = self.kept = True
        self.kept = await self.spool.keep(self.job_id, self.job_name, self.args, self.kwargs)

    async def sent(self) -> None:
        """The broker took the job (or refused it for good): its row goes."""
        if self.kept:
            self.kept = False
            await self.spool.forget(self.job_id)

    def gave_up(self) -> None:
        """The dispatch stopped retrying: the row, if any, is the drain's."""
        if self.kept:
            self.spool.release(self.job_id)


def sender(
    dispatcher: Any, like: Any, timeout: float
) -> Callable[[str, str, tuple[Any, ...], dict[str, Any]], Awaitable[Any]]:
    """How a drain sends a spooled job: found by name (`dispatcher.find_job(name, like)`), each try within `timeout` s.

    `like` is the job whose dispatch drains: a job named in the spool is looked up in its queue.
    """

    async def send(job_name: str, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        find_job = getattr(dispatcher, "find_job", None)
        job = None if find_job is None else find_job(job_name, like)
        if job is None:
            raise UnknownJobError(job_name)
        with anyio.fail_after(timeout):
            return await dispatcher.dispatch(job, job_id, args, kwargs)

    return send


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: the worker threads take turns, under the spool's mutex.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")  # rows are moved between files with ATTACH: atomic without WAL
    db.execute("PRAGMA synchronous=FULL")
    db.execute(_SCHEMA)
    return db


def _locked(path: Path) -> Any:
    """`path` opened and locked exclusively, or `None` when another process holds its lock."""
    file = open(path, "a+b")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    return file


@contextlib.contextmanager
def _adoptable(path: Path) -> Iterator[Any]:
    """The lock of a spool file, held while it is adopted; `None` while its process lives."""
    lock = _locked(path.with_suffix(".lock"))
    try:
        yield lock
    finally:
        if lock is not None:
            lock.close()
