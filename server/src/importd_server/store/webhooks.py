"""WebhookStore: the one place that reads and writes the webhook outbox and its attempts."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from importd_server.model import (
    Job,
    JobStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
)
from importd_server.store.jobs import job_from_row
from importd_server.store.sql import WEBHOOK_QUERIES


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a deliverer has leased for one attempt: where to post which job."""

    id: uuid.UUID
    tenant: str
    live: bool
    url: str
    attempt: int  # this attempt's number, 1 for the first
    create_time: datetime
    job: Job  # as it was when its status changed
    trace_parent: str | None


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt did, and what follows: delivered, refused for good, or a retry."""

    attempt: WebhookAttempt
    delivered: bool
    refused: bool
    retry_in_seconds: float


class WebhookStore:
    """Claims, finishes and lists webhook deliveries through a pool it is given."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, owner: str, lease_seconds: float) -> ClaimedDelivery | None:
        """The most overdue pending delivery, leased to `owner`; None when none is due."""
        row = await WEBHOOK_QUERIES["claim_delivery"].fetchrow(
            self._pool, owner=owner, lease_seconds=lease_seconds
        )
        if row is None:
            return None
        job = row["job"]
        return ClaimedDelivery(
            id=row["id"],
            tenant=row["tenant"],
            live=row["live"],
            url=row["url"],
            attempt=row["attempts"],
            create_time=row["create_time"],
            job=job_from_row(job),
            trace_parent=job["trace_parent"],
        )

    async def finish(
        self,
        delivery: ClaimedDelivery,
        owner: str,
        outcome: AttemptOutcome,
        retry_seconds: float,
    ) -> WebhookDeliveryState | None:
        """Records the attempt, then the delivery's new state (None if `owner` lost the lease
        meanwhile: the attempt is recorded, the state is the new holder's to set)."""
        attempt = outcome.attempt
        async with self._pool.acquire() as connection, connection.transaction():
            await WEBHOOK_QUERIES["record_attempt"].execute(
                connection,
                delivery_id=delivery.id,
                number=attempt.number,
                start_time=attempt.start_time,
                latency_seconds=attempt.latency_seconds,
                http_status=attempt.http_status,
                error=attempt.error,
            )
            state = await WEBHOOK_QUERIES["finish_delivery"].fetchval(
                connection,
                delivery_id=delivery.id,
                attempt=delivery.attempt,
                owner=owner,
                delivered=outcome.delivered,
                refused=outcome.refused,
                retry_in_seconds=outcome.retry_in_seconds,
                retry_seconds=retry_seconds,
            )
        return WebhookDeliveryState(state) if state is not None else None

    async def release(self, owner_prefix: str) -> str:
        """Frees the leases of every owner starting with `owner_prefix`."""
        return await WEBHOOK_QUERIES["release_deliveries"].execute(self._pool, owners=owner_prefix)

    async def list_deliveries(self, job_id: uuid.UUID) -> list[WebhookDelivery]:
        """The job's deliveries, oldest first, each with its attempts."""
        async with self._pool.acquire() as connection:
            rows = await WEBHOOK_QUERIES["list_deliveries"].fetch(connection, job_id=job_id)
            attempt_rows = await WEBHOOK_QUERIES["list_attempts"].fetch(connection, job_id=job_id)
        attempts: defaultdict[uuid.UUID, list[WebhookAttempt]] = defaultdict(list)
        for a in attempt_rows:
            attempts[a["delivery_id"]].append(
                WebhookAttempt(
                    number=a["number"],
                    start_time=a["start_time"],
                    latency_seconds=a["latency_secs"],
                    http_status=a["http_status"],
                    error=a["error"],
                )
            )
        return [
            WebhookDelivery(
                id=r["id"],
                job_id=r["job_id"],
                url=r["url"],
                job_status=JobStatus(r["job_status"]),
                state=WebhookDeliveryState(r["state"]),
                create_time=r["create_time"],
                next_attempt_time=r["next_attempt_time"],
                end_time=r["end_time"],
                attempts=tuple(attempts[r["id"]]),
            )
            for r in rows
        ]
