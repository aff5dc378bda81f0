"""The deliverer of one replica: asyncio tasks that claim due events from the webhook outbox
with a lease, POST each one signed, record the attempt, and schedule the next one with a
jittered, growing pause until the retry period is over.

At-least-once: a replica killed mid-attempt leaves its lease to expire, and another replica
posts the event again with the same webhook-id, which receivers de-duplicate on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver
from google.protobuf import json_format

from importd_server.api.convert import job_to_proto
from importd_server.config import Settings
from importd_server.engine.remote import redact
from importd_server.errors import ImportdError
from importd_server.model import Job, WebhookAttempt, WebhookDeliveryState
from importd_server.net.guard import AddressGuard
from importd_server.net.http import check_http_url, guarded_session
from importd_server.store.availability import OutageLog, is_connection_error
from importd_server.store.webhooks import AttemptOutcome, ClaimedDelivery, WebhookStore
from importd_server.tracing import Tracing
from importd_server.webhooks.signing import WebhookSigner

log = structlog.get_logger(__name__)

HEADERS = {"Content-Type": "application/json", "User-Agent": "importd-webhooks"}
# An error text is kept for people, not for storing a receiver's whole answer.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long an attempt may take, how long a lease lasts, how often to look for due
    events, and how retries are spread out and for how long they go on."""

    timeout_seconds: float
    lease_seconds: float
    poll_seconds: float
    initial_backoff_seconds: float
    max_backoff_seconds: float
    retry_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        """The policy the webhook_* settings describe."""
        return cls(
            timeout_seconds=settings.webhook_timeout_seconds,
            lease_seconds=settings.webhook_lease_seconds,
            poll_seconds=settings.webhook_poll_seconds,
            initial_backoff_seconds=settings.webhook_initial_backoff_seconds,
            max_backoff_seconds=settings.webhook_max_backoff_seconds,
            retry_seconds=settings.webhook_retry_seconds,
        )

    def backoff(self, attempt: int) -> float:
        """The pause after a failed `attempt`: doubling from the initial pause up to the
        maximum, then cut to a random share between half and all of it, so that events
        which failed together (a receiver that was down) do not all come back at once."""
        doubled = self.initial_backoff_seconds * 2.0 ** min(attempt - 1, 62)
        return min(self.max_backoff_seconds, doubled) * random.uniform(0.5, 1.0)


def webhook_body(job: Job) -> bytes:
    """What is posted: the Job in protobuf JSON (camelCase), zero counts included."""
    message = json_format.MessageToDict(
        job_to_proto(job), always_print_fields_with_no_presence=True
    )
    return json.dumps(message, separators=(",", ":")).encode()


class WebhookDeliverer:
    """`size` tasks delivering due webhook events of every job, until stopped."""

    def __init__(
        self,
        store: WebhookStore,
        signer: WebhookSigner,
        guard: AddressGuard,
        policy: DeliveryPolicy,
        tracing: Tracing,
        *,
        size: int,
        replica_id: str,
        resolver: Callable[[], AbstractResolver] | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._guard = guard
        self._policy = policy
        self._tracing = tracing
        self._size = size
        self._replica_id = replica_id
        # Makes the resolver the guarded one wraps (tests hand in their own).
        self._resolver = resolver
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._outage = OutageLog("webhook deliverer")

    def start(self) -> None:
        """Starts the delivering tasks."""
        if not self._size:
            return
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout_seconds)
        self._session = guarded_session(
            self._guard, timeout, self._resolver() if self._resolver else None
        )
        self._tasks = [
            asyncio.create_task(
                self._work(f"{self._replica_id}/webhooks/{n}"), name=f"importd-webhooks-{n}"
            )
            for n in range(self._size)
        ]

    async def stop(self) -> None:
        """Stops at once: an attempt in flight is abandoned and its event released, to be
        posted again (with the same webhook-id) by whichever replica claims it next."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tasks:
            try:
                await self._store.release(f"{self._replica_id}/webhooks/")
            except Exception as error:
                if not is_connection_error(error):
                    raise
                log.warning("webhooks left to their leases: database unreachable")
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _work(self, owner: str) -> None:
        while not self._stopping.is_set():
            try:
                delivered = await self.deliver_one(owner)
                self._outage.succeeded()
            except Exception as error:
                if is_connection_error(error):
                    self._outage.failed(error)
                else:
                    log.exception("webhook delivery failed; its lease will expire")
                delivered = False
            if not delivered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._policy.poll_seconds)

    async def deliver_one(self, owner: str) -> bool:
        """Makes one attempt at the most overdue event; False when none was due."""
        delivery = await self._store.claim(owner, self._policy.lease_seconds)
        if delivery is None:
            return False
        bound = log.bind(
            delivery_id=str(delivery.id),
            job_id=str(delivery.job.id),
            attempt=delivery.attempt,
            url=redact(delivery.url),
        )
        with self._tracing.span(
            "importd.webhook",
            delivery.trace_parent,
            {"importd.job_id": str(delivery.job.id), "importd.webhook.attempt": delivery.attempt},
        ):
            outcome = await self._attempt(delivery)
        state = await self._store.finish(delivery, owner, outcome, self._policy.retry_seconds)
        attempt = outcome.attempt
        if state is WebhookDeliveryState.DELIVERED:
            bound.info("webhook delivered", http_status=attempt.http_status)
        elif state is WebhookDeliveryState.FAILED:
            bound.warning("webhook given up", error=attempt.error)
        else:
            bound.info("webhook attempt failed; will retry", error=attempt.error)
        return True

    async def _attempt(self, delivery: ClaimedDelivery) -> AttemptOutcome:
        assert self._session is not None
        body = webhook_body(delivery.job)
        started = time.perf_counter()
        start_time = datetime.now(UTC)
        status: int | None = None
        error: str | None = None
        refused = False
        try:
            # Checked again at each attempt: the allow-list may have changed since the job
            # was created, and a literal address never reaches the resolver's check.
            url = check_http_url(delivery.url, self._guard, "webhook_url")
            headers = {
                **HEADERS,
                **self._signer.headers(
                    delivery.tenant, delivery.live, str(delivery.id), int(time.time()), body
                ),
            }
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
            if not 200 <= status < 300:
                error = f"the receiver answered HTTP {status}"
                if 300 <= status < 400:
                    error += "; redirects are not followed"
        except ImportdError as refusal:  # the guard: a refused address stays refused
            error, refused = refusal.message, True
        except TimeoutError:
            error = f"no answer within {self._policy.timeout_seconds:g} s"
        except aiohttp.ClientError as failure:
            error = f"the connection failed ({type(failure).__name__})"
        attempt = WebhookAttempt(
            number=delivery.attempt,
            start_time=start_time,
            latency_seconds=time.perf_counter() - started,
            http_status=status,
            error=error[:MAX_ERROR_CHARS] if error else None,
        )
        return AttemptOutcome(
            attempt=attempt,
            delivered=error is None,
            refused=refused,
            retry_in_seconds=self._policy.backoff(delivery.attempt),
        )
