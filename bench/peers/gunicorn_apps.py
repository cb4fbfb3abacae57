"""The WSGI applications gunicorn serves in bench/http_bench.py, as a gunicorn user would write them.

    gunicorn gunicorn_apps:hello      the same hello as every server
    gunicorn gunicorn_apps:view       the benchmark site's mustache page, rendered with pystache
    gunicorn gunicorn_apps:upload     python-multipart's parse_form, files spilled to UPLOAD_DIR
"""

import os
from pathlib import Path

import pystache

from flup_multipart import make_app
from hello_wsgi import hello  # noqa: F401 (served by name)

_TEMPLATE = Path(os.environ.get("BENCH_SITE", Path(__file__).parent.parent / "site")) / "webroot" / "view.mustache"
_PARSED = pystache.parse(_TEMPLATE.read_text().split("\n", 1)[1])  # parsed once, without its pragma line
_RENDERER = pystache.Renderer()


def view(environ, start_response):
    """What the benchmark site's greeting handler gives the template, rendered the same way."""
    body = _RENDERER.render(_PARSED, {"name": "world", "items": ["one", "two", "three"]}).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


upload = make_app(os.environ.get("UPLOAD_DIR", "/tmp"))
