"""The site folder, laid out as Perfect Server's: webroot/, handlers/, SQLiteDBs/ and the socket."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

SOCKET_NAME = "fcgi_backend.sock"


class SiteError(Exception):
    """The site folder is missing or lacks its webroot."""


@dataclass(frozen=True)
class SiteLayout:
    """Paths of one site. The socket sits one level above the docroot, beside ``webroot/``."""

    root: Path
    state_dir: Path | None = None  #: where SQLiteDBs/ is, if not in the site (check's temporary one)

    @property
    def webroot(self) -> Path:
        """Apache's DocumentRoot: static files and ``*.mustache`` templates."""
        return self.root / "webroot"

    @property
    def handlers(self) -> Path:
        """The site's Python handler modules."""
        return self.root / "handlers"

    @property
    def sqlite_dbs(self) -> Path:
        """Server-side state (sessions and the like); created on start if missing."""
        return self.state_dir or self.root / "SQLiteDBs"

    @property
    def socket_path(self) -> Path:
        return self.root / SOCKET_NAME

    @classmethod
    def open(cls, root: str | Path, create: bool = True) -> "SiteLayout":
        """The site at ``root``, checked: the folder and its webroot must exist; SQLiteDBs/ is made
        (unless ``create`` is False: ``check`` creates nothing)."""
        site = cls(Path(root).resolve())
        if not site.root.is_dir():
            raise SiteError(f"site folder {site.root} does not exist")
        if not os.access(site.root, os.R_OK | os.X_OK):
            raise SiteError(f"site folder {site.root} cannot be read by {_user()}")
        if not site.webroot.is_dir():
            raise SiteError(f"site folder {site.root} has no webroot/ (the DocumentRoot with the templates)")
        if not create:
            return site
        try:
            site.sqlite_dbs.mkdir(exist_ok=True)
        except OSError as exc:
            raise SiteError(f"cannot create {site.sqlite_dbs} as {_user()}: {exc.strerror} (create it, "
                            f"writable for {_user()}, or run as the site folder's owner)") from None
        return site


def _user() -> str:
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:
        return f"uid {os.geteuid()}"
