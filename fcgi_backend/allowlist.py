"""Which peers may use a TCP listener: FastCGI has no authentication, so a backend listening on a
network takes connections only from its web servers (php-fpm's ``listen.allowed_clients``).
``allowed_clients = "10.0.0.5, 10.0.1.0/24"``: addresses or networks, IPv4 or IPv6."""

from __future__ import annotations

import ipaddress


class AllowList:
    def __init__(self, text: str) -> None:
        self.networks = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"allowed_clients: {item!r} is not an address or network") from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, address: str) -> bool:
        """``address`` (as the socket reports it) is one of the allowed clients."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.5 from a dual-stack socket
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
