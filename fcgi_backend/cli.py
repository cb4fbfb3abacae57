"""The ``fcgi-backend`` command: run a site's backend (FastCGI or HTTP), check a site, count its
sessions, print an Apache vhost for it.

Every serving setting has a flag and a key in the ``--config`` TOML file (``config.py``); a flag
given on the command line wins over the file, the file over the defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__, logs
from .allowlist import AllowList
from .app import site_application
from .appserver import AppServer
from .checks import check_site
from .config import ConfigError, ListenConfig, ServerConfig, load_config_file, merged, parse_mode, parse_size
from .fastcgi_server import FastCGIServer
from .hooks import Hooks
from .http_server import HTTPServer
from .identity import group_name
from .limits import Limits
from .listener import ListenAddress
from .loader import HandlerLoadError, load_handlers, load_wsgi_app
from .registry import Registry
from .sessions import SessionConfig, SessionManager, SessionStoreError, store_for
from .site import SiteError, SiteLayout
from .tls import TLSConfig, TLSError
from .vhost import ApacheConfError, vhost_for

log = logging.getLogger("fcgi_backend")

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_USAGE = 2
DEFAULT_HTTP = "127.0.0.1:8000"


class UsageError(Exception):
    """Options that cannot work together or with this machine."""


def _argtype(parse):
    """An argparse type from a parser that raises ValueError with a message."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__
    return convert


def _tcp_address(text: str) -> str:
    ListenAddress.parse_tcp(text)  # checked here (argparse names the flag), parsed again when used
    return text


class _Renamed(argparse.Action):
    """A flag that was renamed: refused, saying what to use instead."""

    def __init__(self, option_strings, dest, message: str = "", **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS, **kwargs)
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: {self.message}")


def _option(group, *flags: str, setting: str, **kwargs) -> None:
    """A flag for the setting TABLE.NAME: absent unless given, so the config file's value stands."""
    group.add_argument(*flags, dest=setting, default=None, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcgi-backend",
        description="Application server for Python handlers and mustache views: FastCGI behind Apache 2.4 "
                    "(run), or HTTP on its own (serve-http).",
        epilog="A site folder holds webroot/ (Apache's DocumentRoot), handlers/ (Python modules with "
               "init_module(registry)) and SQLiteDBs/. The socket is SITE/fcgi_backend.sock, one level "
               "above the DocumentRoot. Exit codes: 0 ok, 1 start-up failed (or check found problems), "
               "2 bad usage, 100 the listen socket cannot be created.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="serve SITE over FastCGI until SIGTERM or SIGINT",
                              description="Load SITE's handler modules, listen on the site's socket "
                                          "and serve FastCGI until SIGTERM or SIGINT.")
    run.add_argument("site", metavar="SITE", help="the site folder (holds webroot/ and handlers/)")
    where = run.add_argument_group("where to listen ([listen] in --config)")
    _option(where, "--socket", setting="listen.socket", metavar="PATH",
            help="unix socket path (default: SITE/fcgi_backend.sock)")
    _option(where, "--tcp", setting="listen.tcp", metavar="HOST:PORT", type=_argtype(_tcp_address),
            help="listen on TCP instead of a unix socket")
    _option(where, "--socket-mode", setting="listen.socket_mode", metavar="MODE", type=_argtype(parse_mode),
            help="permissions of the unix socket, octal (default: 0660)")
    _option(where, "--socket-group", setting="listen.socket_group", metavar="GROUP",
            help="group of the unix socket, e.g. www-data so Apache may connect")
    _option(where, "--allowed-clients", setting="listen.allowed_clients", metavar="ADDRESSES",
            help="with --tcp: the only peers served, comma-separated addresses or networks (the web servers; "
                 "FastCGI has no authentication), e.g. 10.0.0.5,10.0.1.0/24")
    add_serving_options(run, fastcgi=True)

    http = commands.add_parser("serve-http", help="serve SITE over HTTP (and TLS) on its own, until SIGTERM or SIGINT",
                               description="Load SITE's handler modules and serve the site over HTTP/1.1 "
                                           "(optionally TLS): templates, routes and webroot's static files.")
    http.add_argument("site", metavar="SITE", help="the site folder (holds webroot/ and handlers/)")
    where = http.add_argument_group("where to listen ([listen] in --config)")
    _option(where, "--listen", setting="listen.tcp", metavar="HOST:PORT", type=_argtype(_tcp_address),
            help=f"address to listen on (default: {DEFAULT_HTTP})")
    _option(where, "--forwarded-allow-ips", setting="listen.forwarded_allow_ips", metavar="ADDRESSES",
            help="reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (the client's address "
                 "and scheme), comma-separated addresses or networks; \"\" for none (default: "
                 f"{ListenConfig().forwarded_allow_ips})")
    tls = http.add_argument_group("TLS ([tls] in --config)")
    _option(tls, "--tls-cert", setting="tls.cert_file", metavar="FILE", help="the server's certificate (PEM; with its chain)")
    _option(tls, "--tls-key", setting="tls.key_file", metavar="FILE",
            help="its private key (PEM; default: in the certificate file)")
    _option(tls, "--tls-ca", setting="tls.ca_file", metavar="FILE",
            help="CA certificates that client certificates must chain to")
    _option(tls, "--tls-verify", setting="tls.verify_mode", metavar="MODE", choices=["none", "optional", "required"],
            help="client certificates: none (default), optional (checked if sent) or required")
    add_serving_options(http, fastcgi=False)

    sessions = commands.add_parser("sessions", help="count SITE's sessions (live and expired), or --purge the expired",
                                   description="Count the sessions of SITE's store, live and expired; with --purge, "
                                               "remove the expired ones (workers also do, as requests come).")
    sessions.add_argument("site", metavar="SITE")
    sessions.add_argument("--purge", action="store_true", help="remove the expired sessions")
    sessions.add_argument("--config", metavar="FILE", help="TOML file with a [sessions] table")
    add_session_options(sessions)
    sessions.add_argument("--debug", action="store_true", help="log more detail")

    check = commands.add_parser("check", help="find what would fail at request time in SITE; list what it registers",
                                description="Load SITE's handler modules and check its templates: each problem "
                                            "(a template that does not parse, a partial that does not exist, a "
                                            "pragma or route naming what is not there, a handler module that "
                                            "fails) is one line, and the exit code is 1. Creates nothing.")
    check.add_argument("site", metavar="SITE")
    check.add_argument("--debug", action="store_true", help="log more detail")

    apache = commands.add_parser("apache-conf", help="print an Apache vhost for SITE",
                                 description="Print a <VirtualHost> that serves SITE through mod_proxy_fcgi (or the "
                                             "connector module): its paths written out, nothing server-global, so "
                                             "several sites can share one Apache.")
    apache.add_argument("site", metavar="SITE")
    apache.add_argument("--port", type=int, default=80, help="the port the vhost listens on (default: 80)")
    apache.add_argument("--server-name", metavar="NAME", help="ServerName of the vhost (default: none)")
    apache.add_argument("--socket", metavar="PATH", help="the backend's socket (default: SITE/fcgi_backend.sock)")
    apache.add_argument("--connector", action="store_true",
                        help="use the project's connector module (mod_fcgi_backend) instead of mod_proxy_fcgi")
    apache.add_argument("--listen", action="store_true", help="also write the Listen line for the port")
    apache.add_argument("--balancer", metavar="HOST:PORT", action="append", default=[],
                        help="a backend on another host (repeat for each): the vhost spreads requests over them "
                             "with mod_proxy_balancer, health-checked on --ping-path (docs/SCALING.md)")
    apache.add_argument("--standby", metavar="HOST:PORT", action="append", default=[],
                        help="with --balancer: a hot standby, used only while every other member is down")
    apache.add_argument("--ping-path", default="/fcgi-ping", metavar="PATH",
                        help="the backends' --ping-path, for the health checks (default: /fcgi-ping)")
    return parser


def add_session_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("sessions ([sessions] in --config)")
    defaults = SessionConfig()
    _option(group, "--sessions", setting="sessions.store", metavar="URL",
            help="where sessions live: sqlite:///PATH or postgresql://USER@HOST/DB "
                 "(default: SQLite in SITE/SQLiteDBs/sessions.sqlite3)")
    _option(group, "--session-cookie", setting="sessions.cookie_name", metavar="NAME",
            help=f"the session cookie's name (default: {defaults.cookie_name})")
    _option(group, "--session-idle", setting="sessions.idle_lifetime", metavar="SECONDS", type=float,
            help=f"a session unused this long is gone (default: {defaults.idle_lifetime:g})")
    _option(group, "--session-lifetime", setting="sessions.absolute_lifetime", metavar="SECONDS", type=float,
            help=f"a session older than this is gone (default: {defaults.absolute_lifetime:g})")


def add_serving_options(command: argparse.ArgumentParser, fastcgi: bool) -> None:
    """Limits, process, log and application options: the same for both flavours."""
    peer = "web server" if fastcgi else "client"
    command.add_argument("--config", metavar="FILE",
                         help="TOML file with any of the settings below, in tables: [server], [listen], [limits], "
                              + ("[sessions]" if fastcgi else "[tls], [sessions]") + " (see README)")
    limits = command.add_argument_group("request limits ([limits] in --config; a request over one gets 413)")
    defaults = Limits()
    size = _argtype(parse_size)
    _option(limits, "--max-body", setting="limits.max_body", metavar="SIZE", type=size,
            help="largest request body, streamed (default: 4G)")
    _option(limits, "--max-memory", setting="limits.max_memory", metavar="SIZE", type=size,
            help="largest body read into memory, or all form fields together (default: 16M)")
    _option(limits, "--max-file", setting="limits.max_file", metavar="SIZE", type=size,
            help="largest uploaded file (default: 4G)")
    _option(limits, "--max-parts", setting="limits.max_parts", metavar="N", type=int,
            help="most parts in a multipart body, or fields in an urlencoded one (default: 1000)")
    _option(limits, "--max-part-header", setting="limits.max_part_header", metavar="SIZE", type=size,
            help="largest header block of one part (default: 16K)")
    _option(limits, "--upload-dir", setting="limits.upload_dir", metavar="DIR",
            help=f"where uploaded files are written while a request runs (default: {defaults.upload_dir})")
    _option(limits, "--upload-direct-io", setting="limits.upload_direct_io", metavar="SIZE", type=size,
            help="an uploaded file larger than this is written past the page cache (O_DIRECT), by a thread, "
                 "while the rest of the body is read; 0: never (default: 32M)")
    if fastcgi:
        _option(limits, "--max-params", setting="limits.max_params", metavar="SIZE", type=size,
                help="largest block of FastCGI params (the CGI variables) of a request (default: 1M)")
    _option(limits, "--read-timeout", setting="limits.read_timeout", metavar="SECONDS", type=float,
            help=f"longest wait for the {peer}'s next bytes inside a request (default: {defaults.read_timeout:g})")
    if not fastcgi:
        _option(limits, "--min-rate", setting="limits.min_rate", metavar="BYTES", type=int,
                help="beyond --read-timeout, a client must send a body or take an answer at this many bytes a "
                     f"second while waited for, or its connection is closed; 0: no minimum (default: "
                     f"{defaults.min_rate})")

    server = ServerConfig()
    process = command.add_argument_group("process ([server] in --config)")
    _option(process, "--user", setting="server.user", metavar="USER",
            help="run as USER once the socket is bound (workers, handler modules, files they write); needed when "
                 "started as root")
    _option(process, "--group", setting="server.group", metavar="GROUP", help="and as GROUP (default: USER's group)")
    _option(process, "--allow-root", setting="server.allow_root", action="store_const", const=True,
            help="run as root anyway (not advised: a handler's bug then runs as root)")
    _option(process, "--pidfile", setting="server.pidfile", metavar="FILE",
            help="write the supervisor's pid to FILE (removed at exit)")
    pool = command.add_argument_group("worker pool ([server] in --config)")
    _option(pool, "--prefork", setting="server.prefork", type=int, metavar="N",
            help=f"workers forked at start; negative sets prefork and maxfork together; 0 forks one process per "
                 f"connection (default: {server.prefork})")
    _option(pool, "--maxfork", setting="server.maxfork", type=int, metavar="N",
            help="most workers (forking: processes), reached when all are busy; past it, connections wait "
                 "in the listen backlog (default: 4 x prefork, 16 forking)")
    _option(pool, "--nofork", setting="server.nofork", action="store_const", const=True,
            help="serve from this one process, e.g. to step through a handler in a debugger")
    _option(pool, "--accept-wait", setting="server.accept_wait", type=float, metavar="SECONDS",
            help=f"how long an idle worker waits in accept between runs of its idle hook (Net::Waiter's TIMEOUT; "
                 f"not a limit on requests; default: {server.accept_wait:g})")
    pool.add_argument("--timeout", action=_Renamed,
                      message="renamed --accept-wait (the wait in accept between a worker's idle hooks); "
                              "a limit on how long a request may run is --request-timeout")
    _option(pool, "--px-idle", setting="server.px_idle", type=float, metavar="SECONDS",
            help=f"idle time after which a worker above prefork exits (default: {server.px_idle:g})")
    _option(pool, "--max-requests", setting="server.max_requests", type=int, metavar="N",
            help="replace a worker after N requests (default: 0, never)")
    _option(pool, "--max-requests-jitter", setting="server.max_requests_jitter", type=int, metavar="N",
            help="and after up to N more, drawn for each worker, so the workers are not all replaced at once "
                 "(default: a tenth of --max-requests)")
    _option(pool, "--max-worker-rss", setting="server.max_worker_rss", type=size, metavar="SIZE",
            help="replace a worker whose resident memory passes SIZE, once its request is done (uWSGI's "
                 "reload-on-rss; e.g. 512M; default: 0, never)")
    _option(pool, "--worker-cpus", setting="server.worker_cpus", metavar="LIST",
            help="run the workers on these CPUs only, as taskset -c takes them (e.g. 1 or 2-3); keeping them off "
                 "the web server's CPUs spares it wake-ups across CPUs (default: any CPU)")
    _option(pool, "--graceful-timeout", setting="server.graceful_timeout", type=float, metavar="SECONDS",
            help=f"on SIGTERM/SIGINT, time for requests in flight (default: {server.graceful_timeout:g})")
    _option(pool, "--no-prop-sigusr", setting="server.prop_sigusr", action="store_const", const=False,
            help="do not pass SIGUSR1/SIGUSR2 on to the workers")
    _option(pool, "--status-path", setting="server.status_path", metavar="PATH",
            help="URL path of the status page (JSON; OpenMetrics with ?openmetrics), e.g. /fcgi-status")
    _option(pool, "--status-allow", setting="server.status_allow", metavar="ADDRESSES",
            help="clients the status page answers, comma-separated addresses or networks (its requests in flight "
                 f"show their query strings); others get the site's 404 (default: {server.status_allow})")
    _option(pool, "--ping-path", setting="server.ping_path", metavar="PATH", help="URL path that answers pong, e.g. /fcgi-ping")
    times = command.add_argument_group("time limits ([server] in --config)")
    _option(times, "--request-timeout", setting="server.request_timeout", type=float, metavar="SECONDS",
            help="stop a request running longer (504) and replace its worker (default: 0, never)")
    _option(times, "--slowlog-timeout", setting="server.slowlog_timeout", type=float, metavar="SECONDS",
            help="write the Python stack of a request running longer to the slow log; it goes on running "
                 "(default: 0, never)")
    _option(times, "--idle-timeout", setting="server.idle_timeout", metavar="SECONDS", type=float,
            help=f"longest wait for a request on a new or kept connection (default: {server.idle_timeout:g})")
    logs_group = command.add_argument_group("logs ([server] in --config; SIGUSR1 reopens every log file)")
    _option(logs_group, "--log-file", setting="server.log_file", metavar="FILE",
            help="append the server's log to FILE instead of stderr")
    _option(logs_group, "--access-log", setting="server.access_log", metavar="FILE", nargs="?", const="-",
            help="a line per request: to FILE, or into the server's log without FILE (default: none; --debug "
                 "logs them into the server's log)")
    _option(logs_group, "--access-log-format", setting="server.access_log_format", metavar="FORMAT",
            help="Apache LogFormat directives (default: combined with %%D: "
                 + server.access_log_format.replace("%", "%%") + ")")
    _option(logs_group, "--slowlog", setting="server.slowlog_file", metavar="FILE",
            help="where slow requests' stacks go (default: the server's log)")
    _option(logs_group, "--debug", setting="server.debug", action="store_const", const=True,
            help="log more detail and show tracebacks on 500 pages (never in production)")
    add_session_options(command)
    app = command.add_argument_group("application ([server] in --config)")
    _option(app, "--app", setting="server.app", metavar="MODULE:CALLABLE",
            help="serve this WSGI application instead of the site's handlers and templates (MODULE may also be a "
                 "path to a .py file)")


# ---- settings: defaults, then the file, then the flags -----------------------------------------------

@dataclass(frozen=True)
class Settings:
    server: ServerConfig
    listen: ListenConfig
    limits: Limits
    tls: TLSConfig | None
    sessions: SessionConfig


def _flags(args, table: str) -> dict:
    prefix = table + "."
    return {name[len(prefix):]: value for name, value in vars(args).items() if name.startswith(prefix)}


def settings_from(args) -> Settings:
    """Every setting of a serving command: checked, or ConfigError/UsageError saying which and why."""
    tables = load_config_file(args.config, args.command) if args.config else {}
    server = merged("server", tables, _flags(args, "server")).resolved()
    listen = merged("listen", tables, _flags(args, "listen"))
    listen.check()
    try:
        limits = merged("limits", tables, _flags(args, "limits"))
        limits.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not os.path.isdir(limits.upload_dir) or not os.access(limits.upload_dir, os.W_OK | os.X_OK):
        if not (server.user and os.path.isdir(limits.upload_dir)):  # (it is made the user's at start)
            raise UsageError(f"upload directory {limits.upload_dir} does not exist or is not writable")
    tls = None
    if args.command == "serve-http":
        tls_settings = {**tables.get("tls", {}), **{k: v for k, v in _flags(args, "tls").items() if v is not None}}
        if tls_settings:
            if "cert_file" not in tls_settings:
                raise UsageError("TLS settings need a certificate (--tls-cert, or cert_file in [tls])")
            tls = TLSConfig(**tls_settings)
            try:
                tls.check()
            except TLSError as exc:
                raise UsageError(str(exc)) from None
    return Settings(server, listen, limits, tls, session_config(args, tables))


def session_config(args, tables: dict) -> SessionConfig:
    config = merged("sessions", tables, _flags(args, "sessions"))
    try:
        config.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return config


def check_identity(server: ServerConfig) -> None:
    """Workers never run as root by accident: root must name a user, or say --allow-root."""
    if os.geteuid() == 0 and not server.user and not server.allow_root:
        raise UsageError("started as root without --user: the workers and the handler modules would run as root. "
                         "Give --user (for example --user www-data, or user = \"www-data\" in [server]), or "
                         "--allow-root to run them as root anyway")
    if server.user and os.geteuid() != 0:
        if pwd.getpwnam(server.user).pw_uid != os.geteuid():
            raise UsageError(f"--user {server.user} needs the server to be started as root")


def session_manager(site: SiteLayout, config: SessionConfig) -> SessionManager:
    try:
        manager = SessionManager(store_for(config, str(site.sqlite_dbs)), config)
        manager.store.preload()
        return manager
    except ValueError as exc:  # an unknown kind of URL, or its driver missing
        raise UsageError(str(exc)) from None


def app_loader(site: SiteLayout, settings: Settings):
    """A function that builds (application, hooks) afresh: at start (once the server runs as its
    user), and again on SIGHUP."""
    sessions = None if settings.server.app else session_manager(site, settings.sessions)
    probed = []

    def load():
        if settings.server.app:
            return load_wsgi_app(settings.server.app), Hooks()
        if not probed:  # a wrong URL or a store that is down shows in the log at start
            sessions.probe()
            probed.append(True)
        return site_application(site, sessions=sessions, debug=settings.server.debug, limits=settings.limits)
    return load


def owned_paths(site: SiteLayout, settings: Settings) -> list[str]:
    """What the server's user must own: the site's state, and an upload folder of its own."""
    paths = [str(site.sqlite_dbs)]
    upload_dir = settings.limits.upload_dir
    if not os.stat(upload_dir).st_mode & 0o1000:  # not a shared, sticky /tmp
        paths.append(upload_dir)
    return paths


def serve(server: AppServer) -> int:
    code = server.run()
    if code == EXIT_OK and not server.is_child():
        pool = server.scoreboard.read()
        log.info("stopped after %d request%s on %d connection%s", pool.requests, "" if pool.requests == 1 else "s",
                 pool.accepted, "" if pool.accepted == 1 else "s")
    return code


def cmd_run(args) -> int:
    settings = settings_from(args)
    check_identity(settings.server)
    site = SiteLayout.open(args.site)
    listen = settings.listen
    if listen.tcp:
        address = ListenAddress.parse_tcp(listen.tcp)
        if not listen.allowed_clients and address.reachable_from_elsewhere:
            log.warning("listening on %s without --allowed-clients: FastCGI has no authentication, so anyone who "
                        "reaches this port runs requests as the site", listen.tcp)
    else:
        address = ListenAddress(path=str(Path(listen.socket).resolve() if listen.socket else site.socket_path))
        if listen.socket_mode & 0o002:
            log.warning("socket mode %04o lets every local user connect", listen.socket_mode)
    server = FastCGIServer(app_loader(site, settings), address, settings.server, limits=settings.limits,
                           debug=settings.server.debug, socket_mode=listen.socket_mode,
                           socket_group=listen.socket_group or group_name(settings.server.user, settings.server.group),
                           owned_paths=owned_paths(site, settings), allowed_clients=AllowList(listen.allowed_clients))
    log.info("fcgi-backend %s serving %s over FastCGI", __version__, site.root)
    return serve(server)


def cmd_serve_http(args) -> int:
    settings = settings_from(args)
    check_identity(settings.server)
    site = SiteLayout.open(args.site)
    address = ListenAddress.parse_tcp(settings.listen.tcp or DEFAULT_HTTP)
    try:
        server = HTTPServer(app_loader(site, settings), address, settings.server, site=site, limits=settings.limits,
                            debug=settings.server.debug, tls=settings.tls, owned_paths=owned_paths(site, settings),
                            trusted_proxies=AllowList(settings.listen.forwarded_allow_ips, "forwarded_allow_ips"))
    except TLSError as exc:
        raise UsageError(str(exc)) from None
    scheme = "https" if settings.tls else "http"
    log.info("fcgi-backend %s serving %s at %s://%s:%d/", __version__, site.root, scheme, address.host, address.port)
    return serve(server)


def cmd_sessions(args) -> int:
    site = SiteLayout.open(args.site)
    tables = load_config_file(args.config, "sessions") if args.config else {}
    manager = session_manager(site, session_config(args, tables))
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


def cmd_check(args) -> int:
    site = SiteLayout.open(args.site, create=False)
    with tempfile.TemporaryDirectory(prefix="fcgi-check-") as scratch:
        if not site.sqlite_dbs.is_dir():  # handler modules may open databases there: an empty one, thrown away
            site = SiteLayout(site.root, state_dir=Path(scratch))
        registry = Registry(site)
        problems = []
        try:
            load_handlers(site.handlers, registry)
        except HandlerLoadError as exc:
            problems.append(str(exc))
        problems += check_site(site, registry)
    print(f"site:     {site.root}")
    print(f"socket:   {site.socket_path}")
    handlers = [name + (" (csrf)" if registry.handler_needs_csrf(name) else "") for name in registry.handler_names]
    print(f"handlers: {', '.join(handlers) or '(none)'}")
    for route in registry.routes:
        print(f"route:    {route.pattern} -> {getattr(route.handler, '__name__', route.handler)}"
              f"{' with ' + route.template if route.template else ''} [{', '.join(sorted(route.methods))}]"
              f"{' (csrf)' if route.csrf else ''}")
    for problem in problems:
        print(f"problem:  {problem}")
    if problems:
        print(f"{len(problems)} problem{'s' * (len(problems) != 1)} found")
        return EXIT_STARTUP_FAILED
    print("no problems found")
    return EXIT_OK


def cmd_apache_conf(args) -> int:
    site = SiteLayout(Path(args.site).resolve())
    if not site.webroot.is_dir():  # (a vhost may be written before its site: a warning, not a refusal)
        log.warning("%s has no webroot/ (yet): the vhost printed serves from %s", site.root, site.webroot)
    try:
        print(vhost_for(site.root, port=args.port, connector=args.connector,
                        socket=Path(args.socket).resolve() if args.socket else None, server_name=args.server_name,
                        listen=args.listen, balancer=args.balancer, standby=args.standby, ping_path=args.ping_path),
              end="")
    except ApacheConfError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


COMMANDS = {"run": cmd_run, "serve-http": cmd_serve_http, "sessions": cmd_sessions, "check": cmd_check,
            "apache-conf": cmd_apache_conf}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_file, debug = "", bool(getattr(args, "debug", False) or getattr(args, "server.debug", False))
    if args.command in ("run", "serve-http"):
        try:
            server = settings_from(args).server
            log_file, debug = server.log_file, server.debug
        except (ConfigError, UsageError) as exc:
            logs.configure(debug=debug)
            log.error("%s", exc)
            return EXIT_USAGE
    try:
        logs.configure(debug=debug, log_file=log_file)
    except OSError as exc:
        logs.configure(debug=debug)
        log.error("log file %s cannot be opened: %s", log_file, exc.strerror)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except (SiteError, UsageError, ConfigError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except HandlerLoadError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
