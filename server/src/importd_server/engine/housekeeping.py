"""Housekeeping on a timer: the jobs-by-status gauge, and removing the entries of jobs that
ended longer ago than the retention setting."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from importd_server.metrics import Metrics
from importd_server.model import JobStatus
from importd_server.store.availability import OutageLog, is_connection_error
from importd_server.store.jobs import JobStore

log = structlog.get_logger(__name__)

JOBS_PER_ROUND = 100


class Housekeeper:
    """Runs every `interval` seconds until stopped."""

    def __init__(
        self, jobs: JobStore, metrics: Metrics, *, retention_days: float, interval: float
    ) -> None:
        self._jobs = jobs
        self._metrics = metrics
        self._retention_seconds = retention_days * 86400
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._outage = OutageLog("housekeeper")

    def start(self) -> None:
        """Starts the timer (the first round runs at once)."""
        self._task = asyncio.create_task(self._run(), name="importd-housekeeping")

    async def stop(self) -> None:
        """Stops the timer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

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

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
                self._outage.succeeded()
            except Exception as error:
                if is_connection_error(error):
                    self._outage.failed(error)
                else:
                    log.exception("housekeeping failed; will retry")
            await asyncio.sleep(self._interval)
