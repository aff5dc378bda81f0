"""Housekeeping on timers: the jobs-by-status gauge, removing the entries of jobs that ended
longer ago than the retention setting, and failing uploads whose replica died."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import structlog

from importd_server.metrics import Metrics
from importd_server.model import JobStatus
from importd_server.store.availability import OutageLog, is_connection_error
from importd_server.store.jobs import JobStore

log = structlog.get_logger(__name__)

JOBS_PER_ROUND = 100


class Housekeeper:
    """Runs retention every `interval` seconds, and looks for interrupted uploads four
    times per `upload_stale_seconds`, until stopped."""

    def __init__(
        self,
        jobs: JobStore,
        metrics: Metrics,
        *,
        retention_days: float,
        interval: float,
        upload_stale_seconds: float,
    ) -> None:
        self._jobs = jobs
        self._metrics = metrics
        self._retention_seconds = retention_days * 86400
        self._interval = interval
        self._upload_stale_seconds = upload_stale_seconds
        self._tasks: list[asyncio.Task[None]] = []
        # One log for both timers: whichever reaches the database first says it is back.
        self._outage = OutageLog("housekeeper")

    def start(self) -> None:
        """Starts the timers (the first rounds run at once)."""
        self._tasks = [
            asyncio.create_task(
                _every(self._interval, self.run_once, self._outage),
                name="importd-housekeeping",
            ),
            asyncio.create_task(
                _every(self._upload_stale_seconds / 4, self.fail_interrupted_uploads, self._outage),
                name="importd-interrupted-uploads",
            ),
        ]

    async def stop(self) -> None:
        """Stops the timers."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def fail_interrupted_uploads(self) -> list[uuid.UUID]:
        """Fails the jobs stuck receiving a file whose replica died (UPLOAD_INTERRUPTED): no
        heartbeat for `upload_stale_seconds`. Their rows died with the replica's
        transaction. Returns their ids."""
        failed = await self._jobs.fail_interrupted_uploads(self._upload_stale_seconds)
        if failed:
            log.warning("interrupted uploads failed", job_ids=[str(i) for i in failed])
        return failed

    async def run_once(self) -> int:
        """One round: refresh the gauge, remove expired entries; returns how many jobs'."""
        self._metrics.set_jobs(await self._jobs.count_jobs_by_status(), tuple(JobStatus))
        if self._retention_seconds <= 0:
            return 0
        removed = 0
        while True:
            ids = await self._jobs.remove_expired_entries(self._retention_seconds, JOBS_PER_ROUND)
            removed += len(ids)
            if len(ids) < JOBS_PER_ROUND:
                break
        if removed:
            log.info("entries of old jobs removed", jobs=removed)
        return removed


async def _every(seconds: float, step: Callable[[], Awaitable[object]], outage: OutageLog) -> None:
    while True:
        try:
            await step()
            outage.succeeded()
        except Exception as error:
            if is_connection_error(error):
                outage.failed(error)
            else:
                log.exception("housekeeping failed; will retry")
        await asyncio.sleep(seconds)
