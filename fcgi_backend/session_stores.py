"""The stores sessions can live in: SQLite (one host; the default) and PostgreSQL (many hosts).

Each opens its connection in the process that first uses it (a worker, after fork); a forked child
forgets the connections it inherited and opens its own. A third store is one class like these
(see ``sessions.SessionStore``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time

from .sessions import SessionBusy, SessionSetupError, SessionStore, SessionStoreError, StoredSession, lock_stripe, redact

# No index on ``accessed``: each save would rewrite it (twice the cost of a save in SQLite, and no
# HOT updates in PostgreSQL), for the sake of a purge that scans the table once a minute.
_SCHEMA = ("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, data TEXT NOT NULL, "
           "created DOUBLE PRECISION NOT NULL, accessed DOUBLE PRECISION NOT NULL)")
_UPSERT = ("INSERT INTO sessions (id, data, created, accessed) VALUES (%s, %s, %s, %s) "
           "ON CONFLICT (id) DO UPDATE SET data = excluded.data, accessed = excluded.accessed")


log = logging.getLogger("fcgi_backend.sessions")


class _Backoff:
    """Pauses while waiting for another worker: short at first (what is waited for, another
    worker's statement or session, is usually done in tens of microseconds), longer later, and
    never past the deadline."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.pause = 0.00005

    def wait(self) -> bool:
        """Pause once; False (no pause) once the deadline has passed."""
        if time.monotonic() >= self.deadline:
            return False
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 0.002)
        return True


class SQLiteStore(SessionStore):
    """SQLite in WAL mode (readers never wait for the writer); a session's lock is a byte-range lock
    (lockf) on a file beside the database, one of 4096 by the id's hash: the kernel drops it if the
    worker dies, and no lock is ever left behind. A statement that finds the database busy with
    another worker's write is tried again after short pauses, for up to BUSY_TIMEOUT (SQLite's own
    busy handler sleeps a millisecond or more, which would cost more than the writes it waits for)."""

    STRIPES = 4096
    BUSY_TIMEOUT = 5.0  # seconds a statement waits for another process's write before "locked"
    CHECKPOINT_EVERY = 1000  # writes by one worker between its checkpoints

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"SQLite database {path}"
        self._db: sqlite3.Connection | None = None
        self._locks_fd = -1
        self._writes = 0
        super().__init__()

    def forget(self):
        db, self._db, self._locks_fd = self._db, None, -1
        return db

    def open(self) -> sqlite3.Connection:
        if self._db is None:
            db = None
            try:
                db = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT, isolation_level=None,
                                     check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
                db.execute(_SCHEMA + " WITHOUT ROWID")  # one b-tree, keyed by the id
                db.execute("PRAGMA busy_timeout=0")  # from now on, _run waits (see the class)
                db.execute("PRAGMA wal_autocheckpoint=0")  # _written checkpoints (see there)
                self._locks_fd = os.open(self.path + ".locks", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except (sqlite3.Error, OSError) as exc:
                if db is not None:
                    db.close()
                raise SessionStoreError(f"{self.description} cannot be used: {exc}") from None
            self._db = db
        return self._db

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        db = self.open()
        backoff = None
        while True:
            try:
                return db.execute(sql, args)
            except sqlite3.Error as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code
                if code == sqlite3.SQLITE_BUSY:
                    backoff = backoff or _Backoff(self.BUSY_TIMEOUT)
                    if backoff.wait():
                        continue
                status = 500 if code == sqlite3.SQLITE_FULL else 503
                raise SessionStoreError(f"{self.description}: {exc}", status=status) from None

    def _row(self, sql: str, args: tuple = ()) -> tuple | None:
        cursor = self._run(sql, args)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()  # an unfinished SELECT would hold its read transaction open (and block checkpoints)

    def acquire(self, sid: str, timeout: float) -> StoredSession | None:
        self.open()
        stripe = lock_stripe(sid, self.STRIPES)
        backoff = None
        while True:
            try:
                fcntl.lockf(self._locks_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, stripe)
                break
            except (BlockingIOError, PermissionError):  # held by another worker's request
                backoff = backoff or _Backoff(timeout)
                if not backoff.wait():
                    raise SessionBusy(f"a session in {self.description} stayed locked for {timeout:g}s") from None
        try:
            row = self._row("SELECT data, created, accessed FROM sessions WHERE id = ?", (sid,))
        except BaseException:
            self.release(sid)
            raise
        return StoredSession(*row) if row else None

    def release(self, sid: str) -> None:
        if self._locks_fd >= 0:
            fcntl.lockf(self._locks_fd, fcntl.LOCK_UN, 1, lock_stripe(sid, self.STRIPES))

    def save(self, sid: str, data: str, created: float, accessed: float, replaces: str | None = None) -> None:
        if replaces is None:  # one statement: a transaction of its own
            self._run(_UPSERT.replace("%s", "?"), (sid, data, created, accessed))
            self._written()
            return
        self._run("BEGIN IMMEDIATE")
        try:
            self._run("DELETE FROM sessions WHERE id = ?", (replaces,))
            self._run(_UPSERT.replace("%s", "?"), (sid, data, created, accessed))
            self._run("COMMIT")
        except BaseException:
            if self._db is not None and self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._written()

    def touch(self, sid: str, accessed: float) -> None:
        self._run("UPDATE sessions SET accessed = ? WHERE id = ?", (accessed, sid))
        self._written()

    def delete(self, sid: str) -> None:
        self._run("DELETE FROM sessions WHERE id = ?", (sid,))
        self._written()

    def _written(self) -> None:
        """Count a write; every CHECKPOINT_EVERY, copy the WAL into the database and start it afresh.

        SQLite's automatic checkpoint cannot restart the WAL while other workers read, which
        under steady load is always: the WAL then grows without end and every commit retries the
        checkpoint (and its fsync). A RESTART checkpoint waits (up to 50 ms) for the readers of
        the moment to finish, which they do in microseconds, and new readers read the database."""
        self._writes += 1
        if self._writes < self.CHECKPOINT_EVERY:
            return
        db = self.open()
        try:
            db.execute("PRAGMA busy_timeout=50")
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as exc:
            log.warning("%s: checkpoint failed: %s", self.description, exc)
            busy = 1
        finally:
            db.execute("PRAGMA busy_timeout=0")
        self._writes = self.CHECKPOINT_EVERY - 100 if busy else 0  # busy: again soon

    def purge(self, used_before: float, created_before: float) -> int:
        return self._run("DELETE FROM sessions WHERE accessed < ? OR created < ?", (used_before, created_before)).rowcount

    def counts(self, used_before: float, created_before: float) -> tuple[int, int]:
        total, expired = self._row("SELECT count(*), count(*) FILTER (WHERE accessed < ? OR created < ?) "
                                   "FROM sessions", (used_before, created_before))
        return total - expired, expired

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            os.close(self._locks_fd)
        self._db, self._locks_fd = None, -1


class PostgresStore(SessionStore):
    """PostgreSQL through psycopg 3. A session's lock is a session-level advisory lock on the id's
    hash, taken at ``acquire`` and given back at ``release`` (or by the server when the connection
    ends, should the worker die); it waits at most ``timeout`` (lock_timeout). Hosts sharing the
    database share the locks. Statements are few and pipelined: a request that reads and writes its
    session costs four statements in two round trips. A connection the server dropped (a restart)
    is replaced at the next request's first statement, without an error."""

    CONNECT_TIMEOUT = 10     # seconds to reach the server
    STATEMENT_TIMEOUT = 10   # seconds a statement may run (the session lock's wait is lock_timeout)
    NETWORK_TIMEOUT = 15     # seconds of unanswered TCP traffic before the connection counts as dead

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = f"PostgreSQL database {redact(url)}"
        self._db = None
        self._lock_timeout: float | None = None  # as set on the connection
        self._held: str | None = None  # the session whose lock this connection holds
        super().__init__()

    def forget(self):
        db, self._db, self._lock_timeout, self._held = self._db, None, None, None
        return db

    def preload(self) -> None:
        self._driver()

    @staticmethod
    def _driver():
        try:
            import psycopg
            import psycopg.pq  # (loads the libpq binding, and what it imports)
        except ImportError:
            raise SessionSetupError("sessions in PostgreSQL need psycopg 3: pip install 'psycopg[binary]' "
                                    "(or 'fcgi_backend[postgresql]')") from None
        return psycopg

    def open(self):
        if self._db is None or self._db.closed:
            self._db = None
            psycopg = self._driver()
            try:
                db = psycopg.connect(self.url, autocommit=True, connect_timeout=self.CONNECT_TIMEOUT,
                                     tcp_user_timeout=self.NETWORK_TIMEOUT * 1000, keepalives_idle=30,
                                     options=f"-c statement_timeout={self.STATEMENT_TIMEOUT * 1000}")
                db.execute(_SCHEMA)
            except psycopg.Error as exc:
                raise SessionStoreError(f"{self.description} cannot be used: {_first_line(exc)}") from None
            self._db = db
        return self._db

    def _in_transaction(self) -> bool:
        import psycopg

        return self._db is not None and self._db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def _run(self, *statements: tuple[str, tuple]):
        """Run the statements in one round trip; the last one's cursor."""
        import psycopg

        db = self.open()
        idle = not self._in_transaction()
        try:
            return self._send(db, statements)
        except psycopg.OperationalError as exc:
            if not (idle and db.broken):
                raise self._failed(db, exc) from None
        except psycopg.Error as exc:
            raise self._failed(db, exc) from None
        # The connection died between requests (a server restart): nothing was under way, so the
        # statements run again on a new one.
        self.close()
        db = self.open()
        try:
            return self._send(db, statements)
        except psycopg.Error as exc:
            raise self._failed(db, exc) from None

    @staticmethod
    def _send(db, statements):
        if len(statements) == 1:
            return db.execute(*statements[0])
        with db.pipeline():
            cursors = [db.execute(sql, args) for sql, args in statements]
        return cursors[-1]

    def _failed(self, db, exc: Exception) -> SessionStoreError:
        """Roll the request's transaction back (a failed save leaves the stored session as it was)
        and say what happened; a broken connection is dropped, the next use makes a new one."""
        import psycopg

        if not (db.broken or db.closed) and self._in_transaction():
            try:
                db.execute("ROLLBACK")
            except psycopg.Error:
                pass
        if db.broken or db.closed or self._in_transaction():
            self.close()  # (the server then lets go of any lock the connection held)
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return SessionBusy(f"a session in {self.description} stayed locked longer than lock_timeout")
        full = isinstance(exc, psycopg.errors.DiskFull)
        return SessionStoreError(f"{self.description}: {_first_line(exc)}", status=500 if full else 503)

    def acquire(self, sid: str, timeout: float) -> StoredSession | None:
        statements = [("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (sid,)),
                      ("SELECT data, created, accessed FROM sessions WHERE id = %s", (sid,))]
        if timeout != self._lock_timeout:  # settings of the connection: made once
            statements.insert(0, ("SELECT set_config('lock_timeout', %s, false), "
                                  "set_config('statement_timeout', %s, false)",
                                  (f"{int(timeout * 1000)}ms", f"{int((timeout + self.STATEMENT_TIMEOUT) * 1000)}ms")))
        try:
            row = self._run(*statements).fetchone()
        except SessionStoreError:
            self.close()  # the lock may have been taken before the failure: the server drops it with the connection
            raise
        self._lock_timeout = timeout
        self._held = sid
        return StoredSession(*row) if row else None

    def release(self, sid: str) -> None:
        if self._held != sid or self._db is None:
            return
        self._held = None
        try:
            self._run(("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (sid,)))
        except SessionStoreError:
            self.close()  # and with the connection, the lock
            raise

    def save(self, sid: str, data: str, created: float, accessed: float, replaces: str | None = None) -> None:
        # An explicit transaction: pipelined statements would otherwise share one that commits
        # only at the end of the round trip, after the unlock below.
        statements = [("BEGIN", ())]
        if replaces is not None:
            statements.append(("DELETE FROM sessions WHERE id = %s", (replaces,)))
        statements += [(_UPSERT, (sid, data, created, accessed)), ("COMMIT", ())]
        held = self._held
        if held in (sid, replaces):
            # Saving is the last thing a request does with its session: the lock goes in the same
            # round trip, once the save is committed, and release() finds nothing left to do.
            statements.append(("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (held,)))
            self._held = None
        try:
            self._run(*statements)
        except SessionStoreError:
            if held is not None and self._held is None:
                self.close()  # whether the unlock ran is unknown: the server drops the lock with the connection
            raise

    def touch(self, sid: str, accessed: float) -> None:
        self._run(("UPDATE sessions SET accessed = %s WHERE id = %s", (accessed, sid)))

    def delete(self, sid: str) -> None:
        self._run(("DELETE FROM sessions WHERE id = %s", (sid,)))

    def purge(self, used_before: float, created_before: float) -> int:
        return self._run(("DELETE FROM sessions WHERE accessed < %s OR created < %s",
                          (used_before, created_before))).rowcount

    def counts(self, used_before: float, created_before: float) -> tuple[int, int]:
        total, expired = self._run(("SELECT count(*), count(*) FILTER (WHERE accessed < %s OR created < %s) "
                                    "FROM sessions", (used_before, created_before))).fetchone()
        return total - expired, expired

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db, self._lock_timeout, self._held = None, None, None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
