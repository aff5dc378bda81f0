"""Standard Webhooks signatures (https://www.standardwebhooks.com): each tenant's secret,
derived from one server key, and the headers that sign one attempt."""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


class WebhookSigner:
    """Signs webhooks with per-tenant secrets derived from one key, so replicas agree with
    nothing stored per tenant; test and live jobs of a tenant have different secrets."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def secret(self, tenant: str, live: bool) -> str:
        """The tenant's secret, "whsec_" and base64, as receivers configure it."""
        return SECRET_PREFIX + base64.b64encode(self._secret_bytes(tenant, live)).decode()

    def headers(
        self, tenant: str, live: bool, webhook_id: str, timestamp: int, body: bytes
    ) -> dict[str, str]:
        """The webhook-id, webhook-timestamp and webhook-signature headers of one attempt."""
        secret = self._secret_bytes(tenant, live)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, webhook_id, timestamp, body),
        }

    def _secret_bytes(self, tenant: str, live: bool) -> bytes:
        # NUL cannot occur in a tenant (tenants.py), so no two inputs read alike.
        mode = b"live" if live else b"test"
        message = b"importd webhook secret\0" + mode + b"\0" + tenant.encode()
        return hmac.digest(self._key, message, hashlib.sha256)


def signature(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """ "v1," and the base64 HMAC-SHA256 of "<id>.<timestamp>.<body>" under the secret."""
    signed = b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.digest(secret, signed, hashlib.sha256)).decode()
