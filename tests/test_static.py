"""The HTTP flavour's reading of Range (RFC 9110 §14) and of the conditional fields (§13), by
their rules; test_http_flavour.py serves ranges to curl, test_site.py a resumed download."""

import pytest

from fcgi_backend.static import RangeNotSatisfiable, StaticFile, byte_range, precondition_status

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


def test_an_empty_file_is_sent_whole_whatever_range_is_asked():
    empty = StaticFile("/srv/site/webroot/empty.txt", 0, 1_700_000_000.0, 43)
    for header in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        assert byte_range(header, 0, None, empty) is None


def test_the_range_unit_is_read_whatever_its_case():
    assert byte_range("Bytes=0-9", FILE.size, None, FILE) == (0, 9)


NOW = FILE.mtime + 3600
BEFORE = "Tue, 14 Nov 2023 22:13:19 GMT"  # a second before FILE changed
AT = FILE.last_modified
LATER = "Tue, 14 Nov 2023 22:30:00 GMT"  # after FILE changed, before NOW
FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"


@pytest.mark.parametrize("fields, status", [
    ({}, 0),
    # If-Match: strong comparison; "*" names any file there is
    ({"if_match": FILE.etag}, 0), ({"if_match": f'"x", {FILE.etag}'}, 0), ({"if_match": "*"}, 0),
    ({"if_match": '"x"'}, 412), ({"if_match": "W/" + FILE.etag}, 412),
    # If-Unmodified-Since: only without If-Match; a value that is no date is ignored
    ({"if_unmodified_since": AT}, 0), ({"if_unmodified_since": LATER}, 0), ({"if_unmodified_since": BEFORE}, 412),
    ({"if_unmodified_since": "yesterday"}, 0), ({"if_match": FILE.etag, "if_unmodified_since": BEFORE}, 0),
    # If-None-Match: weak comparison
    ({"if_none_match": FILE.etag}, 304), ({"if_none_match": "W/" + FILE.etag}, 304), ({"if_none_match": "*"}, 304),
    ({"if_none_match": f'"x", {FILE.etag}'}, 304), ({"if_none_match": '"x"'}, 0),
    # If-Modified-Since: only without If-None-Match; not a date, or one still to come, is ignored
    ({"if_modified_since": AT}, 304), ({"if_modified_since": LATER}, 304), ({"if_modified_since": BEFORE}, 0),
    ({"if_modified_since": FUTURE}, 0), ({"if_modified_since": "yesterday"}, 0),
    ({"if_none_match": '"x"', "if_modified_since": AT}, 0),
    # 412 comes first
    ({"if_match": '"x"', "if_none_match": FILE.etag}, 412), ({"if_unmodified_since": BEFORE, "if_modified_since": AT}, 412),
])
def test_preconditions_in_rfc_9110_order(fields, status):
    given = {"if_match": None, "if_unmodified_since": None, "if_none_match": None, "if_modified_since": None, **fields}
    assert precondition_status(FILE, now=NOW, **given) == status
