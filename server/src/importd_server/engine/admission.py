"""Admission: at most `max_active_jobs_per_tenant` queued or running jobs per tenant, jobs
still receiving their file included (so the limit also bounds the uploads a tenant holds
open).

Checked twice: cheaply before an upload (so a tenant at its limit is refused before sending
a file), and exactly in the short transaction that inserts the new job at its file's first
byte, under a per-tenant lock held only until that commit, so concurrent starts cannot all
slip under the limit.
"""

from __future__ import annotations

from importd_server.errors import ResourceExhausted
from importd_server.store.jobs import JobStore
from importd_server.store.pool import Connection


class Admission:
    """Decides whether a tenant may have one more active job."""

    def __init__(self, jobs: JobStore, limit: int) -> None:
        self._jobs = jobs
        self._limit = limit

    async def precheck(self, tenant: str) -> None:
        """RESOURCE_EXHAUSTED if the tenant is at its limit already. Uploads racing at the
        limit may all pass this; `admit` decides."""
        if await self._jobs.count_active_jobs(tenant) >= self._limit:
            raise self._refusal(tenant)

    async def admit(self, connection: Connection, tenant: str) -> None:
        """RESOURCE_EXHAUSTED (rolling the new job back) if the tenant's active jobs,
        the new one included, exceed the limit. Call it last in the new job's transaction:
        the tenant's lock is held until that transaction ends."""
        if await self._jobs.count_active_jobs_admitting(connection, tenant) > self._limit:
            raise self._refusal(tenant)

    def _refusal(self, tenant: str) -> ResourceExhausted:
        return ResourceExhausted(
            f"tenant {tenant} has reached its limit of {self._limit} queued or running jobs;"
            " start this one when one of them ends",
            reason="TOO_MANY_ACTIVE_JOBS",
            metadata={"limit": str(self._limit)},
        )
