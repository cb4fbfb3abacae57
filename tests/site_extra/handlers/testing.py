"""Handlers the tests need beyond the example site's."""

import json
import os
import time

from fcgi_backend import HTTPError, Response


def init_module(registry):
    registry.handler("boom", boom)
    registry.route("/echo", echo, methods=["GET", "POST", "PUT"])
    registry.route("/echo-json", lambda request: {"got": request.json()}, methods=["POST"])
    registry.route("/teapot", lambda request: Response("short and stout", status=418, content_type="text/plain"))
    registry.route("/forbidden", forbidden)
    registry.route("/cookie", cookie)
    registry.route("/page-with-missing-template", lambda request: {}, template="no-such.mustache")
    registry.route("/post-only", lambda request: {"ok": True}, methods=["POST"])
    registry.route("/pid", lambda request: Response(str(os.getpid()), content_type="text/plain"))
    registry.route("/sleep", sleep)
    registry.route("/stuck", stuck)
    registry.route("/echo-tls", echo_tls)
    registry.route("/exit", lambda request: os._exit(int(request.query.get("code", "3"))))  # a worker that dies
    # the pattern response splitting feeds on: a visitor's input in a header
    registry.route("/redirect-to", lambda request: Response.redirect(request.query.get("next", "/")))


def sleep(request):
    """Hold a worker busy for ?s= seconds; answers with the worker's pid."""
    time.sleep(float(request.query.get("s", "1")))
    return Response(str(os.getpid()), content_type="text/plain")


def boom(request):
    raise ZeroDivisionError("secret-detail-in-traceback")


def forbidden(request):
    raise HTTPError(403, "Not for you.")


def cookie(request):
    response = Response.json({"seen": request.cookies})
    response.set_cookie("visited", "yes", max_age=60)
    return response


def echo(request):
    """What the server understood of the request."""
    return Response(json.dumps({
        "method": request.method,
        "path": request.path,
        "query": request.query.to_dict(flat=False),
        "form": request.form.to_dict(flat=False),
        "body_length": len(request.body),
        "content_type": request.content_type,
        "authorization": request.headers.get("Authorization"),
        "x_custom": request.headers.get("X-Custom"),
        "host": request.headers.get("Host"),
        "server": [request.environ.get("SERVER_NAME"), request.environ.get("SERVER_PORT")],
        "remote_addr": request.environ.get("REMOTE_ADDR"),
        "scheme": request.environ.get("wsgi.url_scheme"),
        "cookies": request.cookies,
        "x_stdin_length": getattr(request.environ["wsgi.input"], "raw_length", None),  # which body path
    }), content_type="application/json")


def stuck(request):
    """Hold a worker for ?s= seconds in a way no alarm interrupts (as code stuck in C does)."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    try:
        time.sleep(float(request.query.get("s", "30")))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGALRM])
    return Response("unstuck", content_type="text/plain")


def echo_tls(request):
    """What the application learns of a TLS connection (mod_ssl's names)."""
    env = request.environ
    return {"HTTPS": env.get("HTTPS"), "SSL_CLIENT_VERIFY": env.get("SSL_CLIENT_VERIFY"),
            "SSL_CLIENT_S_DN": env.get("SSL_CLIENT_S_DN"), "scheme": env.get("wsgi.url_scheme")}
