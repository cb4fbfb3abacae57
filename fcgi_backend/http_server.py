"""The HTTP flavour: an application server that speaks HTTP/1.1 itself (optionally over TLS), for
development and small sites without Apache. Same site layout, handler modules, application,
process model, status page and hooks as the FastCGI flavour; it also serves the webroot's static
files, as the Apache vhost does in front of the FastCGI flavour (``static.py``)."""

from __future__ import annotations

import os
import socket
import ssl

from . import static
from .allowlist import LOOPBACK, AllowList
from .appserver import AppServer
from .config import ServerConfig
from .http_protocol import HTTPConnection
from .listener import ListenAddress
from .site import SiteLayout
from .tls import TLSConfig, peer_environ

RECEIVE_BUFFER_SIZE = 256 * 1024


class HTTPServer(AppServer):
    """Serves a WSGI application over HTTP/1.1, and ``site``'s webroot as static files.

    ``HTTPServer(load_app, ListenAddress(host="127.0.0.1", port=8000), ServerConfig(), site=site,
    tls=TLSConfig("cert.pem", "key.pem")).run()``; see :class:`~fcgi_backend.appserver.AppServer`.
    """

    def __init__(self, load_app, address: ListenAddress, config: ServerConfig, *, site: SiteLayout | None = None,
                 tls: TLSConfig | None = None, trusted_proxies: AllowList | None = None, **options) -> None:
        super().__init__(load_app, address, config, tls=tls, **options)
        # reverse proxies believed about the client (forwarded.py)
        self.trusted_proxies = trusted_proxies if trusted_proxies is not None else AllowList(LOOPBACK)
        self.webroot = os.path.realpath(site.webroot) if site is not None else None
        self.server_name = address.host if address.host not in (None, "", "0.0.0.0", "::") else "localhost"
        self.server_port = address.port or (443 if tls else 80)
        self.receive_buffer = memoryview(bytearray(RECEIVE_BUFFER_SIZE))  # one per worker, lent to its connections
        self.wsgi_app = None  # this worker's application (its generation's), made at its first connection
        self.timed_out = False

    def make_ssl_context(self) -> ssl.SSLContext:
        ctx = super().make_ssl_context()
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def lookup(self, path: str) -> static.Lookup:
        """What a request path names: a static file of the webroot, or the application."""
        return static.locate(self.webroot, path) if self.webroot is not None else static.APP

    def on_child_start(self) -> None:
        self.wsgi_app = None  # made afresh from this generation's application
        super().on_child_start()

    def on_process(self, client: socket.socket) -> None:
        if self.wsgi_app is None:
            self.wsgi_app = self.application()
        try:
            peer = client.getpeername()[:2] if client.family != socket.AF_UNIX else ("", 0)
        except OSError:
            return  # gone before it was served
        tls_environ = peer_environ(client, self._ssl_context.verify_mode) if isinstance(client, ssl.SSLSocket) else None
        HTTPConnection(client, self, peer, tls_environ).serve()
        if self.timed_out:
            self.retire()  # a request was interrupted: start afresh in a new worker
