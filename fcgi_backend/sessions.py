"""Sessions: server-side state per visitor, kept where Perfect Server kept it (SQLite in SITE/SQLiteDBs/)
or, for several hosts, in PostgreSQL (``session_stores.py``).

``request.session`` is a dict-like loaded on first use from the session cookie, and saved at the end
of the request only if it changed. Values must be JSON-serialisable (an error at the assignment
says which is not).

**Concurrency**: a request that uses its session holds that session's lock from the first access
until its answer is built, as PHP does: concurrent requests of one visitor are served one after
the other where they touch the session, so no update is lost (a counter incremented by many
requests at once counts every one). Requests that do not touch the session take no lock.

**Cookie**: a 256-bit random id (``secrets``), HttpOnly, SameSite=Lax, Path=/, Secure when the
request came over HTTPS. An id the store does not know, a malformed or expired one, gets a fresh
empty session with a new id: a client never chooses its own id. Ids are never logged.

**Expiry**: a session unused for ``idle_lifetime``, or older than ``absolute_lifetime``, is never
served; each worker removes expired rows now and then, as requests come (no cron needed).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import time
import weakref
import zlib
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Iterator

from .errors import HTTPError, ServerError

log = logging.getLogger("fcgi_backend.sessions")

_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32): 256 bits
_FLASHES = "_flashes"
_CSRF = "_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "HTTP_X_CSRF_TOKEN"
_TOUCH_EVERY = 60.0  # seconds: a session read but not changed has its last use written at most this often
_PURGE_EVERY = 60.0  # seconds between a worker's removals of expired sessions
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


@dataclass(frozen=True)
class SessionConfig:
    """Where sessions are kept and how long they live (the ``[sessions]`` table; flags ``--session-*``)."""

    store: str = ""                       #: "" (SQLite in SITE/SQLiteDBs/sessions.sqlite3), sqlite:///PATH or postgresql://...
    cookie_name: str = "fcgi_session"     #: the cookie's name
    idle_lifetime: float = 86400.0        #: a session unused this long is gone (seconds)
    absolute_lifetime: float = 604800.0   #: a session older than this is gone, however much used
    lock_timeout: float = 30.0            #: longest wait for a session another request holds (then 503)

    def check(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.cookie_name):
            raise ValueError(f"session cookie name {self.cookie_name!r}: letters, digits, '_', '.' and '-' only")
        for name in ("idle_lifetime", "absolute_lifetime", "lock_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"session {name} must be more than 0 seconds")


@dataclass(frozen=True)
class StoredSession:
    data: str       # JSON
    created: float  # wall clock seconds
    accessed: float


class SessionStoreError(ServerError):
    """The session store cannot be used now (503: unreachable, locked, corrupt), or refused a write
    (500: disk full); the message names the store, for the log."""

    def __init__(self, detail: str, status: int = 503) -> None:
        super().__init__(detail, status)


class SessionSetupError(ValueError):
    """The store cannot work here at all (its driver is not installed): a configuration error."""


class SessionBusy(SessionStoreError):
    """Another request held the session for longer than lock_timeout."""


class SessionStore:
    """Where sessions live. A store opens its connection lazily, in the process that uses it (after
    fork). A request holds one session at a time: :meth:`acquire` locks it against other requests
    and reads it, :meth:`release` lets it go; :meth:`save` and :meth:`delete` come in between.

    Subclasses implement the methods below; any error of theirs becomes a SessionStoreError."""

    description = "session store"

    def __init__(self) -> None:
        _stores.add(self)

    def forget(self):
        """Let go of the connection without closing it, and return it (in a forked child: the
        connection is the parent's, to neither use nor close)."""
        raise NotImplementedError

    def open(self) -> None:
        """Connect (and create the table if missing) now rather than at first use."""
        raise NotImplementedError

    def preload(self) -> None:
        """Import what the store needs, in the process that starts the server: before it becomes
        its user, who may not be able to read every folder the interpreter's modules are in.
        SessionSetupError if something is missing."""

    def acquire(self, sid: str, timeout: float) -> StoredSession | None:
        """Hold session ``sid`` against other requests until :meth:`release`, and read it (None if
        unknown); SessionBusy if another request held it for ``timeout`` seconds."""
        raise NotImplementedError

    def release(self, sid: str) -> None:
        """Let the held session go (whether or not it was saved)."""
        raise NotImplementedError

    def save(self, sid: str, data: str, created: float, accessed: float, replaces: str | None = None) -> None:
        """Insert or update session ``sid``, removing session ``replaces`` (its old id) in the same
        transaction: on failure the stored sessions stay as they were."""
        raise NotImplementedError

    def touch(self, sid: str, accessed: float) -> None:
        raise NotImplementedError

    def delete(self, sid: str) -> None:
        raise NotImplementedError

    def purge(self, used_before: float, created_before: float) -> int:
        """Remove expired sessions; how many."""
        raise NotImplementedError

    def counts(self, used_before: float, created_before: float) -> tuple[int, int]:
        """(live, expired) sessions."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection (the next use opens one afresh)."""


_stores: "weakref.WeakSet[SessionStore]" = weakref.WeakSet()
_inherited: list = []  # connections a forked child keeps unclosed: closing an SQLite one could
                       # checkpoint and delete the parent's WAL (the child holds none of its locks)


def _forget_connections_after_fork() -> None:
    for store in list(_stores):
        _inherited.append(store.forget())


os.register_at_fork(after_in_child=_forget_connections_after_fork)


class Session(MutableMapping):
    """One visitor's session, as ``request.session``. Use it as a dict; plus :meth:`regenerate`
    (at login), :meth:`clear` (at logout), :meth:`flash` and :meth:`flashes`, :meth:`csrf_token`."""

    def __init__(self, sid: str | None, data: dict, created: float, accessed: float) -> None:
        self.sid = sid                    # None until a new session is first saved
        self.locked_sid = sid             # the id whose lock this request holds
        self._data = data
        self.created = created
        self.accessed = accessed
        self.modified = False
        self.cookie_needed = False        # the client must be sent the id (new, or changed)
        self.ended = False                # cleared: the row goes and the cookie is removed
        self._old_sid: str | None = None  # regenerated: this row goes

    # -- the dict -------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if type(value) not in _JSON_SCALARS:  # a container: try it (a scalar needs no trying)
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"session values must be JSON-serialisable: {key!r} is a "
                                f"{type(value).__name__} ({exc})") from None
        self._data[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._data if not k.startswith("_"))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"<Session {dict(self)!r}>"  # never its id

    # -- the life of a session ----------------------------------------------------------------------

    def regenerate(self) -> None:
        """A new id for the same data (call it at login: an id seen before login is worth nothing)."""
        if self.sid is not None:
            self._old_sid = self._old_sid or self.sid
        self.sid = None
        self.modified = True

    def clear(self) -> None:
        """Forget everything and end the session: its row goes and the cookie is removed (logout)."""
        self._data.clear()
        if self.sid is not None:
            self._old_sid = self._old_sid or self.sid
        self.sid = None
        self.ended = True
        self.modified = True

    destroy = clear

    # -- flash messages -------------------------------------------------------------------------------

    def flash(self, message: str, category: str = "info") -> None:
        """A message for the next page this visitor sees ("Logged in.")."""
        self._data.setdefault(_FLASHES, []).append({"message": str(message), "category": category})
        self.modified = True
        self.ended = False

    def flashes(self) -> list[dict]:
        """The messages flashed so far, each once: reading them removes them. Each is a dict with
        ``message`` and ``category`` (ready for a template's section)."""
        messages = self._data.pop(_FLASHES, [])
        if messages:
            self.modified = True
        return messages

    # -- CSRF ------------------------------------------------------------------------------------------

    def csrf_token(self) -> str:
        """This session's token for forms: put it in a hidden field named ``csrf_token`` (or send
        it as the X-CSRF-Token header); a form POST to a handler registered with ``csrf=True``
        without it gets 403."""
        token = self._data.get(_CSRF)
        if token is None:
            token = self._data[_CSRF] = secrets.token_urlsafe(32)
            self.modified = True
            self.ended = False
        return token

    def csrf_matches(self, token: str | None) -> bool:
        expected = self._data.get(_CSRF)
        return bool(token and expected and hmac.compare_digest(token.encode(), expected.encode()))


class SessionManager:
    """Loads and saves the sessions of one application through ``store``."""

    def __init__(self, store: SessionStore, config: SessionConfig) -> None:
        self.store = store
        self.config = config
        self._next_purge = time.monotonic() + _PURGE_EVERY * (0.5 + secrets.randbelow(1000) / 1000)

    def load(self, environ: dict, cookies: dict[str, str]) -> Session:
        """The session the request's cookie names (locked until :meth:`finish`), or a new one."""
        now = time.time()
        self._purge_now_and_then(now)
        sid = cookies.get(self.config.cookie_name)
        if sid is not None and _ID.fullmatch(sid):
            stored = self.store.acquire(sid, self.config.lock_timeout)
            if stored is not None and not self._expired(stored, now):
                try:
                    data = json.loads(stored.data)
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    return Session(sid, data, stored.created, stored.accessed)
            self.store.release(sid)  # unknown, expired or unreadable: a fresh session, never that id
        session = Session(None, {}, now, now)
        session.cookie_needed = sid is not None  # the client's id is stale: replace (or remove) it
        return session

    def finish(self, session: Session, environ: dict) -> list[tuple[str, str]]:
        """Save what changed and release the session; the headers the answer needs (Set-Cookie).
        SessionStoreError if saving failed: the stored session is then as it was."""
        try:
            return self._save(session, environ)
        finally:
            self.release(session)

    def release(self, session: Session) -> None:
        """Give the session's lock up (after saving, or without: the request failed)."""
        if session.locked_sid is not None:
            sid, session.locked_sid = session.locked_sid, None
            self.store.release(sid)

    def _save(self, session: Session, environ: dict) -> list[tuple[str, str]]:
        now = time.time()
        if session.sid is None:
            if not session.modified or (session.ended and not session._data):
                # Nothing to keep: the old row (cleared) and the client's cookie (stale or ended) go.
                if session._old_sid is not None:
                    self.store.delete(session._old_sid)
                had_cookie = session.cookie_needed or session._old_sid is not None
                return [self._cookie("", environ, remove=True)] if had_cookie else []
            session.sid = secrets.token_urlsafe(32)
            session.cookie_needed = True
        if session.modified:
            self.store.save(session.sid, json.dumps(session._data, separators=(",", ":")), session.created, now,
                            replaces=session._old_sid)
        elif now - session.accessed > _TOUCH_EVERY:
            self.store.touch(session.sid, now)
        return [self._cookie(session.sid, environ)] if session.cookie_needed else []

    def _expired(self, stored: StoredSession, now: float) -> bool:
        return now - stored.accessed > self.config.idle_lifetime or now - stored.created > self.config.absolute_lifetime

    def _cookie(self, sid: str, environ: dict, remove: bool = False) -> tuple[str, str]:
        secure = environ.get("wsgi.url_scheme") == "https" or environ.get("HTTPS", "").lower() in ("on", "1")
        attributes = ["Path=/", "HttpOnly", "SameSite=Lax"] + (["Secure"] if secure else [])
        if remove:
            attributes.append("Max-Age=0")
        else:
            attributes.append(f"Max-Age={int(self.config.absolute_lifetime)}")
        return "Set-Cookie", f"{self.config.cookie_name}={sid}; " + "; ".join(attributes)

    def _purge_now_and_then(self, now: float) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + _PURGE_EVERY
        try:
            removed = self.store.purge(now - self.config.idle_lifetime, now - self.config.absolute_lifetime)
        except SessionStoreError as exc:
            log.warning("expired sessions not removed: %s", exc.detail)
            return
        if removed:
            log.info("removed %d expired session%s", removed, "s" * (removed != 1))

    def probe(self) -> None:
        """Open the store once at start, so that a wrong setting shows in the log at once. A store
        that is down is not fatal (pages without sessions work; sessions answer 503 until it is back);
        a missing driver is (SessionSetupError)."""
        try:
            self.store.open()
        except SessionStoreError as exc:
            log.error("sessions: %s; requests that use their session will answer 503 until it can be used",
                      exc.detail)
        else:
            log.info("sessions in %s", self.store.description)
        finally:
            self.store.close()

    def counts(self) -> tuple[int, int]:
        now = time.time()
        return self.store.counts(now - self.config.idle_lifetime, now - self.config.absolute_lifetime)

    def purge(self) -> int:
        now = time.time()
        return self.store.purge(now - self.config.idle_lifetime, now - self.config.absolute_lifetime)


def check_csrf(session: Session, environ: dict, form) -> None:
    """403 unless the request carries the session's CSRF token (form field or header)."""
    token = form.get(CSRF_FIELD) if form is not None else None
    token = token or environ.get(CSRF_HEADER)
    if not session.csrf_matches(token):
        raise HTTPError(403, "The form is missing its security token, or it is out of date: reload the page "
                             "and send the form again.")


def lock_stripe(sid: str, stripes: int) -> int:
    """Which of ``stripes`` locks guards session ``sid`` (locks by hash: few, for any number of
    sessions; the same in every process, unlike hash())."""
    return zlib.crc32(sid.encode()) % stripes


def store_for(config: SessionConfig, sqlite_dbs: str) -> SessionStore:
    """The store ``config.store`` names: SQLite in ``sqlite_dbs`` by default."""
    from .session_stores import PostgresStore, SQLiteStore

    url = config.store
    if not url:
        return SQLiteStore(os.path.join(sqlite_dbs, "sessions.sqlite3"))
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite://"):])
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ValueError(f"session store {redact(url)!r}: use sqlite:///PATH or postgresql://...")


def redact(url: str) -> str:
    """A store URL fit for a log line: no password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
