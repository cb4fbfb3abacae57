"""The Cookie header as browsers send it (RFC 6265, section 4.2) and as they get it wrong."""

import pytest

from fcgi_backend.request import parse_cookie_header


@pytest.mark.parametrize("header, expected", [
    ("", {}),
    ("a=1", {"a": "1"}),
    ("a=1; b=2", {"a": "1", "b": "2"}),
    ("a=1;b=2", {"a": "1", "b": "2"}),                       # no space after ";": still two
    ('a="quoted value"', {"a": "quoted value"}),              # DQUOTE cookie-value
    ("a=", {"a": ""}),
    ("a=x=y", {"a": "x=y"}),                                  # "=" inside the value
    ("a=1; a=2", {"a": "1"}),                                 # the most specific (first) wins
    ("junk; a=1; =2; ;", {"a": "1"}),                         # pairs without a name or "=" skipped
    ("fcgi_session=" + "A" * 43 + "; theme=dark", {"fcgi_session": "A" * 43, "theme": "dark"}),
])
def test_cookie_header(header, expected):
    assert parse_cookie_header(header) == expected
