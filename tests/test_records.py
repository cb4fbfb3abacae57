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
