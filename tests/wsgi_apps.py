"""Plain WSGI applications (no fcgi_backend API) served with ``fcgi-backend run --app``."""

import hashlib


def body_digest(environ, start_response):
    """Reads wsgi.input to the end in small reads, as a generic WSGI app does, and reports it."""
    stream = environ["wsgi.input"]
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(8192):
        digest.update(chunk)
        size += len(chunk)
    body = f"{size} {digest.hexdigest()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello world\n"]
