"""The FastCGI flavour: an application server whose connections speak FastCGI (behind Apache,
nginx, lighttpd), one request at a time, kept open between requests when the web server asks."""

from __future__ import annotations

import logging
import socket

from .allowlist import AllowList
from .appserver import AppServer
from .config import ConfigError
from .gateway import FastCGIGateway


log = logging.getLogger("fcgi_backend.fastcgi")


class FastCGIServer(AppServer):
    """Serves a WSGI application over FastCGI. See :class:`~fcgi_backend.appserver.AppServer`."""

    def __init__(self, *args, allowed_clients: AllowList | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allowed_clients = allowed_clients or AllowList("")
        if self.tls:
            raise ConfigError("TLS is for the HTTP flavour (serve-http): web servers reach a FastCGI backend "
                              "over a unix socket or a private network, without TLS")
        self._gateway: FastCGIGateway | None = None

    def gateway(self) -> FastCGIGateway:
        """This process's FastCGI-to-WSGI bridge, made once per worker (after fork: the
        application is the one this worker's generation loaded)."""
        if self._gateway is None:
            nofork = self.config.nofork
            self._gateway = FastCGIGateway(self.application(), debug=self.debug, limits=self.limits,
                                           multiprocess=not nofork, max_conns=1 if nofork else self.config.maxfork,
                                           idle_timeout=self.config.idle_timeout)
            self._gateway.on_request_start = self.request_started
            self._gateway.on_request_end = self.request_ended
            self._gateway.request_timeout = self.config.request_timeout
            self._gateway.access_log = self.access_log
            self._gateway.ping_path = self.config.ping_path
        return self._gateway

    def on_child_start(self) -> None:
        self._gateway = None  # made afresh from this generation's application
        super().on_child_start()

    def on_process(self, client: socket.socket) -> None:
        if self.allowed_clients and client.family != socket.AF_UNIX:
            try:
                peer = client.getpeername()[0]
            except OSError:
                return  # gone already
            if not self.allowed_clients.allows(peer):
                log.warning("refused a connection from %s: not in allowed_clients", peer)
                return  # (the worker loop closes it)
        gateway = self.gateway()
        conn = gateway.connection(client, None, linger=self.linger)
        while conn.serve_request():
            if gateway.timed_out:
                conn.close()
                break
            if not conn.has_buffered_record() and not self.wait_for_next_request(client):
                conn.close()  # (a record already read needs no wait)
                break
        if gateway.timed_out:
            self.retire()  # a request was interrupted: start afresh in a new worker


Server = FastCGIServer  # the name of earlier releases
