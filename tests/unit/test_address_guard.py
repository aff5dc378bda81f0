"""The SSRF guard's verdicts on addresses, its allow-list; how source URIs are checked and
redacted."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from importd_server.config import Settings
from importd_server.engine.remote import RemoteLimits, RemoteSources, redact, source_file_name
from importd_server.errors import ImportdError, PermissionDenied
from importd_server.net.guard import AddressGuard, GuardedResolver, ip_literal

DEFAULT = AddressGuard()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 around 169.254.169.254
        ("100.64.0.1", "carrier-grade NAT"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("192.0.2.1", "reserved"),  # documentation
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::7f00:1", "reserved"),  # IPv4-compatible, deprecated
    ],
)
def test_non_public_addresses_are_refused_by_default_naming_their_kind(
    address: str, kind: str
) -> None:
    assert DEFAULT.refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.refusal(ipaddress.ip_address(address)) is None


NAT64 = int(ipaddress.IPv6Address("64:ff9b::"))


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_wrapped_in_ipv6_gets_the_verdict_of_the_address(
    address: ipaddress.IPv4Address,
) -> None:
    verdict = DEFAULT.refusal(address)
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    nat64 = ipaddress.IPv6Address(NAT64 | int(address))
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80))
    for wrapped in (mapped, nat64, sixtofour):
        assert DEFAULT.refusal(wrapped) == verdict, wrapped


@given(
    st.one_of(
        *(
            st.ip_addresses(network=network)
            for network in (
                "127.0.0.0/8",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
                "fe80::/10",
                "::1/128",
                "224.0.0.0/4",
                "ff00::/8",
            )
        )
    )
)
def test_every_address_of_a_refused_network_is_refused(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert DEFAULT.refusal(address) is not None
    with pytest.raises(PermissionDenied) as caught:
        DEFAULT.check(address)
    assert caught.value.reason == "ADDRESS_REFUSED"


def test_the_allow_list_allows_its_networks_and_host_names_and_nothing_else() -> None:
    guard = AddressGuard.from_allow_list("127.0.0.1, [::1] 10.20.0.0/16,minio.internal.")
    loopback, other = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("127.0.0.2")
    assert guard.refusal(loopback) is None
    assert guard.refusal(ipaddress.ip_address("::1")) is None
    assert guard.refusal(ipaddress.ip_address("10.20.9.9")) is None
    assert guard.refusal(other) == "loopback"
    assert guard.refusal(other, "minio.internal") is None  # a named host, wherever it is
    assert guard.refusal(other, "MINIO.internal.") is None
    assert guard.refusal(other, "other.internal") == "loopback"
    assert guard.allows_host("127.0.0.1") and guard.allows_host("minio.internal")
    assert not guard.allows_host("127.0.0.2") and not guard.allows_host("example.com")


@pytest.mark.parametrize("allow_list", ["169.254.0.0/16", "0.0.0.0/0, ::/0", "metadata.internal"])
def test_metadata_addresses_are_refused_whatever_the_allow_list_says(allow_list: str) -> None:
    guard = AddressGuard.from_allow_list(allow_list)
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert guard.refusal(ipaddress.ip_address(address), "metadata.internal") == (
            "cloud metadata"
        )


@pytest.mark.parametrize("entry", ["127.1", "http://x.com", "bad host!", "x.com:8080", "a..b"])
def test_an_allow_list_entry_that_is_no_host_or_network_is_a_settings_error(entry: str) -> None:
    with pytest.raises(ValueError, match="IMPORTD_REMOTE_ALLOW_HOSTS"):
        AddressGuard.from_allow_list(entry)


def test_a_typo_in_the_allow_list_setting_stops_the_start_up() -> None:
    assert Settings.from_env({"IMPORTD_REMOTE_ALLOW_HOSTS": "127.0.0.1, minio.lan"})
    with pytest.raises(ValueError, match="'lan!' is neither"):
        Settings.from_env({"IMPORTD_REMOTE_ALLOW_HOSTS": "127.0.0.1,minio lan!"})


@pytest.mark.parametrize("host", ["0x7f.1", "2130706433", "127.1", "017700000001", "0", "1.2.3"])
def test_legacy_ip_spellings_are_refused_as_such(host: str) -> None:
    with pytest.raises(ValueError, match="non-standard spelling"):
        ip_literal(host)


@pytest.mark.parametrize(
    ("host", "address"),
    [("[::1]", "::1"), ("127.0.0.1", "127.0.0.1"), ("fe80::1%25eth0", "fe80::1%eth0")],
)
def test_standard_ip_spellings_are_literals(host: str, address: str) -> None:
    assert ip_literal(host) == ipaddress.ip_address(address)


def test_host_names_are_not_literals() -> None:
    assert ip_literal("example.com") is None


class _Answers(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_the_resolver_hands_on_only_allowed_addresses() -> None:
    resolver = GuardedResolver(DEFAULT, _Answers("10.0.0.1", "8.8.8.8", "::1"))
    assert [r["host"] for r in await resolver.resolve("mixed.example", 443)] == ["8.8.8.8"]
    with pytest.raises(PermissionDenied, match=r"mixed\.example resolves to 10\.0\.0\.1"):
        await resolver.check_every_address("mixed.example", 443)


async def test_a_name_with_no_allowed_address_is_refused_naming_the_first() -> None:
    resolver = GuardedResolver(DEFAULT, _Answers("192.168.0.7", "::1"))
    with pytest.raises(PermissionDenied) as caught:
        await resolver.resolve("printer.lan", 80)
    assert caught.value.message.startswith(
        "printer.lan resolves to 192.168.0.7, which is a private address"
    )
    assert caught.value.metadata == {
        "host": "printer.lan",
        "address": "192.168.0.7",
        "kind": "private",
    }


URL_PART = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(
    scheme=st.sampled_from(["https", "http", "s3", "file"]),
    user=URL_PART,
    host=st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True),
    path=URL_PART.map(lambda p: p.replace("?", "").replace("#", "")),
    query=URL_PART,
    fragment=URL_PART,
)
def test_a_redacted_uri_keeps_no_credentials_query_or_fragment(
    scheme: str, user: str, host: str, path: str, query: str, fragment: str
) -> None:
    credentials = f"SECRET{user.replace('/', '').replace('?', '').replace('#', '')}@"
    uri = f"{scheme}://{credentials}{host}/{path}?SIG{query}#FRAG{fragment}"
    shown = redact(uri)
    assert shown == f"{scheme}://{host}/{path}"
    assert "SECRET" not in shown and "SIG" not in shown and "FRAG" not in shown
    assert redact(shown) == shown


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("https://h.example/exports/contacts.csv?X-Amz-Signature=abc", "contacts.csv"),
        ("https://h.example/a%20b.jsonl#part", "a b.jsonl"),
        ("s3://bucket/default/in/people.csv", "people.csv"),
        ("https://h.example/dir/", "dir"),
        ("https://h.example", "h.example"),
    ],
)
def test_a_source_s_file_name_is_its_last_path_segment_without_the_query(
    uri: str, name: str
) -> None:
    assert source_file_name(uri) == name


SOURCES = RemoteSources(
    AddressGuard(),
    RemoteLimits(max_file_bytes=10**6, connect_seconds=1, read_seconds=1, total_seconds=1),
    s3_buckets=frozenset({"imports"}),
)


@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(
            "{}://{}/{}".format,
            st.sampled_from(["https", "http", "s3", "HTTPS"]),
            st.text(max_size=25),
            st.text(max_size=25),
        ),
    )
)
def test_any_source_uri_is_accepted_or_refused_with_a_domain_error(uri: str) -> None:
    # Opening only checks the URI; nothing connects until the pieces are read.
    try:
        SOURCES.open(uri, "default")
    except ImportdError as error:
        assert error.reason
