"""Who may do what: bearer tokens (JWTs signed HS256 or RS256, or a static table for
development) become a Principal: a tenant, scopes, and whether the token is live or test."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import structlog

from importd_server.config import Settings
from importd_server.errors import PermissionDenied, Unauthenticated, excerpt
from importd_server.tenants import InvalidTenant, Tenant, parse_tenant, value_kind

log = structlog.get_logger(__name__)

READ = "imports:read"
WRITE = "imports:write"
ALL_SCOPES = frozenset({READ, WRITE})


@dataclass(frozen=True)
class Principal:
    """The caller, as its token says: its tenant, scopes, and live (or test) mode."""

    tenant: Tenant
    scopes: frozenset[str]
    live: bool
    subject: str = ""

    def require(self, scope: str) -> None:
        """PERMISSION_DENIED unless the token grants `scope`."""
        if scope not in self.scopes:
            raise PermissionDenied(
                f"the token lacks the scope {scope}",
                reason="MISSING_SCOPE",
                metadata={"scope": scope},
            )


# With no authentication configured (development), every caller is this one.
ANONYMOUS = Principal(tenant=Tenant("default"), scopes=ALL_SCOPES, live=True, subject="anonymous")


class Authenticator:
    """Turns a call's `authorization` metadata into a Principal, or UNAUTHENTICATED."""

    def __init__(
        self,
        *,
        static_tokens: Mapping[str, Principal] | None = None,
        hs256_secrets: Iterable[str] = (),
        rs256_public_keys: Iterable[str] = (),
        issuer: str | None = None,
        audience: str = "importd",
    ) -> None:
        self._static = dict(static_tokens or {})
        self._keys = {"HS256": list(hs256_secrets), "RS256": list(rs256_public_keys)}
        self._issuer = issuer
        self._audience = audience

    @property
    def enabled(self) -> bool:
        """Whether any credential is configured; if not, everyone is ANONYMOUS."""
        return bool(self._static or self._keys["HS256"] or self._keys["RS256"])

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The authenticator the settings describe (files are read once, here)."""
        keys = [
            Path(p.strip()).read_text(encoding="utf-8")
            for p in (settings.auth_rs256_public_keys or "").split(",")
            if p.strip()
        ]
        secrets = [s.strip() for s in (settings.auth_hs256_secrets or "").split(",") if s.strip()]
        static = (
            load_static_tokens(settings.auth_static_tokens) if settings.auth_static_tokens else {}
        )
        configured = (
            settings.auth_static_tokens
            or settings.auth_hs256_secrets
            or settings.auth_rs256_public_keys
        )
        if configured and not (static or secrets or keys):
            # A typo must not turn authentication off.
            raise ValueError("authentication is configured but yields no token, secret or key")
        return cls(
            static_tokens=static,
            hs256_secrets=secrets,
            rs256_public_keys=keys,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
        )

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
        """The caller of a call with this metadata."""
        if not self.enabled:
            return ANONYMOUS
        values = [v for k, v in metadata or () if k == "authorization"]
        if not values:
            raise Unauthenticated(
                "missing authorization metadata: send 'authorization: Bearer <token>'",
                reason="MISSING_TOKEN",
            )
        scheme, _, token = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "authorization must be 'Bearer <token>'", reason="MALFORMED_TOKEN"
            )
        token = token.strip()
        if token in self._static:
            return self._static[token]
        return self._verify_jwt(token)

    def _verify_jwt(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthenticated(
                "the token is not a known token or a JWT", reason="MALFORMED_TOKEN"
            ) from None
        keys = self._keys.get(str(algorithm), [])
        if not keys:
            raise Unauthenticated(
                f"tokens signed with {algorithm} are not accepted", reason="UNSUPPORTED_ALGORITHM"
            )
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[str(algorithm)],
                    audience=self._audience,
                    issuer=self._issuer,
                    options={"require": ["exp", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from None
            except jwt.ImmatureSignatureError:
                raise Unauthenticated(
                    "the token is not valid yet", reason="TOKEN_NOT_YET_VALID"
                ) from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated(
                    f"the token is not for audience {self._audience!r}", reason="WRONG_AUDIENCE"
                ) from None
            except jwt.InvalidIssuerError:
                raise Unauthenticated(
                    "the token's issuer is not trusted", reason="WRONG_ISSUER"
                ) from None
            except jwt.PyJWTError as error:
                raise Unauthenticated(
                    f"the token is invalid: {error}", reason="INVALID_TOKEN"
                ) from None
            return _principal_from_claims(claims)
        raise Unauthenticated("the token's signature does not verify", reason="BAD_SIGNATURE")


def _principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    try:
        tenant = parse_tenant(claims.get("tenant"))
    except InvalidTenant as error:
        raise Unauthenticated(
            f"the token's tenant claim {error}", reason="INVALID_TENANT_CLAIM"
        ) from None
    return Principal(
        tenant=tenant,
        scopes=_scopes_from_claims(claims),
        live=claims.get("live") is True,
        subject=str(claims.get("sub", "")),
    )


def _scopes_from_claims(claims: Mapping[str, Any]) -> frozenset[str]:
    """`scope`, space-separated (RFC 8693), or else `scopes`, a list of strings."""
    if "scope" in claims:
        if isinstance(claims["scope"], str):
            return frozenset(claims["scope"].split())
    elif "scopes" in claims:
        scopes = claims["scopes"]
        if isinstance(scopes, list) and all(isinstance(s, str) for s in scopes):
            return frozenset(scopes)
    else:
        return frozenset()
    raise Unauthenticated(
        "the token's scope claim must be a space-separated string (or scopes a list of strings)",
        reason="INVALID_SCOPE_CLAIM",
    )


# The keys of one [[tokens]] entry; anything else is a typo that must not pass silently.
_ENTRY_KEYS = ("token", "tenant", "scopes", "live", "name")
# A token is sent as an HTTP/2 header value after "Bearer ": printable ASCII, no spaces.
_TOKEN = re.compile(r"[!-~]+")


class StaticTokensError(ValueError):
    """The static token table is not as documented; start-up stops, naming entry and field."""


def load_static_tokens(path: Path) -> dict[str, Principal]:
    """The development token table: `[[tokens]]` with token, tenant, scopes, live and name,
    read strictly: a wrong type, an unknown key or scope, or a bad tenant refuses to start."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise StaticTokensError(f"{path}: not valid TOML: {error}") from None
    return parse_static_tokens(document, str(path))


def parse_static_tokens(document: Mapping[str, Any], source: str) -> dict[str, Principal]:
    """The token table of a parsed TOML document; `source` names it in errors."""
    for key in document:
        if key != "tokens":
            raise StaticTokensError(
                f"{source}: unknown key {excerpt(key)}; the table is [[tokens]]"
            )
    entries = document.get("tokens", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise StaticTokensError(f"{source}: tokens must be an array of tables, [[tokens]]")
    table: dict[str, Principal] = {}
    first_use: dict[str, int] = {}
    for number, entry in enumerate(entries, 1):
        name = entry.get("name")
        where = f"{source}: [[tokens]] entry {number}"
        if isinstance(name, str):
            where += f" ({excerpt(name)})"
        token, principal = _static_entry(entry, where)
        if token in first_use:
            raise StaticTokensError(
                f"{where}, field token: the same token as entry {first_use[token]}"
            )
        first_use[token] = number
        table[token] = principal
    return table


def _static_entry(entry: Mapping[str, Any], where: str) -> tuple[str, Principal]:
    def refuse(field: str, problem: str) -> StaticTokensError:
        return StaticTokensError(f"{where}, field {field}: {problem}")

    for key in entry:
        if key not in _ENTRY_KEYS:
            raise refuse(excerpt(key), f"unknown; an entry has {', '.join(_ENTRY_KEYS)}")
    for required in ("token", "tenant"):
        if required not in entry:
            raise refuse(required, "missing")
    token = entry["token"]
    # The token itself is a secret: say what is wrong with it, never what it is.
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise refuse("token", "must be a non-empty string of printable ASCII without spaces")
    try:
        tenant = parse_tenant(entry["tenant"])
    except InvalidTenant as error:
        raise refuse("tenant", str(error)) from None
    scopes = entry.get("scopes", sorted(ALL_SCOPES))
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise refuse("scopes", f"must be a list of scopes ({', '.join(sorted(ALL_SCOPES))})")
    for scope in scopes:
        if scope not in ALL_SCOPES:
            raise refuse(
                "scopes", f"{excerpt(scope)} is not a scope ({', '.join(sorted(ALL_SCOPES))})"
            )
    live = entry.get("live", False)
    if not isinstance(live, bool):
        raise refuse("live", f"must be true or false, not {_kind(live)}")
    name = entry.get("name", "static token")
    if not isinstance(name, str):
        raise refuse("name", f"must be a string, not {_kind(name)}")
    return token, Principal(tenant=tenant, scopes=frozenset(scopes), live=live, subject=name)


def _kind(value: object) -> str:
    """What a TOML value is, for errors: the string "false" is not false."""
    return f"the string {excerpt(value)}" if isinstance(value, str) else value_kind(value)
