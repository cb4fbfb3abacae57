"""The HTTP flavour's reading of Range (RFC 9110 §14), by its rules; test_http_flavour.py serves
ranges to curl."""

import pytest

from fcgi_backend.static import RangeNotSatisfiable, StaticFile, byte_range

FILE = StaticFile("/srv/site/webroot/a.bin", 1000, 1_700_000_000.0, 42)


@pytest.mark.parametrize("header, span", [
    ("bytes=0-9", (0, 9)), ("bytes=990-", (990, 999)), ("bytes=-10", (990, 999)), ("bytes=0-99999", (0, 999)),
    ("bytes=-5000", (0, 999)),
    # not a range this server reads: the whole file (RFC 9110 lets a server ignore Range)
    ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=", None), ("bytes=-", None), ("bytes=9-1", None),
    ("bytes=--1", None), ("bytes=1_0-20", None), ("bytes=\u0661-2", None), ("bytes=+1-2", None), (None, None),
])
def test_one_range_of_ascii_digits_is_served_anything_else_is_the_whole_file(header, span):
    assert byte_range(header, FILE.size, None, FILE) == span


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, FILE.size, None, FILE)


def test_if_range_must_match_the_etag_or_date_exactly():
    assert byte_range("bytes=0-9", FILE.size, FILE.etag, FILE) == (0, 9)
    assert byte_range("bytes=0-9", FILE.size, FILE.last_modified, FILE) == (0, 9)
    assert byte_range("bytes=0-9", FILE.size, "W/" + FILE.etag, FILE) is None  # a weak tag never matches
