"""The C multipart parser, checked against python-multipart (an independent parser from PyPI)."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from fcgi_backend.errors import HTTPError
from fcgi_backend.limits import Limits
from fcgi_backend.uploads import UPLOAD_FILE_PREFIX, MultipartUpload, boundary_from_content_type, parse_multipart, safe_filename

BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_- .[]é"


# ---- an independent reference ----------------------------------------------------------------

def reference_parse(body: bytes, boundary: bytes):
    """(fields, files) as python-multipart reads them: lists of (name, value) and (name, filename, type, data)."""
    parts, headers, field, value = [], {}, [], []
    current = {}

    def on_part_begin():
        current.clear()
        current["data"] = bytearray()
        headers.clear()

    def on_header_field(data, start, end):
        field.append(data[start:end])

    def on_header_value(data, start, end):
        value.append(data[start:end])

    def on_header_end():
        headers[b"".join(field).lower()] = b"".join(value)
        field.clear()
        value.clear()

    def on_part_data(data, start, end):
        current["data"] += data[start:end]

    def on_part_end():
        _, params = parse_options_header(headers.get(b"content-disposition", b""))
        parts.append((params.get(b"name", b"").decode(), params.get(b"filename"),
                      headers.get(b"content-type"), bytes(current["data"])))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    }, max_header_count=16)
    parser.write(body)
    parser.finalize()
    fields = [(n, d.decode("utf-8", "replace")) for n, f, _, d in parts if f is None]
    files = [(n, f.decode(), (t or b"application/octet-stream").decode(), d) for n, f, t, d in parts if f is not None]
    return grouped(fields), grouped(files)


def grouped(items):
    """Entries grouped by name in order of first appearance, each name's entries in order (MultiDict's order)."""
    order = {}
    for item in items:
        order.setdefault(item[0], []).append(item)
    return [item for entries in order.values() for item in entries]


def parsed(boundary: bytes, chunks, limits: Limits):
    """(fields, files) of a body fed to the C parser in ``chunks``; the files are the caller's."""
    upload = MultipartUpload(boundary, limits)
    try:
        for chunk in chunks:
            upload.feed(chunk)
        upload.finish()
        return upload.results()
    finally:
        upload.close()


def ours(body: bytes, boundary: bytes, chunks, limits: Limits):
    fields, files = parsed(boundary, chunks, limits)
    got_files = []
    for name, f in files.items(multi=True):
        got_files.append((name, f.filename, f.content_type, f.read()))
        f.discard()
    return fields.items(multi=True), got_files


# ---- generated bodies ---------------------------------------------------------------------------

@st.composite
def multipart_bodies(draw):
    boundary = draw(st.text(alphabet=BCHARS, min_size=1, max_size=70).filter(lambda b: not b.endswith(" ")))
    bnd = boundary.encode()
    # content made of pieces that look like delimiters, so every near-miss is exercised
    fragments = st.sampled_from([b"\r", b"\n", b"\r\n", b"-", b"--", b"\r\n--", bnd[:len(bnd) // 2],
                                 b"\r\n--" + bnd[:-1], bnd, b"\x00", b"\xff"])
    content = st.lists(st.one_of(fragments, st.binary(max_size=12)), max_size=12).map(b"".join)
    parts = draw(st.lists(st.tuples(
        st.text(alphabet=NAME_CHARS, min_size=1, max_size=10),
        st.one_of(st.none(), st.text(alphabet=NAME_CHARS, min_size=1, max_size=12)),  # filename
        st.sampled_from([None, "text/plain", "application/octet-stream", "image/png"]),
        content,
    ), min_size=1, max_size=4))
    preamble = draw(st.sampled_from([b"", b"\r\n"]))  # the only bytes allowed before the first boundary
    epilogue = draw(st.sampled_from([b"", b"\r\n", b"epilogue\r\n--" + bnd]))
    body = bytearray(preamble)
    for name, filename, ctype, data in parts:
        assume(b"\r\n--" + bnd not in b"\r\n" + data + b"\r\n")
        body += b"--" + bnd + b"\r\n"
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += disposition.encode() + b"\r\n"
        if ctype and filename is not None:
            body += f"Content-Type: {ctype}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    body += b"--" + bnd + b"--" + epilogue
    return bytes(body), bnd, len(preamble)


@pytest.fixture
def limits(tmp_path):
    return Limits(upload_dir=str(tmp_path))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.filter_too_much])
@given(multipart_bodies())
def test_same_result_as_python_multipart_at_every_split_point(limits, generated):
    body, boundary, preamble = generated
    expected = reference_parse(body[preamble:], boundary)  # python-multipart does not skip a preamble
    assert ours(body, boundary, [body], limits) == expected
    for i in range(1, len(body)):
        assert ours(body, boundary, [body[:i], body[i:]], limits) == expected, f"split at {i}"
    assert ours(body, boundary, [body[i:i + 1] for i in range(len(body))], limits) == expected
    assert os.listdir(limits.upload_dir) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.filter_too_much])
@given(multipart_bodies(), st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=50))
def test_same_result_in_random_chunks(limits, generated, sizes):
    body, boundary, preamble = generated
    chunks, pos, i = [], 0, 0
    while pos < len(body):
        n = sizes[i % len(sizes)]
        chunks.append(body[pos:pos + n])
        pos += n
        i += 1
    assert ours(body, boundary, chunks, limits) == reference_parse(body[preamble:], boundary)


# ---- headers and boundaries ---------------------------------------------------------------------

@pytest.mark.parametrize("content_type, boundary", [
    ("multipart/form-data; boundary=abc", b"abc"),
    ('multipart/form-data; boundary="a b:c"', b"a b:c"),
    ("multipart/form-data;boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", b"----WebKitFormBoundary7MA4YWxkTrZu0gW"),
    ("multipart/form-data; charset=utf-8; BOUNDARY=xyz; other=1", b"xyz"),
    ("multipart/form-data", None),
    ("multipart/form-data; boundary=", None),
    ("multipart/form-data; boundary=" + "x" * 71, None),
    ('multipart/form-data; boundary="bad\x01"', None),
])
def test_boundary_from_content_type(content_type, boundary):
    assert boundary_from_content_type(content_type) == boundary


def body_of(*parts, boundary=b"XyZ"):
    return b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary + b"--\r\n"


def test_filename_star_and_transport_padding(limits):
    body = (b"--XyZ  \t\r\n"  # transport padding after the boundary
            b'Content-Disposition: form-data; name="doc"; filename="fallback.txt"; '
            b"filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.txt\r\n"
            b"Content-Type: text/plain\r\n\r\nhello\r\n"
            b"--XyZ--")
    fields, files = ours(body, b"XyZ", [body], limits)
    assert files == [("doc", "naïve résumé.txt", "text/plain", b"hello")]


def test_backslashes_in_quoted_values_are_kept_as_sent(limits):
    """Browsers send a Windows path's backslashes as they are and escape only '"', CR and LF
    (as %22, %0D, %0A): a backslash is not an escape character."""
    body = body_of(b'Content-Disposition: form-data; name="cv"; filename="C:\\Users\\me\\cv.pdf"\r\n\r\nPDF',
                   b'Content-Disposition: form-data; name="a\\b"\r\n\r\nv',
                   b'Content-Disposition: form-data; name="q%22uoted\\"\r\n\r\nw')
    upload = MultipartUpload(b"XyZ", limits)
    upload.feed(body)
    upload.finish()
    fields, files = upload.results()
    assert files["cv"].filename == "C:\\Users\\me\\cv.pdf"
    assert files["cv"].safe_filename == "cv.pdf"
    files["cv"].discard()
    assert fields.items(multi=True) == [("a\\b", "v"), ("q%22uoted\\", "w")]


def test_bare_lf_header_lines_are_400_and_nothing_is_misplaced(limits):
    """A bare LF used to end no header block, so part a's header block swallowed its value and
    part c's headers, and field a got c's value."""
    body = (b'--B\r\nContent-Disposition: form-data; name="a"\n\nvalue-a\r\n'
            b'--B\r\nContent-Disposition: form-data; name="c"\r\n\r\nvalue-c\r\n--B--\r\n')
    for chunks in ([body], [body[i:i + 1] for i in range(len(body))]):
        with pytest.raises(HTTPError) as err:
            ours(body, b"B", chunks, limits)
        assert err.value.status == 400 and "bare LF" in err.value.detail
    file_body = (b'--B\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\n'
                 b'file-bytes\r\n--B\r\nContent-Disposition: form-data; name="g"\r\n\r\nother\r\n--B--')
    with pytest.raises(HTTPError) as err:
        ours(file_body, b"B", [file_body], limits)
    assert err.value.status == 400
    assert os.listdir(limits.upload_dir) == []


@pytest.mark.parametrize("body", [
    b'--XyY\r\nContent-Disposition: form-data; name="lost"\r\n\r\n1\r\n'  # damaged first boundary
    b'--XyZ\r\nContent-Disposition: form-data; name="kept"\r\n\r\n2\r\n--XyZ--',
    b'Content-Disposition: form-data; name="lost"\r\n\r\n1\r\n'  # first boundary missing
    b'--XyZ\r\nContent-Disposition: form-data; name="kept"\r\n\r\n2\r\n--XyZ--',
    b"some text\r\n--XyZ--\r\n",  # text, then the close-delimiter
    b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ--",
    b"\r\n\r\n--XyZ--",
])
def test_a_body_that_does_not_start_with_its_boundary_is_400(limits, body):
    for chunks in ([body], [body[i:i + 1] for i in range(len(body))]):
        with pytest.raises(HTTPError) as err:
            ours(body, b"XyZ", chunks, limits)
        assert err.value.status == 400 and "does not start with its boundary" in err.value.detail


def test_a_first_boundary_with_a_stray_dash_is_400(limits):
    body = (b'--XyZ-\r\nContent-Disposition: form-data; name="lost"\r\n\r\n1\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="kept"\r\n\r\n2\r\n--XyZ--')
    with pytest.raises(HTTPError) as err:
        ours(body, b"XyZ", [body], limits)
    assert err.value.status == 400


@pytest.mark.parametrize("body, fields", [
    (b"--XyZ--\r\n", []),  # what a browser sends for a form with no fields
    (b'\r\n--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--XyZ--', [("a", "1")]),
])
def test_an_empty_form_and_a_leading_crlf_are_accepted(limits, body, fields):
    assert ours(body, b"XyZ", [body], limits) == (fields, [])


@pytest.mark.parametrize("disposition", [
    b'form-data; name="us\x00er"',
    b'form-data; name="f"; filename="evil.php\x00.jpg"',
])
def test_a_nul_byte_in_name_or_filename_is_400_never_a_shorter_name(limits, disposition):
    body = body_of(b"Content-Disposition: " + disposition + b"\r\n\r\ndata")
    with pytest.raises(HTTPError) as err:
        ours(body, b"XyZ", [body], limits)
    assert err.value.status == 400 and "NUL" in err.value.detail
    assert os.listdir(limits.upload_dir) == []


@pytest.mark.parametrize("filename, safe", [
    ("日本.txt", "日本.txt"),
    ("Ünïcödé résumé.pdf", "Ünïcödé_résumé.pdf"),
    ("😀.txt", "upload.txt"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\cv.pdf", "cv.pdf"),
    (".htaccess", "upload.htaccess"),
    ("a b&c.tar.gz", "a_b_c.tar.gz"),
    ("", "upload"),
    ("..", "upload"),
    ("x" * 400 + ".txt", "x" * 196 + ".txt"),
])
def test_safe_filename_keeps_a_usable_stem(filename, safe):
    assert safe_filename(filename) == safe


def test_two_non_ascii_filenames_do_not_collide():
    assert safe_filename("日本.txt") != safe_filename("中国.txt")


def test_temporary_files_carry_the_worker_pid(limits):
    """So a supervisor can remove the files of a worker that died mid-upload."""
    upload = MultipartUpload(b"XyZ", limits)
    upload.feed(body_of(FILE_PART + b"partial"))
    names = os.listdir(limits.upload_dir)
    upload.close()
    assert len(names) == 1 and names[0].startswith(f"{UPLOAD_FILE_PREFIX}{os.getpid()}-")
    assert os.listdir(limits.upload_dir) == []


@pytest.mark.parametrize("body, message", [
    (b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end", "closing boundary"),
    (b"--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--", "without ':'"),
    (b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--", "no Content-Disposition"),
    (b"--XyZ\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--XyZ--", "not form-data"),
    (b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--", "not form-data with a name"),
    (b"--XyZgarbage\r\n", "not followed by CRLF"),
    (b"--XyZ-x", "single '-'"),
    (b"nothing but preamble", "does not start with its boundary"),
    (b"", "closing boundary"),
])
def test_malformed_bodies_are_400_and_leave_no_file(limits, body, message):
    with pytest.raises(HTTPError) as err:
        ours(body, b"XyZ", [body], limits)
    assert err.value.status == 400 and message in err.value.detail
    assert os.listdir(limits.upload_dir) == []


def test_invalid_boundary_is_400(limits):
    with pytest.raises(HTTPError) as err:
        MultipartUpload(b"bad\x00boundary", limits)
    assert err.value.status == 400


# ---- limits ---------------------------------------------------------------------------------------

FILE_PART = b'Content-Disposition: form-data; name="f"; filename="x.bin"\r\n\r\n'
FIELD_PART = b'Content-Disposition: form-data; name="t"\r\n\r\n'


@pytest.mark.parametrize("limit, body, message", [
    ({"max_file": 1000}, body_of(FILE_PART + b"x" * 1001), "file size limit"),
    ({"max_body": 500}, body_of(FILE_PART + b"x" * 600), "body size limit"),
    ({"max_parts": 3}, body_of(*[FIELD_PART + b"v"] * 4), "more parts"),
    ({"max_part_header": 100}, body_of(b"X-Long: " + b"h" * 200 + b"\r\n" + FIELD_PART), "headers exceed"),
    ({"max_memory": 100}, body_of(FIELD_PART + b"a" * 60, FIELD_PART + b"b" * 60), "in-memory field data"),
])
def test_each_limit_is_413_and_removes_every_partial_file(tmp_path, limit, body, message):
    limits = Limits(upload_dir=str(tmp_path), **limit)
    # an earlier complete file part must go too
    body = body.replace(b"--XyZ\r\n", b"--XyZ\r\n" + FILE_PART + b"kept?\r\n--XyZ\r\n", 1)
    for chunk_size in (len(body), 7):
        with pytest.raises(HTTPError) as err:
            ours(body, b"XyZ", [body[i:i + chunk_size] for i in range(0, len(body), chunk_size)], limits)
        assert err.value.status == 413 and message in err.value.detail
        assert os.listdir(tmp_path) == []


def test_limits_at_exactly_the_bound_pass(tmp_path):
    limits = Limits(upload_dir=str(tmp_path), max_file=1000, max_parts=2, max_memory=11)  # name + value
    body = body_of(FILE_PART + b"x" * 1000, FIELD_PART + b"0123456789")
    fields, files = ours(body, b"XyZ", [body], limits)
    assert files[0][3] == b"x" * 1000 and fields == [("t", "0123456789")]


def test_a_missing_upload_dir_is_500_not_a_crash(tmp_path):
    limits = Limits(upload_dir=str(tmp_path / "gone"))
    with pytest.raises(HTTPError) as err:
        ours(body_of(FILE_PART + b"x"), b"XyZ", [body_of(FILE_PART + b"x")], limits)
    assert err.value.status == 500 and "cannot create a temporary file" in err.value.detail


# ---- uploaded files -------------------------------------------------------------------------------

def wsgi_environ(body: bytes, boundary: bytes = b"XyZ"):
    import io
    return {"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "multipart/form-data; boundary=" + boundary.decode(), "REQUEST_METHOD": "POST"}


def test_files_can_be_moved_kept_or_discarded(tmp_path):
    limits = Limits(upload_dir=str(tmp_path))
    body = body_of(FILE_PART.replace(b'"f"', b'"a"') + b"AAA", FILE_PART.replace(b'"f"', b'"b"') + b"BBB",
                   FILE_PART.replace(b'"f"', b'"c"') + b"CCC")
    fields, files = parse_multipart(wsgi_environ(body), wsgi_environ(body)["CONTENT_TYPE"], limits)
    dest = tmp_path / "kept"
    dest.mkdir()
    moved = files["a"].move(dest / "a.bin")
    kept = files["b"].keep()
    assert files["c"].size == 3 and files["c"].read() == b"CCC"
    for f in files.values():
        f.discard()
    assert moved.read_bytes() == b"AAA" and kept.read_bytes() == b"BBB"
    assert not files["c"].path.exists()


@pytest.mark.parametrize("other_file_system", [False, True])
def test_move_into_never_replaces_a_file_already_there(tmp_path, other_file_system):
    """Three visitors send "photo.jpg" (and one a name with no extension, twice): each keeps theirs."""
    limits = Limits(upload_dir=str(tmp_path))
    sent = [("photo.jpg", b"first"), ("photo.jpg", b"second"), ("../photo.jpg", b"third"), ("README", b"r1"),
            ("README", b"r2")]
    parts = [FILE_PART.replace(b'"f"', b'"%d"' % i).replace(b"x.bin", name.encode()) + content
             for i, (name, content) in enumerate(sent)]
    body = body_of(*parts)
    _, files = parse_multipart(wsgi_environ(body), wsgi_environ(body)["CONTENT_TYPE"], limits)
    album = Path("/dev/shm") / f"album-{os.getpid()}" if other_file_system else tmp_path / "album"
    album.mkdir()
    try:
        placed = [files[str(i)].move_into(album) for i in range(5)]
        assert [p.name for p in placed] == ["photo.jpg", "photo-2.jpg", "photo-3.jpg", "README", "README-2"]
        assert [p.read_bytes() for p in placed] == [b"first", b"second", b"third", b"r1", b"r2"]
        assert os.listdir(tmp_path) == ([] if other_file_system else ["album"])  # no temporary file left
    finally:
        shutil.rmtree(album, ignore_errors=True)


def test_large_file_through_the_wsgi_stream_path(tmp_path):
    limits = Limits(upload_dir=str(tmp_path))
    payload = os.urandom(3 * 1024 * 1024 + 17)
    body = body_of(FILE_PART + payload)
    _, files = parse_multipart(wsgi_environ(body), wsgi_environ(body)["CONTENT_TYPE"], limits)
    f = files["f"]
    assert f.size == len(payload)
    assert hashlib.sha256(f.read()).digest() == hashlib.sha256(payload).digest()
    f.discard()


def test_large_files_take_only_the_disk_space_of_their_bytes(tmp_path):
    """Disk blocks are reserved ahead of a large file's writes; what its part did not fill is given
    back, so each file on disk takes its own size and no more (what `du` shows)."""
    limits = Limits(upload_dir=str(tmp_path), max_file=5 * 1024 * 1024)  # no reservation past the limit
    first, second = os.urandom(3 * 1024 * 1024 + 5), os.urandom(700 * 1024)
    body = body_of(FILE_PART + first, FILE_PART.replace(b'"f"', b'"g"') + second, FIELD_PART + b"after")
    for chunk_size in (len(body), 300 * 1024, 8192):
        fields, files = parsed(b"XyZ", [body[i:i + chunk_size] for i in range(0, len(body), chunk_size)], limits)
        assert fields["t"] == "after"
        for name, payload in (("f", first), ("g", second)):
            stored = files[name]
            assert stored.size == len(payload) and stored.read() == payload
            allocated = os.stat(stored.path).st_blocks * 512
            assert allocated <= len(payload) + 64 * 1024, f"{name}: {allocated} bytes on disk for {len(payload)}"
            stored.discard()
    assert os.listdir(tmp_path) == []


# ---- large files past the page cache (upload_direct_io) ---------------------------------------------

def resident_bytes(path) -> int:
    """How much of a file sits in the page cache (util-linux's fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip() or 0)


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_files_past_upload_direct_io_are_stored_byte_for_byte_outside_the_page_cache(tmp_path, where):
    """Past upload_direct_io a file part goes on with O_DIRECT, from a thread: every byte lands in
    order whatever the block boundaries, the chunking and the parts around it; on a disk the
    file then takes no page cache past its buffered head and tail (a file system that refuses
    O_DIRECT gets the buffered way, the same bytes)."""
    directory = tmp_path if where == "disk" else Path(tempfile.mkdtemp(dir="/dev/shm"))
    limits = Limits(upload_dir=str(directory), upload_direct_io=64 * 1024, max_file=8 * 1024 * 1024)
    payloads = {"a": os.urandom(5 * 1024 * 1024 + 4095), "b": os.urandom(64 * 1024 + 1),
                "c": os.urandom(2 * 1024 * 1024), "d": os.urandom(1000)}
    body = body_of(*(FILE_PART.replace(b'"f"', f'"{name}"'.encode()) + payload for name, payload in payloads.items()),
                   FIELD_PART + b"after")
    try:
        for chunk_size in (len(body), 300 * 1024 + 3, 8192, 7777):
            fields, files = parsed(b"XyZ", [body[i:i + chunk_size] for i in range(0, len(body), chunk_size)], limits)
            assert fields["t"] == "after"
            for name, payload in payloads.items():
                stored = files[name]
                if where == "disk" and name == "a":
                    assert resident_bytes(stored.path) <= 64 * 1024 + 2 * 4096, "the page cache holds the file"
                assert stored.size == len(payload) and stored.read() == payload, f"{name} in chunks of {chunk_size}"
                allocated = os.stat(stored.path).st_blocks * 512
                assert allocated <= len(payload) + 64 * 1024, f"{name}: {allocated} bytes on disk for {len(payload)}"
                stored.discard()
        assert os.listdir(directory) == []
    finally:
        if where == "tmpfs":
            shutil.rmtree(directory)


def test_a_file_over_max_file_past_upload_direct_io_is_413_and_leaves_nothing(tmp_path):
    limits = Limits(upload_dir=str(tmp_path), upload_direct_io=4096, max_file=3 * 1024 * 1024)
    body = body_of(FILE_PART.replace(b'"f"', b'"g"') + b"first", FILE_PART + os.urandom(4 * 1024 * 1024))
    with pytest.raises(HTTPError) as err:
        parsed(b"XyZ", [body[i:i + 65536] for i in range(0, len(body), 65536)], limits)
    assert err.value.status == 413 and "file size limit" in err.value.detail
    assert os.listdir(tmp_path) == []


FAILING_WRITE = """
import os, resource, signal, sys
from fcgi_backend.errors import HTTPError
from fcgi_backend.limits import Limits
from fcgi_backend.uploads import MultipartUpload
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024, resource.RLIM_INFINITY))
body = (b'--XyZ\\r\\nContent-Disposition: form-data; name="f"; filename="x.bin"\\r\\n\\r\\n'
        + os.urandom(4 * 1024 * 1024) + b"\\r\\n--XyZ--\\r\\n")
upload = MultipartUpload(b"XyZ", Limits(upload_dir=sys.argv[1], upload_direct_io=65536))
try:
    for i in range(0, len(body), 65536):
        upload.feed(body[i:i + 65536])
    upload.finish()
except HTTPError as exc:
    print(exc.status, exc.detail)
"""


def test_a_failing_direct_write_is_500_and_leaves_nothing(tmp_path):
    """The thread's write fails (the file may not grow past 2 MiB here): the upload stops with a
    500 that says why, and its file is gone."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    done = subprocess.run([sys.executable, "-c", FAILING_WRITE, str(uploads)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "500 cannot write uploaded file: File too large"
    assert os.listdir(uploads) == []


def test_upload_direct_io_cannot_be_negative():
    with pytest.raises(ValueError, match="upload_direct_io cannot be negative"):
        Limits(upload_direct_io=-1).check()
