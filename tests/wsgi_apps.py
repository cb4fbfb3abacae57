"""Plain WSGI applications (no fcgi_backend API) served with ``fcgi-backend run --app``."""

import hashlib
import time


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


def streamer(environ, start_response):
    """?mib=N chunks of 1 MiB, then (after ?pause= seconds) a last line: a response never whole in memory."""
    import time
    from urllib.parse import parse_qs

    query = parse_qs(environ.get("QUERY_STRING", ""))
    mib = int(query.get("mib", ["100"])[0])
    pause = float(query.get("pause", ["0"])[0])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    chunk = bytes(range(256)) * 4096

    def body():
        for _ in range(mib):
            yield chunk
        time.sleep(pause)
        yield b"the end\n"
    return body()


def listed_page(environ, start_response):
    """?bytes=N: a page of N bytes as a one-block list (the server adds its Content-Length and sends
    it with END_REQUEST), its sha256 in a header."""
    from urllib.parse import parse_qs

    size = int(parse_qs(environ.get("QUERY_STRING", "")).get("bytes", ["0"])[0])
    page = (bytes(range(251)) * (size // 251 + 1))[:size]
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("X-Sha256", hashlib.sha256(page).hexdigest())])
    return [page]


def dies_midway(environ, start_response):
    """Sends part of a response, then the worker process dies."""
    import os

    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"x" * 100_000
        os._exit(3)
    return body()


def environ_flags(environ, start_response):
    """What a WSGI application sees of the request's paths and the server's promises, one per line."""
    keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "wsgi.input_terminated", "HTTPS",
            "wsgi.url_scheme")
    body = "\n".join(f"{key}={environ.get(key)}" for key in keys).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def refuses_body(environ, start_response):
    """Answers 403 at once without reading the body, in pieces and without Content-Length (as a
    streaming application does): the web server can only tell the answer is complete from
    END_REQUEST."""
    start_response("403 Forbidden", [("Content-Type", "text/plain")])
    return iter([b"no body ", b"wanted\n"])


def environ_dump(environ, start_response):
    """Every text value of the environ, the wsgi flags and the body, as JSON: what the application saw."""
    import json
    seen = {key: value for key, value in environ.items() if isinstance(value, (str, bool, tuple))}
    seen["body"] = environ["wsgi.input"].read().decode("latin-1")
    body = json.dumps(seen, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def events(environ, start_response):
    """Server-sent events: four small ones, 0.4 s apart, as a page watching a long job gets them."""
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])

    def stream():
        for i in range(4):
            if i:
                time.sleep(0.4)
            yield f"data: event {i}\n\n".encode()
    return stream()


def big_cookies(environ, start_response):
    """?n= cookies of 4,000 bytes each (about the most a browser keeps of one), as a site keeping
    its state in cookies sends them: a response head of n times 4 KB."""
    n = int(environ.get("QUERY_STRING", "n=4").partition("=")[2] or 4)
    start_response("200 OK", [("Content-Type", "text/plain")] + [("Set-Cookie", f"c{i}=" + "v" * 3996) for i in range(n)])
    return [b"cookies set"]


def unfinished(environ, start_response):
    """An answer that goes wrong part way, as a buggy application's does: a Content-Length that
    does not match the body (?too=long: 3, ?too=short: 30, ?length=abc; ?file&length=abc: the body
    a file), hop-by-hop headers (?hop-by-hop: Transfer-Encoding: chunked over a body that is not),
    or a failure once the body has begun (?fail=midway). A client must never take it for a whole answer, nor read one
    answer's bytes as the next's."""
    query = environ.get("QUERY_STRING", "")
    length = {"too=long": "3", "too=short": "30", "length=abc": "abc", "file&length=abc": "abc"}.get(query)
    headers = [("Content-Type", "text/plain")] + ([("Content-Length", length)] if length else [])
    if query == "hop-by-hop":  # the server's to send (PEP 3333): the body is not in chunks
        headers += [("Transfer-Encoding", "chunked"), ("Keep-Alive", "timeout=99"), ("Upgrade", "h2c")]
    start_response("200 OK", headers)
    if query.startswith("file&"):  # the same 11 bytes as a file (the server may send it with sendfile)
        import tempfile
        file = tempfile.TemporaryFile()
        file.write(b"hello world")
        file.seek(0)
        return environ["wsgi.file_wrapper"](file)

    def body():  # 11 bytes, in pieces (as a streaming application writes)
        yield b"hello "
        if query == "fail=midway":
            time.sleep(0.2)  # (the page's start is on its way, as when a query fails late)
            raise RuntimeError("the database went away")
        yield b"world"
    return body()


def _counted_body(environ, start_response):
    """The body's length: CONTENT_LENGTH bytes, or without one, to its end (wsgi.input_terminated)."""
    read, length = 0, int(environ.get("CONTENT_LENGTH") or 0)
    if not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
        length = float("inf")
    while read < length:
        piece = environ["wsgi.input"].read(min(65536, length - read))
        if not piece:
            break
        read += len(piece)
    body = f"{read} bytes of {environ.get('CONTENT_TYPE', '-')}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def validated(environ, start_response):
    """The standard library's WSGI checks (wsgiref.validate) of what the server hands over and does
    with the answer, around an application that counts the body: an AssertionError is a 500."""
    from wsgiref.validate import validator
    return validator(_counted_body)(environ, start_response)


def line_reader(environ, start_response):
    """Reads wsgi.input line by line with readline(?size=) (as cgi.FieldStorage reads, -1 for no
    limit) until it returns nothing, and answers each piece's length, one per line."""
    size = int(environ["QUERY_STRING"].partition("size=")[2] or -1)
    stream, lengths = environ["wsgi.input"], []
    while piece := stream.readline(size):
        lengths.append(str(len(piece)))
    body = "\n".join(lengths).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def wrapped_file(environ, start_response):
    """Returns a file through wsgi.file_wrapper, as Flask's send_file and Django's FileResponse
    do: ?bytesio (a download made in memory), ?file (one on disk, opened by the app), ?file-read
    (the same after the app read its first 10 bytes: the rest is the answer), ?pipe."""
    import io
    import os
    import tempfile
    query = environ.get("QUERY_STRING", "")
    data = bytes(range(256)) * 400  # 100 KiB
    if query == "bytesio":
        filelike = io.BytesIO(data)
    elif query == "pipe":
        read_end, write_end = os.pipe()
        os.write(write_end, data[:60_000])  # (within a pipe's buffer)
        os.close(write_end)
        filelike = os.fdopen(read_end, "rb")
    else:
        filelike = tempfile.TemporaryFile()
        filelike.write(data)
        filelike.seek(0)
        if query == "file-read":
            filelike.read(10)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](filelike, 8192)


def malformed_head(environ, start_response):
    """A head no answer can carry: ?name (a header name with a space in it), ?control (an escape
    character in a value) or ?early-hints (a 1xx status, which is no final answer)."""
    if environ.get("QUERY_STRING") == "early-hints":
        start_response("103 Early Hints", [("Link", "</style.css>; rel=preload")])
    elif environ.get("QUERY_STRING") == "control":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Disposition", "inline; filename=a\x1b[31m")])
    else:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X Custom", "v")])
    return [b"never sent"]


def text_body(environ, start_response):
    """A body of str, not bytes: ?list returns ["caf\xe9 list"], ?write writes "caf\xe9 write",
    else it yields "caf\xe9 yield"; ?euro returns a character Latin-1 has no byte for."""
    query = environ.get("QUERY_STRING", "")
    write = start_response("200 OK", [("Content-Type", "text/plain; charset=iso-8859-1")])
    if query == "euro":
        return ["\u20ac"]
    if query == "list":
        return ["caf\xe9 list"]
    if query == "write":
        write("caf\xe9 write")
        return []
    return (text for text in ["caf\xe9 yield"])


def bytes_like_body(environ, start_response):
    """A body block that is bytes-like but not bytes: ?list returns [bytearray], ?write writes a
    memoryview, else it yields a bytearray."""
    query = environ.get("QUERY_STRING", "")
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    if query == "list":
        return [bytearray(b"bytes-like list")]
    if query == "write":
        write(memoryview(b"bytes-like write"))
        return []
    return (block for block in [bytearray(b"bytes-like yield")])


def framing_headers(environ, start_response):
    """Headers the server frames itself, given by the application: ?no-content answers 204 with a
    Content-Length, else 200 with a Date of its own."""
    if environ.get("QUERY_STRING") == "no-content":
        start_response("204 No Content", [("Content-Length", "5")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Date", "Tue, 01 Jan 2030 00:00:00 GMT")])
    return [b"hello"]


def long_header(environ, start_response):
    """An answer with a header X-Long of ?n= characters (a long Content-Security-Policy or Link)."""
    from urllib.parse import parse_qs

    size = int(parse_qs(environ.get("QUERY_STRING", "")).get("n", ["100"])[0])
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Long", "v" * size)])
    return [b"ok"]
