"""The server's settings, from a TOML file and the command line (the flags win).

Tables: ``[server]`` (the process and its pool: Net::Waiter's prefork, maxfork, nofork, px_idle,
prop_sigusr, and what users know from php-fpm and gunicorn: user, timeouts, slow log, logs),
``[listen]`` (the socket), ``[limits]`` (what a request may send), ``[tls]`` (serve-http) and
``[sessions]``. A table or key the file should not have is refused with its name.
"""

from __future__ import annotations

import grp
import os
import pwd
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from .access_log import DEFAULT_FORMAT, FormatError, compile_format
from .allowlist import LOOPBACK, AllowList
from .cpus import checked_cpu_list, format_cpu_list
from .limits import Limits
from .listener import ListenAddress
from .sessions import SessionConfig
from .tls import TLSConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(Exception):
    """A setting that cannot work; the message names it and says why."""



@dataclass(frozen=True)
class ServerConfig:
    """How the server process runs: its pool of workers, their user, time limits and logs."""

    prefork: int = 4                 #: workers forked at start (negative: both prefork and maxfork; 0: forking)
    maxfork: int = 0                 #: ceiling on workers; 0 means 4 x prefork (16 when forking)
    nofork: bool = False             #: serve from one process (for stepping through with a debugger)
    accept_wait: float = 4.0         #: seconds a worker waits in accept before its idle hook runs (Net::Waiter's TIMEOUT)
    px_idle: float = 31.0            #: a worker above prefork that idles this long exits
    max_requests: int = 0            #: a worker is replaced after this many requests (0: never)
    #: ... plus a number drawn from 0 to this for each worker, so workers are not all replaced at
    #: once (gunicorn's --max-requests-jitter); None: a tenth of max_requests
    max_requests_jitter: int | None = None
    max_worker_rss: int = 0          #: a worker whose resident memory passes this is replaced (0: never)
    worker_cpus: str = ""            #: run the workers on these CPUs only, e.g. "1" or "2-3" ("" = any)
    graceful_timeout: float = 30.0   #: on TERM/INT, how long in-flight requests get to finish
    request_timeout: float = 0.0     #: a request running longer is stopped (504) and its worker replaced; 0: never
    slowlog_timeout: float = 0.0     #: a request running longer has its stack written to slowlog_file; 0: never
    slowlog_file: str = ""           #: where slow requests' stacks go ("" = the log)
    idle_timeout: float = 15.0       #: longest wait for a request on a new or kept connection
    prop_sigusr: bool = True         #: pass USR1/USR2 on to the workers
    status_path: str = ""            #: URL path of the status page ("" = off), as php-fpm's pm.status_path
    status_allow: str = LOOPBACK     #: the clients the status page answers (others get the site's 404)
    ping_path: str = ""              #: URL path that answers "pong" ("" = off)
    log_file: str = ""               #: append logs here instead of stderr; USR1 reopens it
    access_log: str = ""             #: a line per request: "" off, "-" into the log, or a file (USR1 reopens it)
    access_log_format: str = DEFAULT_FORMAT  #: Apache LogFormat directives (see access_log.py)
    user: str = ""                   #: run as this user once the socket is bound (root must name one)
    group: str = ""                  #: and this group ("" = the user's own)
    allow_root: bool = False         #: let the server go on running as root (as php-fpm's -R)
    pidfile: str = ""                #: write the supervisor's pid here; removed at exit
    app: str = ""                    #: (the command's) serve this WSGI application, MODULE:CALLABLE, not the site's
    debug: bool = False              #: log debug lines too (Net::Waiter's DEBUG)

    def resolved(self) -> "ServerConfig":
        """Checked, with derived values filled in (negative prefork, maxfork 0)."""
        prefork, maxfork = self.prefork, self.maxfork
        if prefork < 0:
            prefork = maxfork = -prefork
        if maxfork == 0:
            maxfork = 4 * prefork if prefork else 16
        if maxfork < prefork:
            raise ConfigError(f"maxfork ({maxfork}) must not be below prefork ({prefork})")
        for name in ("accept_wait", "px_idle", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be more than 0 seconds, got {getattr(self, name)}")
        for name in ("graceful_timeout", "request_timeout", "slowlog_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more seconds, got {getattr(self, name)}")
        if self.max_requests < 0:
            raise ConfigError(f"max_requests must be 0 (never) or more, got {self.max_requests}")
        if self.max_worker_rss < 0:
            raise ConfigError(f"max_worker_rss must be 0 (no limit) or more, got {self.max_worker_rss}")
        jitter = self.max_requests // 10 if self.max_requests_jitter is None else self.max_requests_jitter
        if jitter < 0:
            raise ConfigError(f"max_requests_jitter must be 0 or more, got {jitter}")
        worker_cpus = self.worker_cpus
        if worker_cpus:
            try:
                worker_cpus = format_cpu_list(checked_cpu_list(worker_cpus))  # one spelling for logs and workers
            except ValueError as exc:
                raise ConfigError(f"worker_cpus: {exc}") from None
        if self.request_timeout and self.slowlog_timeout >= self.request_timeout:
            raise ConfigError(f"slowlog_timeout ({self.slowlog_timeout:g}s) must be below request_timeout "
                              f"({self.request_timeout:g}s), or the stack is never written")
        for name in ("status_path", "ping_path"):
            value = getattr(self, name)
            if value and not value.startswith("/"):
                raise ConfigError(f"{name} must start with '/', got {value!r}")
        try:
            AllowList(self.status_allow, "status_allow")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.status_path and self.status_path == self.ping_path:
            raise ConfigError("status_path and ping_path must differ")
        try:
            compile_format(self.access_log_format)
        except FormatError as exc:
            raise ConfigError(str(exc)) from None
        if self.user:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise ConfigError(f"user {self.user!r} does not exist") from None
        if self.group:
            try:
                grp.getgrnam(self.group)
            except KeyError:
                raise ConfigError(f"group {self.group!r} does not exist") from None
        if self.group and not self.user:
            raise ConfigError("group needs user too")
        for name in ("pidfile", "slowlog_file", "log_file") + (("access_log",) if self.access_log != "-" else ()):
            path = getattr(self, name)
            if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise ConfigError(f"{name} {path}: its folder {os.path.dirname(os.path.abspath(path))} does not exist")
            if path and os.path.isdir(path):
                raise ConfigError(f"{name} {path} is a folder; name a file in it")
        if self.slowlog_file and not self.slowlog_timeout:
            raise ConfigError("slowlog_file without slowlog_timeout: nothing would be written to it "
                              "(give --slowlog-timeout SECONDS)")
        return replace(self, prefork=prefork, maxfork=maxfork, worker_cpus=worker_cpus, max_requests_jitter=jitter)


@dataclass(frozen=True)
class ListenConfig:
    """Where the server listens: a unix socket (``run``: SITE/fcgi_backend.sock by default) or TCP."""

    socket: str = ""         #: unix socket path ("" = SITE/fcgi_backend.sock)
    tcp: str = ""            #: HOST:PORT (run: instead of the socket; serve-http: default 127.0.0.1:8000)
    socket_mode: int = 0o660  #: permissions of the unix socket
    socket_group: str = ""   #: group of the unix socket, e.g. www-data so Apache may connect
    allowed_clients: str = ""  #: with tcp: the web servers' addresses or networks, comma-separated
    #: serve-http: the proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (forwarded.py)
    forwarded_allow_ips: str = LOOPBACK

    def check(self) -> None:
        if self.socket and self.tcp:
            raise ConfigError("socket and tcp: give one (a unix socket, or a TCP address)")
        if self.tcp:
            try:
                ListenAddress.parse_tcp(self.tcp, setting="tcp in [listen]")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.allowed_clients and not self.tcp:
            raise ConfigError("allowed_clients is for a TCP listener (tcp); a unix socket has its mode and group")
        try:
            AllowList(self.allowed_clients)
            AllowList(self.forwarded_allow_ips, "forwarded_allow_ips")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not 0 <= self.socket_mode <= 0o777:
            raise ConfigError(f"socket_mode {self.socket_mode:o} is out of range 0000-0777")
        if self.socket_group:
            try:
                grp.getgrnam(self.socket_group)
            except KeyError:
                raise ConfigError(f"socket_group {self.socket_group!r} does not exist") from None


TABLE_MODELS: dict[str, type] = {"server": ServerConfig, "listen": ListenConfig, "limits": Limits,
                                 "tls": TLSConfig, "sessions": SessionConfig}
# Settings that belong to one command: the other refuses them in a file.
COMMAND_ONLY = {("listen", "socket"): "run", ("listen", "allowed_clients"): "run", ("listen", "socket_mode"): "run", ("listen", "socket_group"): "run",
                ("listen", "forwarded_allow_ips"): "serve-http",
                ("limits", "max_params"): "run", ("limits", "min_rate"): "serve-http", ("tls", None): "serve-http"}

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_size(text: str) -> int:
    """``16M`` -> 16777216; plain numbers are bytes."""
    number, unit = str(text).strip().upper().rstrip("B"), ""
    if number and number[-1] in "KMG":
        number, unit = number[:-1], number[-1]
    if not number.isdigit():
        raise ValueError(f"not a size: {text!r} (use bytes, or a number with K, M or G)")
    return int(number) * _SIZE_UNITS[unit]


def parse_mode(text: str) -> int:
    """An octal permission mode such as 0660."""
    try:
        mode = int(str(text), 8)
    except ValueError:
        raise ValueError(f"not an octal mode: {text!r} (for example 0660)") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode {text} is out of range 0000-0777")
    return mode


# Settings a file may also write as text ("16M", "0660"): how to read that text.
TEXT_PARSERS: dict[tuple[str, str], Callable[[str], Any]] = {
    **{("limits", name): parse_size for name in ("max_body", "max_memory", "max_file", "max_part_header",
                                                 "max_params", "upload_direct_io")},
    ("server", "max_worker_rss"): parse_size,
    ("listen", "socket_mode"): parse_mode,
}

_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


# Settings that changed name, and what to write instead.
RENAMED = {
    ("server", "timeout"): "was renamed accept_wait (the wait in accept between a worker's idle hooks); "
                           "a limit on how long a request may run is request_timeout",
}


def table_fields(table: str) -> dict[str, str]:
    """The settings a table takes, and each one's type."""
    return {f.name: str(f.type).replace(" | None", "") for f in fields(TABLE_MODELS[table])}


def load_config_file(path: str | Path, command: str = "") -> dict[str, dict]:
    """The tables of a TOML settings file, each checked for unknown keys and types (and, with
    ``command``, for settings that belong to the other command)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    tables = {}
    for table, values in data.items():
        if table not in TABLE_MODELS:
            if not isinstance(values, dict):
                raise ConfigError(f"config file {path}: {table!r} is outside any table; settings go in one of "
                                  f"{', '.join(f'[{t}]' for t in TABLE_MODELS)}")
            raise ConfigError(f"config file {path}: unknown table [{table}] (known: "
                              f"{', '.join(f'[{t}]' for t in TABLE_MODELS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: {table} must be a table ([{table}]), got {values!r}")
        if command and COMMAND_ONLY.get((table, None), command) != command:
            raise ConfigError(f"config file {path}: [{table}] is for {COMMAND_ONLY[(table, None)]}, not {command}")
        known = table_fields(table)
        settings = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if (table, name) in RENAMED:
                raise ConfigError(f"config file {path}: {key} in [{table}] {RENAMED[(table, name)]}")
            if name not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r} in [{table}] "
                                  f"(known: {', '.join(sorted(known))})")
            if command and COMMAND_ONLY.get((table, name), command) != command:
                raise ConfigError(f"config file {path}: {key} in [{table}] is for {COMMAND_ONLY[(table, name)]}, "
                                  f"not {command}")
            parser = TEXT_PARSERS.get((table, name))
            if parser is not None and isinstance(value, str):
                try:
                    value = parser(value)
                except ValueError as exc:
                    raise ConfigError(f"config file {path}: {key} in [{table}]: {exc}") from None
            if not _TYPE_CHECKS[known[name]](value):
                raise ConfigError(f"config file {path}: {key} in [{table}] must be {known[name]}, got {value!r}")
            settings[name] = value
        tables[table] = settings
    return tables


def merged(table: str, file_tables: dict[str, dict], flags: dict[str, Any]):
    """The table's model from its defaults, then the file's values, then the flags that were given."""
    values = {**file_tables.get(table, {}), **{k: v for k, v in flags.items() if v is not None}}
    return TABLE_MODELS[table](**values)
