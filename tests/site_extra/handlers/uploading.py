"""An upload handler for the tests: reports what arrived, and keeps files when asked."""

import hashlib

from fcgi_backend import Response


def init_module(registry):
    registry.route("/upload", upload, methods=["POST", "PUT"])
    registry.route("/raw-sha256", raw_sha256, methods=["POST", "PUT"])


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def upload(request):
    """?hash=1 adds each file's sha256; ?keep_dir=DIR moves the files there (they outlive the request)."""
    kept_dir = request.query.get("keep_dir")
    report = {"fields": request.form.to_dict(flat=False), "files": []}
    for name, f in request.files.items(multi=True):
        entry = {"name": name, "filename": f.filename, "content_type": f.content_type, "size": f.size}
        if request.query.get("hash"):
            entry["sha256"] = sha256_of(f.path)
        if kept_dir:
            entry["kept_at"] = str(f.move(f"{kept_dir}/{name}"))
        report["files"].append(entry)
    return Response.json(report)


def raw_sha256(request):
    """Hash wsgi.input as any WSGI application would read it."""
    stream = request.environ["wsgi.input"]
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return Response.json({"size": size, "sha256": digest.hexdigest()})
