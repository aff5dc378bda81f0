"""Webhook signatures as the reference implementation (`standardwebhooks`) verifies them,
per-tenant secrets, and the retry pauses' bounds."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from importd_server.webhooks.deliverer import DeliveryPolicy
from importd_server.webhooks.signing import WebhookSigner, signature

KEY = b"k" * 32
TENANTS = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,62}", fullmatch=True)
IDS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
BODIES = st.text().map(str.encode)


@given(tenant=TENANTS, live=st.booleans(), webhook_id=IDS, body=BODIES)
def test_every_signature_verifies_with_the_reference_library(
    tenant: str, live: bool, webhook_id: str, body: bytes
) -> None:
    signer = WebhookSigner(KEY)
    headers = signer.headers(tenant, live, webhook_id, int(time.time()), body)
    Webhook(signer.secret(tenant, live)).verify(body, headers, json_parse=False)


@given(tenant=TENANTS, body=BODIES, extra=st.binary(min_size=1, max_size=8))
def test_a_changed_body_or_another_tenants_secret_does_not_verify(
    tenant: str, body: bytes, extra: bytes
) -> None:
    signer = WebhookSigner(KEY)
    headers = signer.headers(tenant, True, "msg_1", int(time.time()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(signer.secret(tenant, True)).verify(
            body + extra.hex().encode(), headers, json_parse=False
        )
    with pytest.raises(WebhookVerificationError):
        Webhook(signer.secret(tenant + "x", True)).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(signer.secret(tenant, False)).verify(body, headers, json_parse=False)


def test_secrets_are_one_per_tenant_and_mode_and_follow_the_key() -> None:
    signer = WebhookSigner(KEY)
    secrets = {signer.secret(t, live) for t in ("acme", "acme2", "b") for live in (True, False)}
    assert len(secrets) == 6
    assert all(s.startswith("whsec_") for s in secrets)
    assert signer.secret("acme", True) == WebhookSigner(KEY).secret("acme", True)
    assert signer.secret("acme", True) != WebhookSigner(b"j" * 32).secret("acme", True)


def test_the_signature_of_the_specifications_example() -> None:
    # The Standard Webhooks specification's example, byte for byte.
    secret = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert (
        signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@given(attempt=st.integers(min_value=1, max_value=10_000))
def test_a_retry_pause_is_between_half_and_all_of_the_doubled_pause_up_to_the_maximum(
    attempt: int,
) -> None:
    policy = DeliveryPolicy(
        timeout_seconds=10,
        lease_seconds=60,
        poll_seconds=1,
        initial_backoff_seconds=5,
        max_backoff_seconds=3600,
        retry_seconds=86400,
    )
    full = min(3600.0, 5.0 * 2 ** min(attempt - 1, 20))
    assert full / 2 <= policy.backoff(attempt) <= full
