"""The ``fcgi-backend`` command: run a site's backend on its socket, or check a site."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__, logs
from .app import Application
from .config import ConfigError, ServerConfig, build_config, load_config_file
from .hooks import Hooks
from .limits import Limits
from .listener import DEFAULT_SOCKET_MODE, ListenAddress
from .loader import HandlerLoadError, load_handlers, load_wsgi_app
from .registry import Registry
from .appserver import AppServer
from .fastcgi_server import FastCGIServer
from .http_server import HTTPServer
from .sessions import SessionConfig, SessionManager, SessionStoreError, store_for
from .tls import TLSConfig, TLSError
from .site import SiteError, SiteLayout
from .views import ViewCache

log = logging.getLogger("fcgi_backend")

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_USAGE = 2

class UsageError(Exception):
    """Options that cannot work together or with this machine."""


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_size(text: str) -> int:
    """``16M`` -> 16777216; plain numbers are bytes."""
    number, unit = text.strip().upper().rstrip("B"), ""
    if number and number[-1] in "KMG":
        number, unit = number[:-1], number[-1]
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use bytes, or a number with K, M or G)")
    return int(number) * _SIZE_UNITS[unit]


def parse_mode(text: str) -> int:
    """An octal permission mode such as 0660."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r} (for example 0660)") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"mode {text} is out of range 0000-0777")
    return mode


DEFAULT_HTTP = "127.0.0.1:8000"


def parse_listen(text: str) -> ListenAddress:
    try:
        return ListenAddress.parse_tcp(text, option="--listen")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_tcp(text: str) -> ListenAddress:
    try:
        return ListenAddress.parse_tcp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcgi-backend",
        description="Application server for Python handlers and mustache views: FastCGI behind Apache 2.4 "
                    "(run), or HTTP on its own (serve-http).",
        epilog="A site folder holds webroot/ (Apache's DocumentRoot), handlers/ (Python modules with "
               "init_module(registry)) and SQLiteDBs/. The socket is SITE/fcgi_backend.sock, one level "
               "above the DocumentRoot. Exit codes: 0 ok, 1 start-up failed, 2 bad usage, "
               "100 the listen socket cannot be created.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="serve SITE over FastCGI until SIGTERM or SIGINT",
                              description="Load SITE's handler modules, listen on the site's socket "
                                          "and serve FastCGI until SIGTERM or SIGINT.")
    run.add_argument("site", metavar="SITE", help="the site folder (holds webroot/ and handlers/)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="unix socket path (default: SITE/fcgi_backend.sock)")
    where.add_argument("--tcp", metavar="HOST:PORT", type=parse_tcp, help="listen on TCP instead of a unix socket")
    run.add_argument("--socket-mode", metavar="MODE", type=parse_mode, default=DEFAULT_SOCKET_MODE,
                     help="permissions of the unix socket, octal (default: 0660)")
    run.add_argument("--socket-group", metavar="GROUP",
                     help="group of the unix socket, e.g. www-data so Apache may connect")
    add_serving_options(run, fastcgi=True)

    http = commands.add_parser("serve-http", help="serve SITE over HTTP (and TLS) on its own, until SIGTERM or SIGINT",
                               description="Load SITE's handler modules and serve the site over HTTP/1.1 "
                                           "(optionally TLS): templates, routes and webroot's static files.")
    http.add_argument("site", metavar="SITE", help="the site folder (holds webroot/ and handlers/)")
    http.add_argument("--listen", metavar="HOST:PORT", type=parse_listen, default=ListenAddress.parse_tcp(DEFAULT_HTTP),
                      help=f"address to listen on (default: {DEFAULT_HTTP})")
    tls = http.add_argument_group("TLS (also settable in a [tls] table of --config; the flags win)")
    tls.add_argument("--tls-cert", metavar="FILE", help="the server's certificate (PEM; with its chain)")
    tls.add_argument("--tls-key", metavar="FILE", help="its private key (PEM; default: in the certificate file)")
    tls.add_argument("--tls-ca", metavar="FILE", help="CA certificates that client certificates must chain to")
    tls.add_argument("--tls-verify", metavar="MODE", choices=["none", "optional", "required"],
                     help="client certificates: none (default), optional (checked if sent) or required")
    add_serving_options(http, fastcgi=False)

    sessions = commands.add_parser("sessions", help="count SITE's sessions (live and expired), or --purge the expired",
                                   description="Count the sessions of SITE's store, live and expired; with --purge, "
                                               "remove the expired ones (workers also do, as requests come).")
    sessions.add_argument("site", metavar="SITE")
    sessions.add_argument("--purge", action="store_true", help="remove the expired sessions")
    sessions.add_argument("--config", metavar="FILE", help="TOML file with a [sessions] table")
    add_session_options(sessions)
    sessions.add_argument("--debug", action="store_const", const=True, help="log more detail")

    check = commands.add_parser("check", help="load SITE's handler modules and list what they register")
    check.add_argument("site", metavar="SITE")
    check.add_argument("--debug", action="store_true", help="log more detail")
    return parser


def add_session_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("sessions (also settable in a [sessions] table of --config; the flags win)")
    defaults = SessionConfig()
    group.add_argument("--sessions", metavar="URL", dest="session_store",
                       help="where sessions live: sqlite:///PATH or postgresql://USER@HOST/DB "
                            "(default: SQLite in SITE/SQLiteDBs/sessions.sqlite3)")
    group.add_argument("--session-cookie", metavar="NAME", dest="session_cookie_name",
                       help=f"the session cookie's name (default: {defaults.cookie_name})")
    group.add_argument("--session-idle", metavar="SECONDS", type=float, dest="session_idle_lifetime",
                       help=f"a session unused this long is gone (default: {defaults.idle_lifetime:g})")
    group.add_argument("--session-lifetime", metavar="SECONDS", type=float, dest="session_absolute_lifetime",
                       help=f"a session older than this is gone (default: {defaults.absolute_lifetime:g})")


def add_serving_options(command: argparse.ArgumentParser, fastcgi: bool) -> None:
    """Limits, pool and application options: the same for both flavours."""
    peer = "web server" if fastcgi else "client"
    limits = command.add_argument_group("request limits (a request over one gets 413)")
    defaults = Limits()
    limits.add_argument("--max-body", metavar="SIZE", type=parse_size, default=defaults.max_body,
                        help="largest request body, streamed (default: 4G)")
    limits.add_argument("--max-memory", metavar="SIZE", type=parse_size, default=defaults.max_memory,
                        help="largest body read into memory, or all form fields together (default: 16M)")
    limits.add_argument("--max-file", metavar="SIZE", type=parse_size, default=defaults.max_file,
                        help="largest uploaded file (default: 4G)")
    limits.add_argument("--max-parts", metavar="N", type=int, default=defaults.max_parts,
                        help="most parts in a multipart body (default: 1000)")
    limits.add_argument("--max-part-header", metavar="SIZE", type=parse_size, default=defaults.max_part_header,
                        help="largest header block of one part (default: 16K)")
    limits.add_argument("--upload-dir", metavar="DIR", default=defaults.upload_dir,
                        help=f"where uploaded files are written while a request runs (default: {defaults.upload_dir})")
    if fastcgi:
        limits.add_argument("--max-params", metavar="SIZE", type=parse_size, default=defaults.max_params,
                            help="largest block of FastCGI params (the CGI variables) of a request (default: 1M)")
    limits.add_argument("--read-timeout", metavar="SECONDS", type=float, default=defaults.read_timeout,
                        help=f"longest wait for the {peer}'s next bytes inside a request "
                             f"(default: {defaults.read_timeout:g})")
    pool = command.add_argument_group("worker pool (also settable in --config; the flags win)")
    defaults = ServerConfig()
    command.add_argument("--config", metavar="FILE", help="TOML file with a [server] table of the settings below"
                                                          + ("" if fastcgi else ", and a [tls] table"))
    pool.add_argument("--prefork", type=int, help=f"workers forked at start; negative sets prefork and "
                                                  f"maxfork together; 0 forks one process per connection "
                                                  f"(default: {defaults.prefork})")
    pool.add_argument("--maxfork", type=int, help="most workers, reached when all are busy (default: 4 x prefork)")
    pool.add_argument("--nofork", action="store_const", const=True,
                      help="serve from this one process, e.g. to step through a handler in a debugger")
    pool.add_argument("--timeout", type=float, metavar="SECONDS",
                      help=f"accept wait before a worker's idle hook runs (default: {defaults.timeout:g})")
    pool.add_argument("--px-idle", type=float, metavar="SECONDS",
                      help=f"idle time after which a worker above prefork exits (default: {defaults.px_idle:g})")
    pool.add_argument("--max-requests", type=int, metavar="N",
                      help="replace a worker after N requests (default: 0, never)")
    pool.add_argument("--graceful-timeout", type=float, metavar="SECONDS",
                      help=f"on SIGTERM/SIGINT, time for requests in flight (default: {defaults.graceful_timeout:g})")
    pool.add_argument("--request-timeout", type=float, metavar="SECONDS",
                      help="stop a request running longer (504) and replace its worker (default: 0, never)")
    pool.add_argument("--idle-timeout", metavar="SECONDS", type=float,
                      help=f"longest wait for a request on a new or kept connection (default: {defaults.idle_timeout:g})")
    pool.add_argument("--no-prop-sigusr", dest="prop_sigusr", action="store_const", const=False,
                      help="do not pass SIGUSR1/SIGUSR2 on to the workers")
    pool.add_argument("--status-path", metavar="PATH", help="URL path of the status page (JSON; OpenMetrics "
                                                             "with ?openmetrics), e.g. /fcgi-status")
    pool.add_argument("--ping-path", metavar="PATH", help="URL path that answers pong, e.g. /fcgi-ping")
    pool.add_argument("--log-file", metavar="FILE", help="append logs to FILE instead of stderr (SIGUSR1 reopens it)")
    add_session_options(command)
    command.add_argument("--app", metavar="MODULE:CALLABLE",
                         help="serve this WSGI application instead of the site's handlers and templates "
                              "(MODULE may also be a path to a .py file)")
    command.add_argument("--access-log", action="store_true",
                         help="log a line per request (method, path, status, size, time); --debug does too")
    command.add_argument("--debug", action="store_const", const=True,
                         help="log more detail and show tracebacks on 500 pages (never in production)")


def _load_site(site_dir: str) -> tuple[SiteLayout, Registry]:
    site = SiteLayout.open(site_dir)
    registry = Registry(site)
    load_handlers(site.handlers, registry)
    return site, registry


def cmd_check(args) -> int:
    site, registry = _load_site(args.site)
    print(f"site:     {site.root}")
    print(f"socket:   {site.socket_path}")
    handlers = [name + (" (csrf)" if registry.handler_needs_csrf(name) else "") for name in registry.handler_names]
    print(f"handlers: {', '.join(handlers) or '(none)'}")
    for route in registry.routes:
        print(f"route:    {route.pattern} -> {getattr(route.handler, '__name__', route.handler)}"
              f"{' with ' + route.template if route.template else ''} [{', '.join(sorted(route.methods))}]"
              f"{' (csrf)' if route.csrf else ''}")
    return EXIT_OK


def limits_from_args(args) -> Limits:
    """The request limits the options ask for; UsageError if they cannot work."""
    limits = Limits(max_body=args.max_body, max_memory=args.max_memory, max_file=args.max_file,
                    max_parts=args.max_parts, max_part_header=args.max_part_header,
                    max_params=getattr(args, "max_params", Limits.max_params), upload_dir=args.upload_dir,
                    read_timeout=args.read_timeout)
    try:
        limits.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not os.path.isdir(limits.upload_dir) or not os.access(limits.upload_dir, os.W_OK | os.X_OK):
        raise UsageError(f"upload directory {limits.upload_dir} does not exist or is not writable")
    return limits


def config_tables(args) -> dict[str, dict]:
    return load_config_file(args.config) if args.config else {}


def server_config(args) -> ServerConfig:
    """The pool settings: defaults, then --config's file, then the flags given."""
    names = ("prefork", "maxfork", "nofork", "timeout", "px_idle", "max_requests", "graceful_timeout",
             "request_timeout", "idle_timeout", "prop_sigusr", "status_path", "ping_path", "log_file", "debug")
    return build_config(config_tables(args).get("server", {}), {name: getattr(args, name) for name in names})


def tls_config(args) -> TLSConfig | None:
    """TLS settings from --config's [tls] table and the --tls-* flags; None without a certificate."""
    settings = dict(config_tables(args).get("tls", {}))
    flags = {"cert_file": args.tls_cert, "key_file": args.tls_key, "ca_file": args.tls_ca,
             "verify_mode": args.tls_verify}
    settings.update({k: v for k, v in flags.items() if v is not None})
    if not settings:
        return None
    if "cert_file" not in settings:
        raise UsageError("TLS settings need a certificate (--tls-cert, or cert_file in [tls])")
    tls = TLSConfig(**settings)
    try:
        tls.check()
    except TLSError as exc:
        raise UsageError(str(exc)) from None
    return tls


def session_config(args) -> SessionConfig:
    """Session settings: defaults, then --config's [sessions] table, then the flags given."""
    settings = dict(config_tables(args).get("sessions", {}))
    for name in ("store", "cookie_name", "idle_lifetime", "absolute_lifetime"):
        value = getattr(args, f"session_{name}", None)
        if value is not None:
            settings[name] = value
    config = SessionConfig(**settings)
    try:
        config.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return config


def session_manager(site: SiteLayout, args, probe: bool = True) -> SessionManager:
    config = session_config(args)
    try:
        manager = SessionManager(store_for(config, str(site.sqlite_dbs)), config)
        if probe:
            manager.probe()  # a wrong URL or a store that is down shows in the log at start
    except ValueError as exc:  # an unknown kind of URL, or its driver missing
        raise UsageError(str(exc)) from None
    return manager


def app_loader(site: SiteLayout, args, limits: Limits):
    """A function that builds (application, hooks) afresh: at start, and again on SIGHUP."""
    sessions = None if args.app else session_manager(site, args)

    def load():
        if args.app:
            return load_wsgi_app(args.app), Hooks()
        registry = Registry(site)
        load_handlers(site.handlers, registry)
        return (Application(registry, ViewCache(site.webroot), debug=bool(args.debug), limits=limits,
                            access_log=args.access_log, sessions=sessions), registry.hooks)
    return load


def cmd_sessions(args) -> int:
    site = SiteLayout.open(args.site)
    manager = session_manager(site, args, probe=False)
    try:
        live, expired = manager.counts()
        print(f"store:   {manager.store.description}")
        print(f"live:    {live}")
        print(f"expired: {expired}")
        if args.purge:
            print(f"purged:  {manager.purge()}")
    except SessionStoreError as exc:
        log.error("%s", exc.detail)
        return EXIT_STARTUP_FAILED
    finally:
        manager.store.close()
    return EXIT_OK


def serve(server: AppServer) -> int:
    code = server.run()
    if code == EXIT_OK and not server.is_child():
        pool = server.scoreboard.read()
        log.info("stopped after %d requests on %d connections", pool.requests, pool.accepted)
    return code


def cmd_run(args) -> int:
    limits = limits_from_args(args)
    site = SiteLayout.open(args.site)
    config = server_config(args)
    address = args.tcp or ListenAddress(path=str(Path(args.socket).resolve() if args.socket else site.socket_path))
    if address.path and args.socket_mode & 0o002:
        log.warning("socket mode %04o lets every local user connect", args.socket_mode)
    if config_tables(args).get("tls"):
        raise UsageError("a [tls] table is for serve-http: web servers reach a FastCGI backend without TLS")
    server = FastCGIServer(app_loader(site, args, limits), address, config, limits=limits, debug=config.debug,
                           socket_mode=args.socket_mode, socket_group=args.socket_group)
    log.info("fcgi-backend %s serving %s over FastCGI", __version__, site.root)
    return serve(server)


def cmd_serve_http(args) -> int:
    limits = limits_from_args(args)
    site = SiteLayout.open(args.site)
    config = server_config(args)
    tls = tls_config(args)
    try:
        server = HTTPServer(app_loader(site, args, limits), args.listen, config, site=site, limits=limits,
                            debug=config.debug, tls=tls)
    except TLSError as exc:
        raise UsageError(str(exc)) from None
    scheme = "https" if tls else "http"
    log.info("fcgi-backend %s serving %s at %s://%s:%d/", __version__, site.root, scheme, args.listen.host,
             args.listen.port)
    return serve(server)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_file, debug = "", bool(getattr(args, "debug", False))
    if args.command in ("run", "serve-http"):
        try:
            config = server_config(args)
            log_file, debug = config.log_file, config.debug
        except ConfigError as exc:
            logs.configure(debug=debug)
            log.error("%s", exc)
            return EXIT_USAGE
    logs.configure(debug=debug, log_file=log_file)
    try:
        return {"run": cmd_run, "serve-http": cmd_serve_http, "sessions": cmd_sessions,
                "check": cmd_check}[args.command](args)
    except (SiteError, UsageError, ConfigError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except HandlerLoadError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
