"""The client's address behind a trusted reverse proxy (``X-Forwarded-For``), for the access log
and the ASGI scope.

One rule for every request ``mlgate serve`` reads (uvicorn's proxy-headers middleware is off,
so the rule is not applied twice and the predict routes see the same client as the rest):
when the peer is a trusted proxy, the client is the right-most address of ``X-Forwarded-For``
that is not itself a trusted proxy; otherwise ``X-Forwarded-For`` is ignored (anyone can send
it). Trusted proxies are ``MLGATE_HTTP__FORWARDED_ALLOW_IPS`` (addresses or networks, ``*`` for
any; default ``127.0.0.1``, as uvicorn's).
"""

from __future__ import annotations

import ipaddress

__all__ = ["TrustedProxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Which peers may tell the client's address.

    >>> TrustedProxies(["127.0.0.1"]).client("127.0.0.1", "203.0.113.7, 127.0.0.1")
    '203.0.113.7'
    >>> TrustedProxies(["127.0.0.1"]).client("198.51.100.2", "203.0.113.7")
    '198.51.100.2'
    """

    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self._hosts: set[str] = set()
        self._networks: list[_Network] = []
        for entry in allowed:
            if entry == "*":
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry)  # a name, e.g. a unix socket's peer

    def trusts(self, host: str | None) -> bool:
        if host is None:
            return False
        if self.any or host in self._hosts:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def client(self, peer: str | None, forwarded_for: str) -> str | None:
        """The client of a request from ``peer`` that carried ``X-Forwarded-For: forwarded_for``."""
        if not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop[:64]  # what a proxy forwards is still client input: bounded
        return hops[0][:64] if hops else peer
