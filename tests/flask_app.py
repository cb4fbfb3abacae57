"""A Flask application for the tests, served with ``fcgi-backend run SITE --app tests/flask_app.py:app``."""

import hashlib
import io
import os

from flask import Flask, jsonify, request, send_file

app = Flask(__name__)


@app.post("/body")
def body():
    """What arrived of the request body, read the way Flask reads it."""
    data = request.get_data()
    return jsonify(length=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   content_length=request.headers.get("Content-Length"))


@app.get("/where")
@app.get("/where/<path:rest>")
def where(rest=None):
    """Where the application thinks it is mounted, and what it was asked for."""
    return jsonify(script_root=request.script_root, path=request.path, url=request.url,
                   query=request.args.to_dict(), pid=os.getpid())


@app.route("/upload", methods=["POST"])
def upload():
    f = request.files["f"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/report.csv")
def report():
    """A download made in memory, as a report or an export is sent."""
    rows = "".join(f"{n},{n * n}\n" for n in range(int(request.args.get("rows", "10"))))
    return send_file(io.BytesIO(rows.encode()), mimetype="text/csv", as_attachment=True, download_name="report.csv")


NOTES = "".join(f"line {n:06d} of the release notes\n" for n in range(4000)).encode()


@app.get("/notes.txt")
def notes():
    """A text file with its validators (ETag, Last-Modified), as Flask sends a static file."""
    return send_file(io.BytesIO(NOTES), mimetype="text/plain", etag="notes-1", last_modified=1700000000,
                     conditional=True)
