"""The FastCGI-to-WSGI bridge: flup's BaseFCGIServer with this server's connection and request types."""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote_to_bytes

from flup.server.fcgi_base import (
    FCGI_REQUEST_COMPLETE,
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    FCGI_RESPONDER,
    FCGI_STDOUT,
    BaseFCGIServer,
)

from . import response_head
from .connection import RECEIVE_BUFFER_SIZE, FastCGIConnection, FastCGIRequest, HeadOutputStream, cut_off
from .digits import decimal
from .errors import RequestInputError, RequestTimeout, error_page, reason_phrase
from .file_wrapper import FileWrapper
from .limits import Limits
from .records import StreamError, WholeRequestScanner

log = logging.getLogger("fcgi_backend.gateway")

WHOLE_REQUEST_MAX_BODY = 64 * 1024  # a larger body goes record by record, or to the upload parser
# What a WSGI environ must hold, and what flup puts there when the web server did not send it.
_WSGI_REQUIRED = (("REQUEST_METHOD", "GET"), ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80"),
                  ("SERVER_PROTOCOL", "HTTP/1.0"))

APPLICATION_FAILED = (b"Status: 500 Internal Server Error\r\n"
               b"Content-Type: text/html; charset=utf-8\r\n\r\n"
               b"<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head>"
               b"<body><h1>Internal Server Error</h1>"
               b"<p>The application failed while handling this request.</p></body></html>\n")


class FastCGIGateway(BaseFCGIServer):
    """Runs a WSGI application for each FastCGI request that arrives on a connection.

    ``max_conns`` is what FCGI_GET_VALUES reports: how many connections the server as a whole
    accepts at once.
    """

    request_class = FastCGIRequest
    # Record content size for STDOUT: the largest multiple of 8 that fits, so no padding is needed.
    maxwrite = 65528 + 8

    def __init__(self, application, *, debug: bool = False, max_conns: int = 1,
                 multiprocess: bool = False, limits: Limits | None = None, idle_timeout: float = 15.0) -> None:
        # The server always ends the input stream itself (the empty STDIN record): PEP 3333's
        # wsgi.input_terminated lets applications read to its end when there is no Content-Length.
        extra_environ = {"wsgi.input_terminated": True, "wsgi.file_wrapper": FileWrapper}
        super().__init__(self._call_application, environ=extra_environ,
                         multithreaded=False, multiprocess=multiprocess, bindAddress="fcgi_backend",
                         debug=debug, roles=(FCGI_RESPONDER,))
        self.wsgi_app = application
        self.limits = limits or Limits()
        self.idle_timeout = idle_timeout  # longest wait for a request's first record
        self.capability = {FCGI_MAX_CONNS: max_conns, FCGI_MAX_REQS: max_conns, FCGI_MPXS_CONNS: 0}
        self._request: FastCGIRequest | None = None  # the one being served
        self.on_request_start: Callable[[str], None] | None = None  # told "METHOD URI" of each request
        self.on_request_end: Callable[[], None] | None = None  # also told of each request that ends
        self.access_log = None  # an AccessLog: a line per request
        self.ping_path = ""  # answered in HTTP too, to mod_proxy_hcheck (health.py)
        self.timed_out = False  # a request ran past request_timeout: this worker must be replaced
        # Requests found whole in what one read brought (connection._run_whole_request): params up
        # to their limit, a body up to what the input would hold in memory anyway.
        self.whole_request_scanner = WholeRequestScanner(
            self.limits.max_params, min(WHOLE_REQUEST_MAX_BODY, self.limits.max_body, self.limits.max_memory),
            RECEIVE_BUFFER_SIZE)
        self.receive_buffer = self.whole_request_scanner.receive_buffer  # lent to each connection in turn
        # Set in the environment, every request goes record by record (to rule the scanner out).
        self.scan_whole_requests = not os.environ.get("FCGI_BACKEND_RECORD_BY_RECORD")

    def _call_application(self, environ: dict, start_response):
        """The WSGI application; a list or tuple it returns is sent with END_REQUEST, not block by
        block: every block already exists, so nothing waits (PEP 3333), and a small page costs one
        system call instead of two. Its close() runs once END_REQUEST is out (detach_close)."""
        result, self._request.after_answer = detach_close(self.wsgi_app(environ, self._checked(start_response)))
        if isinstance(result, (list, tuple)):
            self._request.stdout.hold = True
        return result

    def request_ended(self) -> None:
        """Count a request whose answer is complete; the connection calls this before the answer's
        last bytes leave, so a client that has its answer finds it counted (status page)."""
        if self.on_request_end is not None:
            self.on_request_end()

    def connection(self, sock, addr, linger=None, received: bytes = b"") -> FastCGIConnection:
        """A connection object for one accepted socket; call its ``serve_request()``.
        ``linger(sock)`` takes a socket shut down on our side and closes it once the peer hangs up;
        ``received``: its first bytes, if they were read already."""
        return FastCGIConnection(sock, addr, self, linger=linger, received=received)

    def handler(self, req: FastCGIRequest):
        """Run the application; input that breaks off mid-request ends the request quietly."""
        self._request = req
        if self.on_request_start is not None:
            self.on_request_start(req.describe())
        if req.params.get("REQUEST_METHOD") == "HEAD":  # headers only, whatever the application writes
            req.stdout = HeadOutputStream(req._conn, req, FCGI_STDOUT)
        req.stdout.counting = self.access_log is not None  # (the status and size cost a look at each write)
        started = time.monotonic()
        started_wall = time.time() if self.access_log is not None else 0.0
        try:
            length = decimal(req.params.get("CONTENT_LENGTH", ""))
            if length is not None and length > self.limits.max_body:
                raise StreamError(413, self.limits.body_too_large(length))
            return super().handler(req)
        except RequestTimeout:
            req._conn.close_after_request = True
            self.timed_out = True  # (the worker logged it)
            if not req.stdout.dataWritten:
                req.stdout.write_own(error_answer(504, TIMED_OUT))
            else:
                req.stdout.cut_off = True
            return FCGI_REQUEST_COMPLETE, 0
        except RequestInputError as exc:
            status = log_input_error(req.params, exc)
            req._conn.close_after_request = True  # what is left of the input cannot be trusted
            if status and not req.stdout.dataWritten:
                req.stdin.discard = True  # answered: input already here is dropped, not checked again
                req.stdout.write_own(error_answer(status, str(exc)))
            else:
                req.aborted = True  # nobody is left to answer: drop any output still buffered
            return FCGI_REQUEST_COMPLETE, 0
        except BaseException:  # flup's Request.run logs it and answers 500 if nothing was written yet
            if req.stdout.dataWritten and not req.aborted and req.params.get("REQUEST_METHOD") != "HEAD":
                req.stdout.cut_off = True
                cut_off(req.describe(), "the application failed after its answer began", exc_info=True)
            raise
        finally:
            self._request = None
            if self.access_log is not None:
                self.access_log.write(req.params, req.stdout.status or 500, req.stdout.body_bytes, started_wall,
                                      time.monotonic() - started)

    def _sanitizeEnv(self, environ: dict) -> None:
        """SCRIPT_NAME and PATH_INFO as :func:`wsgi_paths` finds them, no second copy of the body's
        headers, then flup's defaults, as its ``_sanitizeEnv`` sets them (written out here with one
        look at REQUEST_URI: every request pays for it; tests/test_wsgi_bridge.py compares the two)."""
        script_name, path_info = environ["SCRIPT_NAME"], _ = wsgi_paths(environ)
        uri = environ.get("REQUEST_URI")
        if uri is None:
            query = ""
        else:
            uri_path, _, query = uri.partition("?")
            if not path_info:  # flup takes an empty PATH_INFO from REQUEST_URI
                if not uri_path.startswith(script_name):
                    environ["wsgi.errors"].write("WARNING: SCRIPT_NAME does not match REQUEST_URI")
                path_info = uri_path[len(script_name):]
        environ["PATH_INFO"] = path_info
        # nginx and lighttpd also pass the body's headers as HTTP_ params; CGI has them once (RFC 3875
        # 4.1.18), and WSGI's checks (wsgiref.validate) refuse the copies.
        environ.pop("HTTP_CONTENT_LENGTH", None)
        environ.pop("HTTP_CONTENT_TYPE", None)
        if not environ.get("QUERY_STRING"):
            environ["QUERY_STRING"] = query
        for name, default in _WSGI_REQUIRED:
            if name not in environ:
                environ["wsgi.errors"].write(f"{type(self).__name__}: missing FastCGI param {name} required by WSGI!\n")
                environ[name] = default

    def error(self, req: FastCGIRequest) -> None:
        """The WSGI application raised: log it and answer 500 (flup calls this inside ``except``)."""
        log_application_error()
        req.stdout.write_own(APPLICATION_FAILED)

    def _checked(self, start_response):
        """flup's start_response, refusing a status or header that would break its line
        (response_head), dropping hop-by-hop headers, and holding the body to the application's
        Content-Length."""
        def checked_start_response(status, response_headers, exc_info=None):
            code = response_head.final_status(status)
            response_head.check(status, response_headers)
            request = self._request
            response_head.warn_of_lines_apache_refuses(response_headers, request.describe)
            response_headers, declared = response_head.passed_on(response_headers, request.describe, code)
            if declared is not None and not response_head.body_allowed(code, request.params.get("REQUEST_METHOD")):
                declared = None
            write = start_response(status, response_headers, exc_info)
            request.stdout.declared = declared
            return write
        return checked_start_response


TIMED_OUT = "The application took too long to answer."


def detach_close(result: Iterable[bytes]) -> tuple[Iterable[bytes], Callable[[], None] | None]:
    """A WSGI result without its close(), and a call of that close() (None if it has none) for the
    request to make once END_REQUEST is out, not before as flup does: the web server passes the
    answer on only after END_REQUEST, and a close() may be slow (removing a 1 GiB upload took
    106 ms). What the close() raises goes to the log: the answer is already complete."""
    close = getattr(result, "close", None)
    if close is None:
        return result, None

    def close_after_answer() -> None:
        try:
            close()
        except Exception:
            log_application_error()

    if isinstance(result, (list, tuple)):
        return list(result), close_after_answer  # still a list: its length and "send it whole" stay
    return _Chunks(result), close_after_answer


class _Chunks:
    """An iterable result with its close() taken away (detach_close)."""

    __slots__ = ("_result",)

    def __init__(self, result: Iterable[bytes]) -> None:
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)


def error_answer(status: int, detail: str) -> bytes:
    """A CGI answer (header block and page) for an error the server itself answers."""
    page = error_page(status, detail).encode()
    return (f"Status: {status} {reason_phrase(status)}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(page)}\r\n\r\n").encode() + page


def log_application_error() -> None:
    """The application raised (called inside ``except``): its traceback goes to the log."""
    log.error("unhandled exception in the application", exc_info=True)


def log_input_error(params: dict, exc: RequestInputError) -> int:
    """Log input that broke off or broke the rules; the status to answer it with (0: none)."""
    status = getattr(exc, "status", 0)
    log.warning("%s %s: %s: %s", params.get("REQUEST_METHOD", "-"), params.get("REQUEST_URI", "-"),
                "bad request input" if status else "request input ended early",
                exc or "the web server closed the connection")
    return status


def wsgi_paths(params: dict) -> tuple[str, str]:
    """(SCRIPT_NAME, PATH_INFO) for the application, from what the web server sent.

    A web server that sends PATH_INFO (nginx with ``fastcgi_split_path_info``, lighttpd, Apache's
    mod_fcgid) has split the path itself, after its rewrites: that split is used as sent. Apache's
    mod_proxy_fcgi does not split: SCRIPT_NAME is the whole path, and SCRIPT_FILENAME is
    ``proxy:fcgi://HOST/PATH``, where PATH is what ProxyPass mapped to the backend
    (``ProxyPass /myapp/ fcgi://host/`` turns ``/myapp/x`` into ``/x``: SCRIPT_NAME ``/myapp``,
    PATH_INFO ``/x``) or, for a SetHandler on files, the file's path on disk (the backend then
    serves the site from its root: PATH_INFO is the whole path). Without either, the backend is at
    the root and the path comes from SCRIPT_NAME, else from REQUEST_URI.
    """
    script_name = params.get("SCRIPT_NAME", "")
    path_info = params.get("PATH_INFO")
    script_filename = params.get("SCRIPT_FILENAME", "")
    if script_filename.startswith("proxy:"):
        full = script_name + (path_info or "")
        mapped = _proxy_url_path(script_filename)
        if mapped and full.endswith(mapped):
            return full[:len(full) - len(mapped)], mapped
        return "", full
    if path_info is not None:
        return script_name, path_info
    if script_name:
        return "", script_name
    path = params.get("REQUEST_URI", "").partition("?")[0]
    return "", unquote_to_bytes(path).decode("latin-1")


@lru_cache(maxsize=1024)  # the same few URLs come again and again; any URL can arrive, so bounded
def _proxy_url_path(script_filename: str) -> str:
    """The path of mod_proxy_fcgi's ``proxy:fcgi://host:port/path?query``, percent-decoded."""
    rest = script_filename.partition("://")[2]
    path = rest[rest.find("/"):] if "/" in rest else ""
    return unquote_to_bytes(path.partition("?")[0]).decode("latin-1")
