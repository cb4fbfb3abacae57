"""Handlers of the benchmark site."""

from fcgi_backend import Response


def init_module(registry):
    registry.route("/upload", upload, methods=["POST"])
    registry.route("/upload-form", lambda request: Response("Send a file with POST /upload\n",
                                                              content_type="text/plain"))
    registry.route("/visit", visit)
    registry.route("/visit-no-session", lambda request: Response("visit 1\n", content_type="text/plain"))
    registry.handler("page", page)
    registry.handler("page_no_session", lambda request: {"title": "Page", "name": "world", "visits": 1,
                                                          "items": ["one", "two", "three"]})
    registry.handler("greeting", lambda request: {"name": "world", "items": ["one", "two", "three"]})


def upload(request):
    """Parse the upload (files land in the upload dir) and answer with what arrived."""
    sizes = [f.size for _, f in request.files.items(multi=True)]
    return Response(f"fields {len(request.form)} files {sizes}\n", content_type="text/plain")


def visit(request):
    """A counter per visitor: reads and writes the session (bench/session_bench.py)."""
    request.session["n"] = request.session.get("n", 0) + 1
    return Response(f"visit {request.session['n']}\n", content_type="text/plain")


def page(request):
    """page.mustache: a page with a counter per visitor in its session."""
    request.session["n"] = request.session.get("n", 0) + 1
    return {"title": "Page", "name": "world", "visits": request.session["n"], "items": ["one", "two", "three"]}
