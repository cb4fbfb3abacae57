"""A list of peers by address: who may use a TCP listener (FastCGI has no authentication, so a
backend listening on a network takes connections only from its web servers, php-fpm's
``listen.allowed_clients``), and which proxies the HTTP flavour believes (forwarded.py).
``"10.0.0.5, 10.0.1.0/24"``: addresses or networks, IPv4 or IPv6."""

from __future__ import annotations

import ipaddress

LOOPBACK = "127.0.0.1, ::1"  # the host itself: a proxy or a monitor beside the server


class AllowList:
    def __init__(self, text: str, setting: str = "allowed_clients") -> None:
        self.networks = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{setting}: {item!r} is not an address or network") from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, address: str) -> bool:
        """``address`` (as the socket reports it, or a proxy wrote it) is in the list."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.5 from a dual-stack socket
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
