"""The SSRF guard: may importd connect to this address for a caller? And an aiohttp resolver
that asks it about the very addresses a connection is then made to (no DNS rebinding between
a check and the connection)."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from importd_server.errors import PermissionDenied

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "IMPORTD_REMOTE_ALLOW_HOSTS"

# Cloud metadata services hand out the machine's own credentials: never reachable, whatever
# the allow-list says.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254")
)

# The kinds of address refused by default, named as errors say them; the first match wins.
_REFUSED_KINDS: tuple[tuple[str, tuple[Network, ...]], ...] = tuple(
    (kind, tuple(ipaddress.ip_network(n) for n in networks))
    for kind, networks in (
        ("unspecified", ("0.0.0.0/8", "::/128")),
        ("loopback", ("127.0.0.0/8", "::1/128")),
        ("link-local", ("169.254.0.0/16", "fe80::/10")),
        ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
        ("carrier-grade NAT", ("100.64.0.0/10",)),
        ("unique-local", ("fc00::/7",)),
        ("multicast", ("224.0.0.0/4", "ff00::/8")),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def ip_literal(host: str) -> Address | None:
    """The address a URL's host spells in standard form (brackets and zone allowed), or None
    for a host name. Legacy spellings that resolvers accept (`127.1`, `0x7f.1`,
    `2130706433`) are a ValueError: they hide an address from anyone reading the URL."""
    bare = unquote(host).strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:
        socket.inet_aton(bare)
    except OSError:
        return None
    raise ValueError(f"{host} is an IP address in a non-standard spelling; write it dotted")


def is_host_name(host: str) -> bool:
    """Whether `host` is a plausible DNS name (ASCII labels, IDNA already applied)."""
    return len(host) <= 253 and _HOST_NAME.fullmatch(host.lower().rstrip(".")) is not None


@dataclass(frozen=True)
class AddressGuard:
    """Refuses loopback, private, link-local, carrier-grade NAT, unique-local, multicast,
    unspecified and other non-public addresses, unless allow-listed by host name or network;
    metadata addresses always."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()

    @classmethod
    def from_allow_list(cls, allow_list: str | None) -> AddressGuard:
        """A guard allowing the hosts and networks of a comma- or space-separated list, e.g.
        `127.0.0.1, 10.1.0.0/16, minio.internal`; ValueError for an entry that is neither."""
        hosts: set[str] = set()
        networks: list[Network] = []
        for entry in (allow_list or "").replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            try:
                spelled = ip_literal(entry)
            except ValueError as error:
                raise ValueError(f"{ALLOW_SETTING}: {error}") from None
            if spelled is not None or not is_host_name(entry):
                raise ValueError(f"{ALLOW_SETTING}: {entry!r} is neither a host name nor a CIDR")
            hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        """Whether `host` itself is allow-listed: by name, or as an address in an allowed
        network (plain http:// is only for these)."""
        if host.lower().rstrip(".") in self.allowed_hosts:
            return True
        try:
            address = ip_literal(host)
        except ValueError:
            return False
        return address is not None and self._in_allowed_network(address)

    def refusal(self, address: Address, host: str | None = None) -> str | None:
        """The kind of address that makes connecting to `address` (which `host` resolved
        to) refused, e.g. "loopback"; None when it is allowed."""
        target = _embedded_ipv4(address) or address
        if address in METADATA_ADDRESSES or target in METADATA_ADDRESSES:
            return "cloud metadata"
        if host is not None and host.lower().rstrip(".") in self.allowed_hosts:
            return None
        if self._in_allowed_network(address) or self._in_allowed_network(target):
            return None
        for kind, networks in _REFUSED_KINDS:
            if any(target in network for network in networks):
                return kind
        if not target.is_global or target.is_reserved:
            return "reserved"
        return None

    def check(self, address: Address, host: str | None = None) -> None:
        """Raises PermissionDenied (ADDRESS_REFUSED) unless connecting to `address` is allowed."""
        kind = self.refusal(address, host)
        if kind is None:
            return
        named = str(address) if host is None or host.strip("[]") == str(address) else None
        where = named or f"{host} resolves to {address}, which"
        raise PermissionDenied(
            f"{where} is a {kind} address; importd connects only to public addresses"
            f" and to those allowed by {ALLOW_SETTING}",
            reason="ADDRESS_REFUSED",
            metadata={"host": host or str(address), "address": str(address), "kind": kind},
        )

    def _in_allowed_network(self, address: Address) -> bool:
        return any(address in network for network in self.allowed_networks)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64): where packets end up."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class GuardedResolver(AbstractResolver):
    """Resolves host names as `base` does and hands aiohttp only the addresses the guard
    allows, so the addresses checked are exactly those connected to. A name with no allowed
    address is PermissionDenied. (aiohttp does not resolve IP literals: check those first.)"""

    def __init__(self, guard: AddressGuard, base: AbstractResolver | None = None) -> None:
        self._guard = guard
        self._base = base or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._base.resolve(host, port, family)
        allowed = [r for r in results if self._guard.refusal(_address(r), host) is None]
        if not allowed and results:
            self._guard.check(_address(results[0]), host)
        return allowed

    async def check_every_address(self, host: str, port: int) -> None:
        """PermissionDenied unless every address `host` resolves to is allowed: for clients
        that resolve names themselves (obstore) and may connect to any of them."""
        for result in await self._base.resolve(host, port, socket.AF_UNSPEC):
            self._guard.check(_address(result), host)

    async def close(self) -> None:
        await self._base.close()


def _address(result: ResolveResult) -> Address:
    return ipaddress.ip_address(result["host"])
