"""The server's controls: Net::Waiter's (prefork, maxfork, nofork, timeout, px_idle, prop_sigusr)
and what users know from php-fpm and gunicorn, read from a TOML file and the command line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

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
    """How the server runs its pool of worker processes."""

    prefork: int = 4                 #: workers forked at start (negative: both prefork and maxfork; 0: forking)
    maxfork: int = 0                 #: ceiling on workers; 0 means 4 x prefork (16 when forking)
    nofork: bool = False             #: serve from one process (for stepping through with a debugger)
    timeout: float = 4.0             #: seconds a worker waits in accept before its idle hook runs
    px_idle: float = 31.0            #: a worker above prefork that idles this long exits
    max_requests: int = 0            #: a worker is replaced after this many requests (0: never)
    graceful_timeout: float = 30.0   #: on TERM/INT, how long in-flight requests get to finish
    request_timeout: float = 0.0     #: a request running longer is stopped (504) and its worker replaced; 0: never
    idle_timeout: float = 15.0       #: longest wait for a request on a new or kept connection
    prop_sigusr: bool = True         #: pass USR1/USR2 on to the workers
    status_path: str = ""            #: URL path of the status page ("" = off), as php-fpm's pm.status_path
    ping_path: str = ""              #: URL path that answers "pong" ("" = off)
    log_file: str = ""               #: append logs here instead of stderr; USR1 reopens it
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
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be more than 0 seconds, got {self.timeout}")
        if self.px_idle <= 0:
            raise ConfigError(f"px_idle must be more than 0 seconds, got {self.px_idle}")
        if self.max_requests < 0:
            raise ConfigError(f"max_requests must be 0 (never) or more, got {self.max_requests}")
        if self.graceful_timeout < 0:
            raise ConfigError(f"graceful_timeout must be 0 or more seconds, got {self.graceful_timeout}")
        if self.idle_timeout <= 0:
            raise ConfigError(f"idle_timeout must be more than 0 seconds, got {self.idle_timeout}")
        if self.request_timeout < 0:
            raise ConfigError(f"request_timeout must be 0 (never) or more seconds, got {self.request_timeout}")
        for name in ("status_path", "ping_path"):
            value = getattr(self, name)
            if value and not value.startswith("/"):
                raise ConfigError(f"{name} must start with '/', got {value!r}")
        if self.status_path and self.status_path == self.ping_path:
            raise ConfigError("status_path and ping_path must differ")
        return replace(self, prefork=prefork, maxfork=maxfork)


FIELD_TYPES = {f.name: f.type for f in fields(ServerConfig)}
_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


def _table_fields(table: str) -> dict[str, str]:
    """The settings a table of the config file takes, and each one's type."""
    model = {"server": ServerConfig, "tls": TLSConfig, "sessions": SessionConfig}[table]
    return {f.name: f.type.replace(" | None", "") for f in fields(model)}


TABLES = ("server", "tls", "sessions")


def load_config_file(path: str | Path) -> dict[str, dict]:
    """The tables of a TOML settings file (``[server]``, ``[tls]``, ``[sessions]``), each checked for unknown keys
    and types; a file without tables is the ``[server]`` table."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if not any(isinstance(value, dict) for value in data.values()):
        data = {"server": data}
    tables = {}
    for table, values in data.items():
        if table not in TABLES:
            raise ConfigError(f"config file {path}: unknown table [{table}] (known: "
                              f"{', '.join(f'[{t}]' for t in TABLES)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: {table} must be a table ([{table}]), got {values!r}")
        known = _table_fields(table)
        settings = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r} in [{table}] "
                                  f"(known: {', '.join(sorted(known))})")
            if not _TYPE_CHECKS[known[name]](value):
                raise ConfigError(f"config file {path}: {key} must be {known[name]}, got {value!r}")
            settings[name] = value
        tables[table] = settings
    return tables


def build_config(file_settings: dict, overrides: dict) -> ServerConfig:
    """Defaults, then the file, then the command line (its options that were given)."""
    merged = {**file_settings, **{k: v for k, v in overrides.items() if v is not None}}
    return ServerConfig(**merged).resolved()
