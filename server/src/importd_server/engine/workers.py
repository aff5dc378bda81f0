"""The worker pool of one replica: asyncio tasks that claim chunks with leases and process them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid

import asyncpg
import structlog

from importd_server.engine.processing import ChunkProcessor
from importd_server.errors import Internal
from importd_server.metrics import Metrics
from importd_server.store.availability import OutageLog, is_connection_error
from importd_server.store.jobs import JobStore
from importd_server.tracing import Tracing

log = structlog.get_logger(__name__)


class WorkerPool:
    """`size` workers claiming chunks of any job, on any replica's behalf, until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        jobs: JobStore,
        processor: ChunkProcessor,
        metrics: Metrics,
        *,
        size: int,
        lease_seconds: float,
        poll_seconds: float,
        max_attempts: int,
        tracing: Tracing,
    ) -> None:
        self._pool = pool
        self._tracing = tracing
        self._jobs = jobs
        self._processor = processor
        self._metrics = metrics
        self._size = size
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._max_attempts = max_attempts
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._outage = OutageLog("workers")
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def start(self) -> None:
        """Starts the workers."""
        self._tasks = [
            asyncio.create_task(self._work(f"{self.replica_id}/{n}"), name=f"importd-worker-{n}")
            for n in range(self._size)
        ]

    def wake(self) -> None:
        """Tells idle workers that new work may be there (e.g. a job was just queued)."""
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Lets chunks in hand finish within `grace` seconds, then cancels (rolling them back)."""
        self._stopping.set()
        self._wake.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._tasks = []
        if pending:
            # The cancelled chunks rolled back: give them to other replicas now, not when
            # their leases expire, and do not count the interrupted attempt.
            try:
                released = await self._jobs.release_leases(f"{self.replica_id}/")
            except Exception as error:
                if not is_connection_error(error):
                    raise
                log.warning("chunks left to their leases: database unreachable", error=str(error))
            else:
                log.info("chunks released at shutdown", result=released)

    async def _work(self, owner: str) -> None:
        bound = log.bind(worker=owner)
        while not self._stopping.is_set():
            try:
                did_work = await self._claim_and_process(owner)
                self._outage.succeeded()
            except Exception as error:
                # The chunk's transaction rolled back; its lease expires and it runs again,
                # up to max_attempts times.
                if is_connection_error(error):
                    self._outage.failed(error)
                else:
                    bound.exception("chunk failed; it will be retried")
                did_work = False
            if not did_work:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)

    async def _claim_and_process(self, owner: str) -> bool:
        claim = await self._jobs.claim_chunk(owner, self._lease_seconds)
        if claim is None:
            return False
        async with self._pool.acquire() as connection:
            if claim.attempts > self._max_attempts:
                error = Internal(
                    f"chunk {claim.chunk_number} (rows {claim.first_row}-{claim.last_row})"
                    f" failed {claim.attempts - 1} times; see the server log",
                    reason="CHUNK_FAILED_REPEATEDLY",
                )
                async with connection.transaction():
                    await self._jobs.fail_job(connection, claim.job_id, error)
                    await self._jobs.notify(connection, claim.job_id)
                return True
            # The chunk's span joins the job's trace, whichever replica created the job.
            trace_parent = (
                await self._jobs.read_trace_parent(connection, claim.job_id)
                if self._tracing.enabled
                else None
            )
            with self._tracing.span(
                "importd.chunk",
                trace_parent,
                {"importd.job_id": str(claim.job_id), "importd.chunk": claim.chunk_number},
            ):
                outcome = await self._processor.process(connection, claim, owner)
            if outcome is not None:
                self._metrics.count_rows(outcome.import_type, outcome.counts)
            return True
