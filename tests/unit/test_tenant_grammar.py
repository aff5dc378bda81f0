"""The tenant grammar, as JWT claims and the static token table meet it, and the strict
loading of that table: every value is either a tenant of the grammar or a precise refusal."""

from __future__ import annotations

import string
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd_server.auth import (
    ALL_SCOPES,
    READ,
    Authenticator,
    StaticTokensError,
    load_static_tokens,
    parse_static_tokens,
)
from importd_server.errors import Unauthenticated
from importd_server.tenants import InvalidTenant, parse_tenant

SECRET = "a-shared-secret-for-the-tenant-grammar-tests"
ALLOWED = set(string.ascii_lowercase + string.digits + "._-")
# An error may name the problem and one character, never repeat a long value.
MAX_MESSAGE = 200


def is_tenant(value: object) -> bool:
    """The grammar restated without a regex: 1-63 of [a-z0-9._-], first one a-z or 0-9."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 63
        and value[0] in string.ascii_lowercase + string.digits
        and set(value) <= ALLOWED
    )


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
# Strings near the grammar's edges: its own alphabet with a few intruders, at every length.
tenant_like = st.text(alphabet="az09._-A/\\ \x00\né", max_size=70) | st.from_regex(
    r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True
)
hostile = st.sampled_from(
    ["", ".", "..", "../", "/", "a/../b", "acme\n", "-acme", "_acme", "a" * 64, "x" * 3600, "7"]
)
tenant_values = hostile | tenant_like | json_values


@settings(deadline=None)  # no timing: the machine may be busy
@given(tenant_values)
def test_a_tenant_is_a_string_of_the_grammar_and_anything_else_is_refused_briefly(
    value: Any,
) -> None:
    if is_tenant(value):
        assert parse_tenant(value) == value
    else:
        with pytest.raises(InvalidTenant) as refused:
            parse_tenant(value)
        assert len(str(refused.value)) <= MAX_MESSAGE


def bearer_jwt(**claims: Any) -> list[tuple[str, str]]:
    payload = {"aud": "importd", "exp": int(time.time()) + 600, **claims}
    return [("authorization", f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}")]


AUTHENTICATOR = Authenticator(hs256_secrets=[SECRET])


@settings(deadline=None)  # no timing: the machine may be busy
@given(tenant_values)
def test_a_jwt_tenant_claim_is_a_tenant_of_the_grammar_or_unauthenticated(value: Any) -> None:
    metadata = bearer_jwt(tenant=value)
    if is_tenant(value):
        assert AUTHENTICATOR.authenticate(metadata).tenant == value
    else:
        with pytest.raises(Unauthenticated) as refused:
            AUTHENTICATOR.authenticate(metadata)
        assert refused.value.reason == "INVALID_TENANT_CLAIM"
        assert len(refused.value.message) <= MAX_MESSAGE


def test_a_jwt_without_a_tenant_claim_is_unauthenticated_for_that_reason() -> None:
    with pytest.raises(Unauthenticated) as refused:
        AUTHENTICATOR.authenticate(bearer_jwt())
    assert refused.value.reason == "INVALID_TENANT_CLAIM"


def test_the_number_7_is_not_the_tenant_7() -> None:
    assert AUTHENTICATOR.authenticate(bearer_jwt(tenant="7")).tenant == "7"
    with pytest.raises(Unauthenticated) as refused:
        AUTHENTICATOR.authenticate(bearer_jwt(tenant=7))
    assert refused.value.message == (
        "the token's tenant claim must be a string (1-63 characters of a-z, 0-9, '.', '_'"
        " and '-', starting with a-z or 0-9), not a number"
    )


@settings(deadline=None)  # no timing: the machine may be busy
@given(json_values)
def test_scope_claims_of_any_shape_grant_their_words_or_are_unauthenticated(
    value: Any,
) -> None:
    for claim in ("scope", "scopes"):
        metadata = bearer_jwt(tenant="acme", **{claim: value})
        well_formed = (
            isinstance(value, str)
            if claim == "scope"
            else isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
        if well_formed:
            words = value.split() if claim == "scope" else value
            assert AUTHENTICATOR.authenticate(metadata).scopes == frozenset(words)
        else:
            with pytest.raises(Unauthenticated) as refused:
                AUTHENTICATOR.authenticate(metadata)
            assert refused.value.reason == "INVALID_SCOPE_CLAIM"


# The values a TOML document can hold.
toml_values = st.recursive(
    st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=4,
)
GOOD_ENTRY = {
    "token": "dev-acme",
    "tenant": "acme",
    "scopes": [READ],
    "live": True,
    "name": "ci",
}


def first_bad_field(entry: dict[str, Any]) -> str | None:
    """The field the loader must name, in the order it checks them; None: the entry is good."""
    unknown = [key for key in entry if key not in GOOD_ENTRY]
    if unknown:
        return unknown[0]
    checks = {
        "token": lambda v: isinstance(v, str) and v != "" and all("!" <= c <= "~" for c in v),
        "tenant": is_tenant,
        "scopes": lambda v: (
            isinstance(v, list) and all(isinstance(s, str) and s in ALL_SCOPES for s in v)
        ),
        "live": lambda v: isinstance(v, bool),
        "name": lambda v: isinstance(v, str),
    }
    for required in ("token", "tenant"):
        if required not in entry:
            return required
    for field, check in checks.items():
        if field in entry and not check(entry[field]):
            return field
    return None


@settings(deadline=None)  # no timing: the machine may be busy
@given(
    st.dictionaries(
        st.sampled_from([*GOOD_ENTRY, "tenants", "scope"]),
        toml_values | st.sampled_from([*GOOD_ENTRY.values(), "false", "globex", ["imports:x"]]),
    ),
    st.booleans(),
)
def test_a_static_entry_loads_exactly_as_written_or_names_its_first_bad_field(
    changes: dict[str, Any], keep_others: bool
) -> None:
    entry = {**GOOD_ENTRY, **changes} if keep_others else changes
    bad = first_bad_field(entry)
    if bad is None:
        table = parse_static_tokens({"tokens": [entry]}, "tokens.toml")
        principal = table[entry["token"]]
        assert principal.tenant == entry["tenant"]
        assert principal.scopes == frozenset(entry.get("scopes", ALL_SCOPES))
        assert principal.live is entry.get("live", False)
    else:
        with pytest.raises(StaticTokensError) as refused:
            parse_static_tokens({"tokens": [entry]}, "tokens.toml")
        message = str(refused.value)
        assert message.startswith("tokens.toml: [[tokens]] entry 1")
        assert f", field {bad!r}" in message or f", field {bad}:" in message
        assert len(message) <= MAX_MESSAGE


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            'token = "t"\ntenant = "acme"\nlive = "false"',
            "[[tokens]] entry 2, field live: must be true or false, not the string 'false'",
        ),
        (
            'token = "t"\ntenant = "acme"\nscopes = "imports:read"',
            "[[tokens]] entry 2, field scopes: must be a list of scopes (imports:read,"
            " imports:write)",
        ),
        (
            'token = "t"\ntenant = "acme"\nscopes = ["imports:admin"]',
            "[[tokens]] entry 2, field scopes: 'imports:admin' is not a scope (imports:read,"
            " imports:write)",
        ),
        (
            'token = "t"\ntenant = ".."\nname = "bad"',
            "[[tokens]] entry 2 ('bad'), field tenant: must start with a-z or 0-9, not '.'",
        ),
        (
            'token = "t"\ntenant = "acme"\nliv = true',
            "[[tokens]] entry 2, field 'liv': unknown; an entry has token, tenant, scopes, live,"
            " name",
        ),
        (
            'token = "dev"\ntenant = "acme"',
            "[[tokens]] entry 2, field token: the same token as entry 1",
        ),
        (
            'token = "two words"\ntenant = "acme"',
            "[[tokens]] entry 2, field token: must be a non-empty string of printable ASCII without spaces",
        ),
        ('tenant = "acme"', "[[tokens]] entry 2, field token: missing"),
    ],
    ids=[
        "live-as-string",
        "scopes-as-string",
        "unknown-scope",
        "dotdot-tenant",
        "unknown-key",
        "repeated-token",
        "token-with-space",
        "no-token",
    ],
)
def test_a_bad_static_table_refuses_to_load_naming_the_entry_and_the_field(
    tmp_path: Path, entry: str, message: str
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[tokens]]\ntoken = "dev"\ntenant = "acme"\n\n[[tokens]]\n{entry}\n')
    with pytest.raises(StaticTokensError) as refused:
        load_static_tokens(path)
    assert str(refused.value) == f"{path}: {message}"


def test_the_static_table_refuses_a_misspelt_table_and_a_file_that_is_not_toml(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('[[token]]\ntoken = "dev"\ntenant = "acme"\n')
    with pytest.raises(
        StaticTokensError, match=r"unknown key 'token'; the table is \[\[tokens\]\]"
    ):
        load_static_tokens(path)
    path.write_text("[[tokens]\n")
    with pytest.raises(StaticTokensError, match="not valid TOML"):
        load_static_tokens(path)


def test_a_static_entry_with_defaults_is_a_test_token_with_every_scope() -> None:
    table = parse_static_tokens({"tokens": [{"token": "t", "tenant": "acme"}]}, "tokens.toml")
    principal = table["t"]
    assert (principal.tenant, principal.scopes, principal.live) == ("acme", ALL_SCOPES, False)
    assert principal.subject == "static token"
