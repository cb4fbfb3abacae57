"""Stock flup serving a WSGI app that parses uploads with python-multipart (files spill to disk).

    python flup_multipart.py SOCKET_PATH UPLOAD_DIR
"""

import sys

from flup.server.fcgi_single import WSGIServer
from python_multipart import create_form_parser

CHUNK = 1024 * 1024  # what parse_form reads at a time


def make_app(upload_dir):
    def app(environ, start_response):
        fields, files = [], []
        headers = {"Content-Type": environ.get("CONTENT_TYPE", "").encode(),
                   "Content-Length": environ.get("CONTENT_LENGTH", "").encode()}
        if environ.get("REQUEST_METHOD") == "POST":
            # parse_form as python-multipart's docs show it, with an upload dir for the spilled files
            parser = create_form_parser(headers, fields.append, files.append,
                                        config={"UPLOAD_DIR": upload_dir, "MAX_MEMORY_FILE_SIZE": 1024 * 1024})
            stream = environ["wsgi.input"]
            while chunk := stream.read(CHUNK):
                parser.write(chunk)
            parser.finalize()
        sizes = [f.size for f in files]
        for f in files:
            f.close()  # python-multipart deletes its temporary file on close
        body = f"fields {len(fields)} files {sizes}\n".encode() if sizes or fields else b"Hello world\n"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app


if __name__ == "__main__":
    WSGIServer(make_app(sys.argv[2]), bindAddress=sys.argv[1], umask=0o117).run()
