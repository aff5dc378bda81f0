"""Who may do what: bearer tokens (JWTs signed HS256 or RS256, or a static table for
development) become a Principal: a tenant, scopes, and whether the token is live or test."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import structlog

from importd_server.config import Settings
from importd_server.errors import PermissionDenied, Unauthenticated

log = structlog.get_logger(__name__)

READ = "imports:read"
WRITE = "imports:write"
ALL_SCOPES = frozenset({READ, WRITE})


@dataclass(frozen=True)
class Principal:
    """The caller, as its token says: its tenant, scopes, and live (or test) mode."""

    tenant: str
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
ANONYMOUS = Principal(tenant="default", scopes=ALL_SCOPES, live=True, subject="anonymous")


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
                    options={"require": ["exp", "aud", "tenant"]},
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
    scopes = claims.get("scope", "")
    granted = scopes.split() if isinstance(scopes, str) else list(claims.get("scopes", []))
    return Principal(
        tenant=str(claims["tenant"]),
        scopes=frozenset(granted),
        live=claims.get("live") is True,
        subject=str(claims.get("sub", "")),
    )


def load_static_tokens(path: Path) -> dict[str, Principal]:
    """The development token table: `[[tokens]]` with token, tenant, scopes and live."""
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    table = {}
    for entry in document.get("tokens", []):
        table[entry["token"]] = Principal(
            tenant=entry["tenant"],
            scopes=frozenset(entry.get("scopes", sorted(ALL_SCOPES))),
            live=bool(entry.get("live", False)),
            subject=entry.get("name", "static token"),
        )
    return table
