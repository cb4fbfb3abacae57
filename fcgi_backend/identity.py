"""Who the server runs as, and the files that must be theirs.

Started as root with a user (``--user``), the supervisor binds the socket and writes its pidfile
as root, gives the user the files the server writes (logs, the site's SQLiteDBs/, an upload folder
of its own), then sets its *effective* ids to the user's: the handler modules load as the user,
and what they create is the user's. It keeps root as its saved id for one thing: removing the
socket and the pidfile at exit. Each worker sets all its ids to the user's (real, effective,
saved) after fork, so nothing a request runs can become root again. This is php-fpm's master and
pool workers, with the application code kept out of root's hands too.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import logging
import os
import pwd
import signal
from dataclasses import dataclass

log = logging.getLogger("fcgi_backend.identity")


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, user: str, group: str = "") -> "Identity | None":
        """The identity to switch to, or None when there is nothing to switch (no user, or the
        process already runs as that user)."""
        if not user:
            return None
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
        if os.geteuid() == entry.pw_uid and os.getegid() == gid:
            return None
        return cls(entry.pw_name, entry.pw_uid, gid)

    def own(self, paths) -> None:
        """Make each path the user's: a file (created if missing), or a folder and the files in it."""
        for path in paths:
            if not path or path == "-":
                continue
            if not os.path.exists(path):
                open(path, "a").close()  # a log file: created now, so the user can reopen it
            self._chown(path)
            if os.path.isdir(path):
                for name in os.listdir(path):
                    self._chown(os.path.join(path, name))

    def _chown(self, path: str) -> None:
        st = os.lstat(path)
        if (st.st_uid, st.st_gid) != (self.uid, self.gid):
            os.chown(path, self.uid, self.gid, follow_symlinks=False)
            log.info("%s now belongs to %s", path, self.name)

    def become_for_now(self) -> None:
        """Effective ids to the user's (the supervisor: it keeps root as its saved id)."""
        os.initgroups(self.name, self.gid)
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, 0)

    def become_for_good(self) -> None:
        """Every id to the user's (a worker, or a server serving from one process: no way back)."""
        if os.geteuid() == 0:  # (straight from root; a worker has the groups its supervisor set)
            os.initgroups(self.name, self.gid)
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)


@contextlib.contextmanager
def as_root(identity: Identity | None):
    """Root for a moment, if ``identity`` took it away and this process kept root as its saved id
    (the supervisor at exit; a worker, or a server serving from one process, did not)."""
    if identity is None or os.getresuid()[2] != 0:
        yield
        return
    os.seteuid(0)
    try:
        yield
    finally:
        os.seteuid(identity.uid)


PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def end_with_parent(parent_pid: int) -> None:
    """This process gets SIGTERM when its parent ends, however it ends (a SIGKILLed supervisor must
    not leave workers serving on their own). Call it after any change of user: the kernel clears
    the setting then. A parent already gone is caught by comparing pids."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def group_name(user: str, group: str = "") -> str | None:
    """The group the server runs as: ``group``, else the user's own; None without a user. (The
    socket's group by default, so the web server in that group may connect.)"""
    if group or not user:
        return group or None
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def write_pidfile(path: str) -> None:
    """The supervisor's pid in ``path``, written whole (a reader never sees half of it)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(temporary, path)


def remove_pidfile(path: str) -> None:
    """Remove ``path`` if it still names this process."""
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError as exc:
        log.warning("cannot remove pidfile %s: %s", path, exc.strerror)
