"""Behind a reverse proxy (nginx, Caddy, a load balancer) the HTTP flavour's peer is the proxy:
the client's address and whether it came over HTTPS are in the headers the proxy adds,
``X-Forwarded-For`` and ``X-Forwarded-Proto``. Anyone can send those, so they are believed only
from a peer in ``forwarded_allow_ips`` (gunicorn's setting, and its default: the loopback
addresses, where a proxy on the same host connects from).

The client is found as Apache's mod_remoteip finds it: from the right of X-Forwarded-For, past
every trusted proxy, the first address that is not one; what a client wrote to the left of that
is its own claim and is not believed.
"""

from __future__ import annotations

import ipaddress

from .allowlist import AllowList


def client_address(trusted: AllowList, peer: str, forwarded_for: str | None) -> str:
    """The client's address for a request that came from ``peer`` with ``forwarded_for``."""
    client = peer
    hops = [hop.strip() for hop in forwarded_for.split(",")] if forwarded_for else []
    while hops and trusted.allows(client):
        hop = hops.pop()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # not an address ("unknown", a port appended): the nearest proxy is all that is known
        client = hop
    return client


def forwarded_scheme(forwarded_proto: str | None) -> str | None:
    """"https" or "http" as the proxy says the client came, else None."""
    scheme = (forwarded_proto or "").strip().lower()
    return scheme if scheme in ("http", "https") else None
