"""Handlers of the benchmark site."""

from fcgi_backend import Response


def init_module(registry):
    registry.route("/upload", upload, methods=["POST"])
    registry.route("/upload-form", lambda request: Response("Send a file with POST /upload\n",
                                                              content_type="text/plain"))
    registry.handler("greeting", lambda request: {"name": "world", "items": ["one", "two", "three"]})


def upload(request):
    """Parse the upload (files land in the upload dir) and answer with what arrived."""
    sizes = [f.size for _, f in request.files.items(multi=True)]
    return Response(f"fields {len(request.form)} files {sizes}\n", content_type="text/plain")
