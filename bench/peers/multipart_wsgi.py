"""The upload bench's Python peers' application: a WSGI app that parses uploads with
python-multipart (files spill to disk), as its docs show parse_form. flup and uWSGI serve it.

uWSGI loads ``application``, which takes its upload folder from the UPLOAD_DIR variable.
"""

import os

from python_multipart import create_form_parser

CHUNK = 1024 * 1024  # what parse_form reads at a time


def make_app(upload_dir):
    def app(environ, start_response):
        fields, files = [], []
        headers = {"Content-Type": environ.get("CONTENT_TYPE", "").encode(),
                   "Content-Length": environ.get("CONTENT_LENGTH", "").encode()}
        if environ.get("REQUEST_METHOD") == "POST":
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


def application(environ, start_response):
    return make_app(os.environ["UPLOAD_DIR"])(environ, start_response)
