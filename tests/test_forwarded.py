"""Who the client is behind trusted proxies (fcgi_backend/forwarded.py), by its rules; the HTTP
flavour's tests put a real nginx in front (test_http_flavour.py)."""

import pytest

from fcgi_backend.allowlist import AllowList
from fcgi_backend.forwarded import client_address, forwarded_scheme

TRUSTED = AllowList("127.0.0.1, ::1, 10.0.0.0/8")


@pytest.mark.parametrize("peer, forwarded_for, client", [
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),             # one proxy
    ("127.0.0.1", "6.6.6.6, 203.0.113.7", "203.0.113.7"),    # the client's own claim, left of it, not believed
    ("127.0.0.1", "203.0.113.7, 10.1.2.3", "203.0.113.7"),   # two proxies of ours
    ("127.0.0.1", "10.1.2.3, 10.4.5.6", "10.1.2.3"),         # all ours: the farthest
    ("127.0.0.1", "unknown, 10.1.2.3", "10.1.2.3"),          # not an address: the nearest known
    ("127.0.0.1", "2001:db8::5", "2001:db8::5"),
    ("127.0.0.1", None, "127.0.0.1"),                        # a request from the proxy's host itself
    ("192.0.2.9", "6.6.6.6", "192.0.2.9"),                   # not a trusted peer: the header is anyone's
])
def test_the_client_is_the_first_untrusted_address_from_the_right(peer, forwarded_for, client):
    assert client_address(TRUSTED, peer, forwarded_for) == client


@pytest.mark.parametrize("value, scheme", [("https", "https"), (" HTTP ", "http"), ("ftp", None), ("", None),
                                           (None, None), ("https, http", None)])
def test_only_http_or_https_is_taken_as_the_scheme(value, scheme):
    assert forwarded_scheme(value) == scheme
