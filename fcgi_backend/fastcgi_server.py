"""The FastCGI flavour: an application server whose connections speak FastCGI (behind Apache,
nginx, lighttpd), one request at a time, kept open between requests when the web server asks."""

from __future__ import annotations

import _socket
import logging
import socket

from .allowlist import AllowList
from .appserver import AppServer
from .config import ConfigError
from .gateway import FastCGIGateway
from .whole_request import CLOSED, DECLINED, WholeRequestLane


log = logging.getLogger("fcgi_backend.fastcgi")


class FastCGIServer(AppServer):
    """Serves a WSGI application over FastCGI. See :class:`~fcgi_backend.appserver.AppServer`."""

    # Accepted connections as the C socket type: the protocol uses only its methods, and
    # socket.socket's Python __init__ and close() cost a small request about a microsecond.
    client_socket_type = _socket.socket
    # A kept connection given up stays open for the web server's next request on it: nginx answered
    # a POST sent on one as it closed with a 502 (README, *nginx and lighttpd*).
    parks_kept_connections = True

    def __init__(self, *args, allowed_clients: AllowList | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allowed_clients = allowed_clients or AllowList("")
        if self.tls:
            raise ConfigError("TLS is for the HTTP flavour (serve-http): web servers reach a FastCGI backend "
                              "over a unix socket or a private network, without TLS")
        self._gateway: FastCGIGateway | None = None
        self._lane: WholeRequestLane | None = None  # None: every request goes record by record

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
            self._gateway.access_log = self.access_log
            self._gateway.ping_path = self.config.ping_path
            self._lane = WholeRequestLane(self._gateway) if self._gateway.scan_whole_requests else None
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
        conn = self._serve_whole_requests(client) if self._lane is not None else \
            gateway.connection(client, None, linger=self.linger)
        while conn is not None and conn.serve_request():
            if gateway.timed_out:
                conn.close()
                break
            if not conn.has_buffered_record() and not self.wait_for_next_request(client):
                if not self.parked(client):
                    conn.close()  # (a record already read needs no wait)
                break
        if gateway.timed_out:
            self.retire()  # a request was interrupted: start afresh in a new worker

    def _serve_whole_requests(self, client: socket.socket):
        """Requests that arrive whole, through the lane (whole_request.py), as long as they do;
        the connection object of the reference path for the first that does not (None once the
        connection is closed)."""
        lane = self._lane
        while True:
            outcome = lane.serve(client, self.linger)
            if outcome == DECLINED:
                return self._gateway.connection(client, None, linger=self.linger, received=lane.taken)
            if outcome == CLOSED:
                return None
            if self._gateway.timed_out or not self.wait_for_next_request(client):  # kept: wait for the next
                if not self.parked(client):
                    lane.close(client, self.linger)
                return None


Server = FastCGIServer  # the name of earlier releases
