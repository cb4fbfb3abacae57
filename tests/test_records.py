"""FastCGI framing: the pure record parser and the name-value codec."""

import pytest

from fcgi_backend.records import (
    FCGI_PARAMS,
    FCGI_STDIN,
    ProtocolError,
    RecordParser,
    decode_params,
    encode_params,
    encode_record,
    encode_stream,
)


def test_records_are_padded_to_a_multiple_of_eight():
    for n in range(0, 20):
        rec = encode_record(FCGI_STDIN, 1, b"x" * n)
        assert len(rec) % 8 == 0
        assert rec[6] == (8 - n % 8) % 8


def test_parser_returns_records_fed_one_byte_at_a_time():
    data = encode_record(FCGI_PARAMS, 3, b"abc") + encode_record(FCGI_STDIN, 3, b"0123456789")
    parser = RecordParser()
    got = []
    for i in range(len(data)):
        parser.feed(data[i:i + 1])
        while (rec := parser.next_record()) is not None:
            got.append((rec.type, rec.requestId, rec.contentData))
    assert got == [(FCGI_PARAMS, 3, b"abc"), (FCGI_STDIN, 3, b"0123456789")]
    assert parser.pending == 0


def test_parser_holds_an_incomplete_record_as_pending():
    parser = RecordParser()
    parser.feed(encode_record(FCGI_STDIN, 1, b"hello")[:10])
    assert parser.next_record() is None
    assert parser.pending == 10


def test_bad_version_is_a_protocol_error():
    rec = bytearray(encode_record(FCGI_STDIN, 1, b"x"))
    rec[0] = 2
    parser = RecordParser()
    parser.feed(bytes(rec))
    with pytest.raises(ProtocolError, match="version 2"):
        parser.next_record()


def test_take_pending_hands_over_bytes_after_the_last_record():
    parser = RecordParser()
    parser.feed(encode_record(FCGI_STDIN, 1, b"abc") + b"raw tail")
    assert parser.next_record().contentData == b"abc"
    assert parser.take(100) == b"raw tail"
    assert parser.pending == 0


def test_params_round_trip_with_short_and_long_lengths():
    pairs = {"A": "1", "LONG_NAME" * 20: "v" * 300, "EMPTY": ""}
    assert dict(decode_params(encode_params(pairs))) == pairs


@pytest.mark.parametrize("data", [
    b"\x05",                      # value length missing
    b"\x01\x80\x00\x00",            # 4-byte value length cut short
    b"\x80\x00",                  # 4-byte length cut short
    b"\x05\x05abc",               # pair longer than the data
    b"\x80\x00\x00\x10\x01" + b"x" * 3,  # long name claims 16 bytes
])
def test_bad_name_value_lengths_are_protocol_errors(data):
    with pytest.raises(ProtocolError):
        decode_params(data)


def test_a_stream_ends_with_an_empty_record():
    data = encode_stream(FCGI_STDIN, 1, b"z" * 70000)
    parser = RecordParser()
    parser.feed(data)
    sizes = []
    while (rec := parser.next_record()) is not None:
        sizes.append(rec.contentLength)
    assert sum(sizes) == 70000 and sizes[-1] == 0 and max(sizes) <= 65535


# ---- the whole-request scanner (connector_c/fcgi_request.c) -----------------------------------

from fcgi_backend.records import FCGI_ABORT_REQUEST, FCGI_BEGIN_REQUEST, HEADER, WholeRequestScanner  # noqa: E402
from fcgi_client import begin_request, cgi_params, request_bytes  # noqa: E402


def reference_request(data: bytes):
    """What the record-by-record path makes of a request: (id, flags, params, body)."""
    parser = RecordParser()
    parser.feed(data)
    begin = parser.next_record()
    params, body = bytearray(), bytearray()
    while (rec := parser.next_record()) is not None:
        (params if rec.type == FCGI_PARAMS else body).extend(rec.contentData)
    return begin.requestId, begin.contentData[2], decode_params(bytes(params)), bytes(body)


def scan(data: bytes, max_params: int = 65536, max_body: int = 65536):
    parser = RecordParser()
    parser.feed(data)
    whole = parser.take_whole_request(WholeRequestScanner(max_params, max_body, 1024))
    return whole, parser.pending


@pytest.mark.parametrize("params, body", [
    (cgi_params("GET", "/hello?x=1"), b""),
    ({"A": "", "": "empty name", "LONG": "v" * 300, "HTTP_X": "é ü".encode().decode("latin-1")}, b""),
    (cgi_params("POST", "/form", 11), b"a=1&b=two!!"),
    ({}, b""),
])
def test_the_scanner_reads_a_whole_request_as_the_record_path_does(params, body):
    data = request_bytes(params, body, request_id=7, keep_conn=True)
    whole, left = scan(data)
    assert (whole.request_id, whole.flags, whole.params, whole.body) == reference_request(data)
    assert left == 0


def test_a_header_field_sent_as_several_params_is_joined_both_ways():
    """nginx before 1.23 passes each line of a header field as a param of its own: the lines are
    joined as RFC 9110 joins them (cookies with "; "), in order; a CGI variable sent twice keeps
    its last value, and so does HTTP_HOST (one Host a request: a second is a config's param)."""
    pairs = [("REQUEST_METHOD", "GET"), ("HTTP_ACCEPT", "text/html"), ("HTTP_COOKIE", "a=1"), ("HTTP_HOST", "a.org"),
             ("HTTP_ACCEPT", "*/*"), ("HTTP_COOKIE", "b=2"), ("REQUEST_METHOD", "POST"), ("HTTP_ACCEPT", "x/y"),
             ("HTTP_HOST", "a.org:8080")]
    data = request_bytes(pairs)
    whole, _ = scan(data)
    expected = {"REQUEST_METHOD": "POST", "HTTP_ACCEPT": "text/html, */*, x/y", "HTTP_COOKIE": "a=1; b=2",
                "HTTP_HOST": "a.org:8080"}
    assert whole.params == reference_request(data)[2] == expected


def test_the_scanner_joins_params_and_body_split_over_records_with_padding():
    encoded = encode_params(cgi_params("POST", "/x", 20))
    data = (begin_request(3) + encode_record(FCGI_PARAMS, 3, encoded[:5]) + encode_record(FCGI_PARAMS, 3, encoded[5:])
            + encode_record(FCGI_PARAMS, 3) + encode_record(FCGI_STDIN, 3, b"0123456789")
            + encode_record(FCGI_STDIN, 3, b"abcdefghij") + encode_record(FCGI_STDIN, 3))
    whole, _ = scan(data)
    assert whole.params == cgi_params("POST", "/x", 20) and whole.body == b"0123456789abcdefghij"


def test_the_scanner_leaves_the_next_request_for_later():
    first, second = request_bytes(cgi_params("GET", "/a"), keep_conn=True), request_bytes(cgi_params("GET", "/b"))
    whole, left = scan(first + second)
    assert whole.params["REQUEST_URI"] == "/a" and left == len(second)


def test_one_scanner_reads_request_after_request_as_the_record_path_does():
    """A worker's scanner keeps the last request's names: each request's environ is still its own,
    whether its names are the last ones, others of the same length, fewer, repeated or none."""
    scanner = WholeRequestScanner(65536, 65536, 1024)
    sequence = [
        cgi_params("GET", "/first"),
        cgi_params("GET", "/second?x=1"),                # the same names, other values
        {"AB": "1", "CD": "2"},
        {"AX": "1", "CY": "2"},                          # names of the same length, not the same
        {"AB": "1"},                                     # fewer
        {"AB": "one", "CD": "two", "AB ": "three"},
        {},
        cgi_params("POST", "/form", 3),
    ]
    for params in sequence:
        data = request_bytes(params, b"abc" if "CONTENT_LENGTH" in params else b"")
        scanner.receive_buffer[:len(data)] = data
        taken, whole = scanner.scan_received(len(data))
        assert taken == len(data)
        assert (whole.request_id, whole.flags, whole.params, whole.body) == reference_request(data)
        assert list(whole.params) == list(params)  # in the order sent


def test_a_name_sent_twice_keeps_its_last_value_as_on_the_record_path():
    pairs = encode_params({"A": "1"}) + encode_params({"B": "2"}) + encode_params({"A": "3"})
    data = (begin_request(1) + encode_record(FCGI_PARAMS, 1, pairs) + encode_record(FCGI_PARAMS, 1)
            + encode_record(FCGI_STDIN, 1))
    whole, _ = scan(data)
    assert whole.params == reference_request(data)[2] == {"A": "3", "B": "2"}


def with_header_changed(data: bytes, record: int, **fields) -> bytes:
    """``data`` with field(s) of the header of its record number ``record`` changed."""
    pos = 0
    for _ in range(record):
        pos += 8 + HEADER.unpack_from(data, pos)[3] + HEADER.unpack_from(data, pos)[4]
    values = dict(zip(("version", "type", "request_id", "length", "padding"), HEADER.unpack_from(data, pos)))
    values.update(fields)
    return data[:pos] + HEADER.pack(*values.values()) + data[pos + 8:]


APACHE_LIKE = request_bytes(cgi_params("GET", "/hello"))


@pytest.mark.parametrize("data, why", [
    (APACHE_LIKE[:-8], "the empty STDIN has not arrived"),
    (APACHE_LIKE[:20], "cut inside the params"),
    (with_header_changed(APACHE_LIKE, 0, version=2), "another version (or an HTTP request line)"),
    (with_header_changed(APACHE_LIKE, 1, request_id=2), "params of another request"),
    (with_header_changed(APACHE_LIKE, 0, request_id=0), "request id 0"),
    (begin_request(1)[:8] + b"\0\2\0\0\0\0\0\0" + APACHE_LIKE[16:], "the authorizer role"),
    (request_bytes({"A": "x\0y"}), "a NUL inside a value"),
    (request_bytes(cgi_params("GET", "/" + "x" * 200)), "params over max_params"),
    (request_bytes(cgi_params("POST", "/", 300), b"b" * 300), "a body over max_body"),
    (begin_request(1) + encode_record(FCGI_ABORT_REQUEST, 1) + APACHE_LIKE[16:], "an ABORT between"),
    (begin_request(1) + encode_record(FCGI_PARAMS, 1, b"\x05\x01ab") + encode_record(FCGI_PARAMS, 1)
     + encode_record(FCGI_STDIN, 1), "a pair longer than its content"),
    (begin_request(1) + encode_record(FCGI_PARAMS, 1, b"\x85\x00") + encode_record(FCGI_PARAMS, 1)
     + encode_record(FCGI_STDIN, 1), "a four-byte length cut short"),
    (encode_record(FCGI_BEGIN_REQUEST, 1, b"\0\1\0\0\0\0\0\0\0") + APACHE_LIKE[16:], "BEGIN_REQUEST of 9 bytes"),
])
def test_the_scanner_leaves_anything_else_to_the_record_path(data, why):
    whole, left = scan(data, max_params=256, max_body=256)
    assert whole is None, why
    assert left == len(data)  # nothing consumed: the record path sees every byte


@pytest.mark.parametrize("cut, params_whole", [
    (20, False),                        # inside the params: nothing could run yet
    (len(APACHE_LIKE) - 16, False),     # the empty PARAMS record not yet here
    (len(APACHE_LIKE) - 8, True),       # params whole, the body's end still to come
])
def test_the_scanner_tells_whether_an_unfinished_request_has_its_params(cut, params_whole):
    """The whole-request lane waits for the body only briefly once the params are whole: the
    reference path would start the application then, and it may answer before the body comes."""
    scanner = WholeRequestScanner(65536, 65536, 1024)
    scanner.receive_buffer[:cut] = APACHE_LIKE[:cut]
    assert scanner.scan_received(cut) == (0, None)
    assert scanner.incomplete and scanner.params_whole is params_whole
