"""An application server: a :class:`~fcgi_backend.waiter.Waiter` that serves one WSGI application.

What both flavours share: the application is loaded in the supervisor (a broken handler module
stops start-up) and again on SIGHUP (a broken reload leaves the running workers alone); the status
page and ping path sit in front of it; request limits; and the temporary upload files of workers
that die are removed. The protocol is a subclass's: ``fastcgi_server.py``, ``http_server.py``.
"""

from __future__ import annotations

import logging
from typing import Callable

from . import logs, worker_memory
from .allowlist import AllowList
from .access_log import AccessLog
from .config import ServerConfig
from .hooks import Hooks
from .limits import Limits
from .listener import ListenAddress
from .loader import HandlerLoadError
from .status import StatusMiddleware, status_dict
from .tls import TLSConfig
from .uploads import remove_stale_upload_files, remove_upload_files
from .waiter import Waiter

log = logging.getLogger("fcgi_backend.server")

AppFactory = Callable[[], tuple[Callable, "Hooks | None"]]


class AppServer(Waiter):
    """Serves the WSGI application ``load_app`` builds: ``load_app()`` returns (application, hooks)
    and runs at start and again on SIGHUP. ``run()`` returns the exit code: 0, or 100 when the
    listen socket cannot be created."""

    # A web server or browser turned away gets an error (502, an empty reply); in the backlog it
    # gets its answer once a process is free, as php-fpm's clients do.
    turn_away_past_maxfork = False
    # HTTP and FastCGI clients speak first: one that sends nothing holds no worker for idle_timeout
    # (a browser's unused preconnect, a flood of idle connections).
    client_speaks_first = True

    def __init__(self, load_app: AppFactory, address: ListenAddress, config: ServerConfig, *,
                 limits: Limits | None = None, debug: bool = False, tls: TLSConfig | None = None,
                 socket_mode: int = 0o660, socket_group: str | None = None, owned_paths=()) -> None:
        self.load_app = load_app
        self.limits = limits or Limits()
        self.debug = debug
        self.app = None  # loaded by before_serving: once the server runs as its user
        super().__init__(address, config=config, tls=tls, socket_mode=socket_mode, socket_group=socket_group,
                         owned_paths=owned_paths)
        # --debug logs requests into the server's log when no access log is asked for
        self.access_log = AccessLog(config.access_log_format) if config.access_log or config.debug else None

    def application(self) -> Callable:
        """The application a worker serves: the loaded one, behind the status page and ping."""
        if self.config.status_path or self.config.ping_path:
            return StatusMiddleware(self.app, status_path=self.config.status_path, ping_path=self.config.ping_path,
                                    read_status=self.status,
                                    allow=AllowList(self.config.status_allow, "status_allow"))
        return self.app

    def status(self) -> dict:
        """The pool's figures, as the status page shows them."""
        return status_dict(self.scoreboard.read(), prefork=self.config.prefork, maxfork=self.config.maxfork,
                           listen_queue=self.listen_queue(), resident_bytes=worker_memory.resident_bytes)

    def reload(self) -> bool:
        try:
            self.app, hooks = self.load_app()
        except HandlerLoadError as exc:
            log.error("reload failed, the running workers go on serving: %s", exc)
            return False
        self.hooks = hooks or Hooks()
        return True

    def open_logs(self) -> None:
        super().open_logs()
        if self.access_log is not None:
            logs.configure_access(self.config.access_log or "-")

    def before_serving(self) -> None:
        """The application is loaded (as the server's user: handler modules never run as root
        unless asked), and the temporary upload files of workers no longer running (an earlier
        server was killed) are removed."""
        self.app, hooks = self.load_app()
        self.hooks = hooks or Hooks()
        try:
            count, size = remove_stale_upload_files(self.limits.upload_dir)
        except OSError as exc:
            log.warning("cannot look for stale upload files in %s: %s", self.limits.upload_dir, exc)
            return
        if count:
            log.warning("removed %d stale upload file%s (%.1f MB) in %s", count, "s" * (count != 1), size / 1e6,
                        self.limits.upload_dir)

    def worker_exited(self, pid: int) -> None:
        """A worker that died mid-upload (killed, out of memory) could not remove its temporary files."""
        try:
            count, size = remove_upload_files(self.limits.upload_dir, pid)
        except OSError as exc:
            log.warning("cannot look for upload files of worker %d in %s: %s", pid, self.limits.upload_dir, exc)
            return
        if count:
            log.warning("removed %d upload file%s (%.1f MB) left by worker %d", count, "s" * (count != 1),
                        size / 1e6, pid)
