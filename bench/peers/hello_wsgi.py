"""The same small page for every Python server in the benchmarks: a plain WSGI hello."""


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello world\n"]
