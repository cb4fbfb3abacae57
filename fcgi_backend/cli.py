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
from .fastcgi_server import FastCGIServer
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


def parse_tcp(text: str) -> ListenAddress:
    try:
        return ListenAddress.parse_tcp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcgi-backend",
        description="FastCGI application server for Python handlers and mustache views behind Apache 2.4.",
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
    limits = run.add_argument_group("request limits (a request over one gets 413)")
    defaults = Limits()  # noqa: F841 (rebinds the name for the limits' help texts)
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
    limits.add_argument("--max-params", metavar="SIZE", type=parse_size, default=defaults.max_params,
                        help="largest block of FastCGI params (the CGI variables) of a request (default: 1M)")
    limits.add_argument("--read-timeout", metavar="SECONDS", type=float, default=defaults.read_timeout,
                        help=f"longest wait for the web server's next bytes inside a request "
                             f"(default: {defaults.read_timeout:g})")
    limits.add_argument("--idle-timeout", metavar="SECONDS", type=float,
                        help="longest wait for a request on a new or kept connection (default: 15)")
    pool = run.add_argument_group("worker pool (also settable in --config; the flags win)")
    defaults = ServerConfig()
    run.add_argument("--config", metavar="FILE", help="TOML file with a [server] table of the settings below")
    pool.add_argument("--prefork", type=int, help=f"workers forked at start; negative sets prefork and "
                                                  f"maxfork together (default: {defaults.prefork})")
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
    pool.add_argument("--no-prop-sigusr", dest="prop_sigusr", action="store_const", const=False,
                      help="do not pass SIGUSR1/SIGUSR2 on to the workers")
    pool.add_argument("--status-path", metavar="PATH", help="URL path of the status page (JSON; OpenMetrics "
                                                             "with ?openmetrics), e.g. /fcgi-status")
    pool.add_argument("--ping-path", metavar="PATH", help="URL path that answers pong, e.g. /fcgi-ping")
    pool.add_argument("--log-file", metavar="FILE", help="append logs to FILE instead of stderr (SIGUSR1 reopens it)")
    run.add_argument("--app", metavar="MODULE:CALLABLE",
                     help="serve this WSGI application instead of the site's handlers and templates "
                          "(MODULE may also be a path to a .py file)")
    run.add_argument("--access-log", action="store_true",
                     help="log a line per request (method, path, status, size, time); --debug does too")
    run.add_argument("--debug", action="store_true",
                     help="log more detail and show tracebacks on 500 pages (never in production)")

    check = commands.add_parser("check", help="load SITE's handler modules and list what they register")
    check.add_argument("site", metavar="SITE")
    check.add_argument("--debug", action="store_true", help="log more detail")
    return parser


def _load_site(site_dir: str) -> tuple[SiteLayout, Registry]:
    site = SiteLayout.open(site_dir)
    registry = Registry(site)
    load_handlers(site.handlers, registry)
    return site, registry


def cmd_check(args) -> int:
    site, registry = _load_site(args.site)
    print(f"site:     {site.root}")
    print(f"socket:   {site.socket_path}")
    print(f"handlers: {', '.join(registry.handler_names) or '(none)'}")
    for route in registry.routes:
        print(f"route:    {route.pattern} -> {getattr(route.handler, '__name__', route.handler)}"
              f"{' with ' + route.template if route.template else ''} [{', '.join(sorted(route.methods))}]")
    return EXIT_OK


def limits_from_args(args) -> Limits:
    """The request limits the options ask for; UsageError if they cannot work."""
    limits = Limits(max_body=args.max_body, max_memory=args.max_memory, max_file=args.max_file,
                    max_parts=args.max_parts, max_part_header=args.max_part_header, max_params=args.max_params,
                    upload_dir=args.upload_dir, read_timeout=args.read_timeout)
    try:
        limits.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not os.path.isdir(limits.upload_dir) or not os.access(limits.upload_dir, os.W_OK | os.X_OK):
        raise UsageError(f"upload directory {limits.upload_dir} does not exist or is not writable")
    return limits


def server_config(args) -> ServerConfig:
    """The pool settings: defaults, then --config's file, then the flags given."""
    file_settings = load_config_file(args.config) if args.config else {}
    names = ("prefork", "maxfork", "nofork", "timeout", "px_idle", "max_requests", "graceful_timeout",
             "request_timeout", "idle_timeout", "prop_sigusr", "status_path", "ping_path", "log_file")
    return build_config(file_settings, {name: getattr(args, name) for name in names})


def app_loader(site: SiteLayout, args, limits: Limits):
    """A function that builds (application, hooks) afresh: at start, and again on SIGHUP."""
    def load():
        if args.app:
            return load_wsgi_app(args.app), Hooks()
        registry = Registry(site)
        load_handlers(site.handlers, registry)
        return (Application(registry, ViewCache(site.webroot), debug=args.debug, limits=limits,
                            access_log=args.access_log), registry.hooks)
    return load


def cmd_run(args) -> int:
    limits = limits_from_args(args)
    site = SiteLayout.open(args.site)
    config = server_config(args)
    address = args.tcp or ListenAddress(path=str(Path(args.socket).resolve() if args.socket else site.socket_path))
    if address.path and args.socket_mode & 0o002:
        log.warning("socket mode %04o lets every local user connect", args.socket_mode)
    server = FastCGIServer(app_loader(site, args, limits), address, config, limits=limits, debug=args.debug,
                    socket_mode=args.socket_mode, socket_group=args.socket_group)
    log.info("fcgi-backend %s serving %s", __version__, site.root)
    code = server.run()
    if code == EXIT_OK and not server.is_child():
        pool = server.scoreboard.read()
        log.info("stopped after %d requests on %d connections", pool.requests, pool.accepted)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_file = ""
    if args.command == "run":
        try:
            log_file = server_config(args).log_file
        except ConfigError as exc:
            logs.configure(debug=args.debug)
            log.error("%s", exc)
            return EXIT_USAGE
    logs.configure(debug=args.debug, log_file=log_file)
    try:
        return {"run": cmd_run, "check": cmd_check}[args.command](args)
    except (SiteError, UsageError, ConfigError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except HandlerLoadError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
