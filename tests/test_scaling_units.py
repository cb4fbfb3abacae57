"""The pure parts of running as one member of many: the HTTP health check on the FastCGI port, the
allow-list of peers, and the balancer vhost `apache-conf --balancer` writes."""

from pathlib import Path

import pytest

from fcgi_backend.allowlist import AllowList
from fcgi_backend.health import health_answer
from fcgi_backend.vhost import ApacheConfError, vhost_for


def test_the_ping_path_answers_pong_over_http_and_nothing_else_does():
    answer = health_answer(b"GET /fcgi-ping HTTP/1.0\r\nHost: 10.0.0.11\r\n\r\n", "/fcgi-ping")
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and answer.endswith(b"\r\n\r\npong\n")
    assert health_answer(b"HEAD /fcgi-ping?x=1 HTTP/1.1\r\n\r\n", "/fcgi-ping").endswith(b"Connection: close\r\n\r\n")
    assert health_answer(b"GET /admin HTTP/1.0\r\n\r\n", "/fcgi-ping").startswith(b"HTTP/1.0 404")
    assert health_answer(b"GET /fcgi-ping HTTP/1.0\r\n\r\n", "").startswith(b"HTTP/1.0 404")  # no ping path set
    assert health_answer(b"\x01\x01\x00\x01\x00\x08\x00\x00", "/fcgi-ping") is None  # FastCGI: not for this
    assert health_answer(b"POST /fcgi-ping HTTP/1.0\r\n\r\n", "/fcgi-ping") is None
    assert health_answer(b"GET /fcgi-ping", "/fcgi-ping") is None  # no whole request line


@pytest.mark.parametrize("text, address, allowed", [
    ("10.0.0.1", "10.0.0.1", True),
    ("10.0.0.1", "10.0.0.2", False),
    ("10.0.0.1, 10.0.1.0/24", "10.0.1.77", True),
    ("10.0.1.0/24", "::ffff:10.0.1.5", True),   # from a dual-stack listener
    ("fd00::/64", "fd00::5", True),
    ("fd00::/64", "10.0.0.1", False),
    ("10.0.0.1", "not-an-address", False),
])
def test_the_allow_list_takes_addresses_and_networks(text, address, allowed):
    assert AllowList(text).allows(address) is allowed


def test_a_bad_allow_list_entry_is_named():
    with pytest.raises(ValueError, match="'10.0.0.300' is not an address or network"):
        AllowList("10.0.0.1, 10.0.0.300")


def test_the_balancer_vhost_lists_members_standbys_and_health_checks():
    text = vhost_for(Path("/var/www/shop"), port=8080, balancer=["10.0.0.11:9000", "10.0.0.12:9000"],
                     standby=["10.0.0.13:9000"], ping_path="/ping")
    members = [line.strip() for line in text.splitlines() if line.strip().startswith("BalancerMember")]
    assert [m.split()[1] for m in members] == ['"fcgi://10.0.0.11:9000"', '"fcgi://10.0.0.12:9000"',
                                                '"fcgi://10.0.0.13:9000"']
    assert all("hcmethod=GET hcuri=/ping" in m and "flushpackets=auto" in m for m in members)
    assert members[2].endswith("status=+H") and not members[0].endswith("status=+H")
    assert "lbmethod=bybusyness" in text and "Require local" in text and "${" not in text
    name = text.split('<Proxy "balancer://')[1].split('"')[0]
    assert name.startswith("shop-") and text.count(f"proxy:balancer://{name}") == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"balancer": ["10.0.0.11"]}, "give HOST:PORT"),
    ({"standby": ["10.0.0.13:9000"]}, "a standby needs --balancer members"),
    ({"balancer": ["10.0.0.11:9000"], "connector": True}, "not with --connector"),
])
def test_bad_balancer_arguments_are_refused(kwargs, message):
    with pytest.raises(ApacheConfError, match=message):
        vhost_for(Path("/var/www/shop"), **kwargs)
