"""ProgressHub: LISTEN importd_progress on one connection, and fan job changes out to every
local subscriber, coalesced, without ever queueing: each subscriber holds only the latest
state of its job (or, watching a tenant's jobs, of each job that changed), so a slow watcher
never slows the import or other watchers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import structlog

from importd_server.errors import Unavailable
from importd_server.model import Job
from importd_server.store.availability import OutageLog, is_connection_error
from importd_server.store.jobs import PROGRESS_CHANNEL, JobStore
from importd_server.store.pool import Connection, connect

log = structlog.get_logger(__name__)

LISTENER_NAME = "importd-progress-listener"
# How long a new tenant watch waits for the listener (e.g. just after start-up, or while it
# reconnects) before the caller is told to come back.
LISTENER_WAIT_SECONDS = 5.0


class Subscription:
    """One watcher's view of one job: the latest state, and whether it changed."""

    def __init__(self, job_id: uuid.UUID) -> None:
        self.job_id = job_id
        self._latest: Job | None = None
        self._changed = asyncio.Event()
        self._closed_because: str | None = None

    def offer(self, job: Job) -> None:
        """Replaces the latest state (an unread older state is simply dropped)."""
        self._latest = job
        self._changed.set()

    def close(self, reason: str) -> None:
        """Ends the subscription: the watcher's next wait raises Unavailable."""
        self._closed_because = reason
        self._changed.set()

    async def next(self) -> Job:
        """The job's state after the next change."""
        await self._changed.wait()
        self._changed.clear()
        if self._closed_because is not None:
            raise Unavailable(self._closed_because, reason="SERVER_SHUTTING_DOWN")
        assert self._latest is not None
        return self._latest


class JobWatch:
    """One watcher's view of a tenant's jobs: the latest state of each wanted job that
    changed since the watcher last looked (an unread older state of a job is dropped)."""

    def __init__(self, tenant: str, wants: Callable[[Job], bool]) -> None:
        self.tenant = tenant
        self._wants = wants
        self._changed: dict[uuid.UUID, Job] = {}
        self._event = asyncio.Event()
        self._closed_because: str | None = None

    def offer(self, job: Job) -> None:
        """Keeps the job's state if the watcher wants it, replacing an unread older one."""
        if self._wants(job):
            self._changed[job.id] = job
            self._event.set()

    def close(self, reason: str) -> None:
        """Ends the watch: the watcher's next wait raises Unavailable."""
        self._closed_because = reason
        self._event.set()

    async def next(self) -> list[Job]:
        """The jobs that changed since the last call, oldest change first."""
        await self._event.wait()
        self._event.clear()
        if self._closed_because is not None:
            raise Unavailable(self._closed_because, reason="WATCH_INTERRUPTED")
        changed = sorted(self._changed.values(), key=lambda job: job.update_time)
        self._changed.clear()
        return changed


class ProgressHub:
    """Turns `NOTIFY importd_progress, '<job id>'` into job states for local subscribers."""

    def __init__(
        self,
        database_url: str,
        jobs: JobStore,
        *,
        min_interval: float = 0.25,
        resync_seconds: float = 10.0,
        reconnect_seconds: float = 1.0,
    ) -> None:
        self._database_url = database_url
        self._jobs = jobs
        self._min_interval = min_interval
        self._resync_seconds = resync_seconds
        self._reconnect_seconds = reconnect_seconds
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}
        self._watches: dict[str, set[JobWatch]] = {}
        self._dirty: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._listener_outage = OutageLog("progress listener")
        self._fan_out_outage = OutageLog("progress fan-out")
        self.listening = asyncio.Event()

    def start(self) -> None:
        """Starts listening and fanning out."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="importd-progress-listen"),
            asyncio.create_task(self._fan_out(), name="importd-progress-fan-out"),
        ]

    async def close(self, reason: str = "the server is shutting down") -> None:
        """Ends every subscription with `reason` and stops."""
        self._closing = True
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.close(reason)
        self._end_watches(reason)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def subscriber_count(self) -> int:
        """How many watchers this replica serves now."""
        return sum(len(s) for s in self._subscriptions.values())

    @property
    def watch_count(self) -> int:
        """How many WatchJobs streams this replica serves now."""
        return sum(len(w) for w in self._watches.values())

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: uuid.UUID) -> AsyncIterator[Subscription]:
        """A subscription to the job's changes, released when the block ends."""
        if self._closing:
            raise Unavailable("the server is shutting down", reason="SERVER_SHUTTING_DOWN")
        subscription = Subscription(job_id)
        self._subscriptions.setdefault(job_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            watchers = self._subscriptions.get(job_id)
            if watchers is not None:
                watchers.discard(subscription)
                if not watchers:
                    del self._subscriptions[job_id]

    @contextlib.asynccontextmanager
    async def watch(self, tenant: str, wants: Callable[[Job], bool]) -> AsyncIterator[JobWatch]:
        """A watch of the tenant's jobs (those `wants` accepts), released when the block ends.
        Unavailable if the listener is not connected within a few seconds: a watch only
        learns of changes through it."""
        if self._closing:
            raise Unavailable("the server is shutting down", reason="SERVER_SHUTTING_DOWN")
        try:
            await asyncio.wait_for(self.listening.wait(), LISTENER_WAIT_SECONDS)
        except TimeoutError:
            raise Unavailable(
                "the server is not listening for job changes (is the database reachable?)",
                reason="WATCH_INTERRUPTED",
            ) from None
        watch = JobWatch(tenant, wants)
        self._watches.setdefault(tenant, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(tenant)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[tenant]

    def _end_watches(self, reason: str) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.close(reason)

    def _on_notification(
        self, connection: Connection, pid: int, channel: str, payload: object
    ) -> None:
        try:
            job_id = uuid.UUID(str(payload))
        except ValueError:
            return
        # A notification names only the job: with any tenant watched, every changed job is
        # read (coalesced), and its tenant tells whose watchers hear of it.
        if job_id in self._subscriptions or self._watches:
            self._dirty.add(job_id)
            self._wake.set()

    def _resync(self) -> None:
        """Marks every watched job for a re-read (after a reconnect: nothing is missed)."""
        self._dirty.update(self._subscriptions)
        self._wake.set()

    async def _listen(self) -> None:
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_connection_error(error):
                    self._listener_outage.failed(error)
                else:
                    log.exception("progress listener failed; reconnecting")
            self.listening.clear()
            # Changes may go unheard until the listener is back: watchers resume with `since`,
            # which covers them.
            self._end_watches("the server lost its connection for job changes; resume")
            await asyncio.sleep(self._reconnect_seconds)

    async def _listen_once(self) -> None:
        connection = await connect(
            self._database_url, server_settings={"application_name": LISTENER_NAME}
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        try:
            await connection.add_listener(PROGRESS_CHANNEL, self._on_notification)
            self.listening.set()
            self._listener_outage.succeeded()
            log.debug("progress listener connected")
            self._resync()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._resync_seconds)
                if lost.is_set():
                    break
                # A silently dead connection shows here; a live one gets a safety-net resync.
                try:
                    await connection.fetchval("SELECT 1", timeout=self._resync_seconds)
                except TimeoutError:
                    raise ConnectionError("the LISTEN connection stopped answering") from None
                self._resync()
            raise ConnectionError("the LISTEN connection was closed")
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=1)

    async def _fan_out(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            job_ids = [j for j in self._dirty if j in self._subscriptions or self._watches]
            self._dirty.clear()
            if job_ids:
                try:
                    for job in await self._jobs.get_jobs(job_ids):
                        for subscription in list(self._subscriptions.get(job.id, ())):
                            subscription.offer(job)
                        for watch in list(self._watches.get(job.tenant, ())):
                            watch.offer(job)
                    self._fan_out_outage.succeeded()
                except Exception as error:
                    if is_connection_error(error):
                        self._fan_out_outage.failed(error)
                    else:
                        log.exception("progress fan-out failed; retrying")
                    self._dirty.update(job_ids)
                    self._wake.set()
            # Coalesce: changes during this pause become one read for each job.
            await asyncio.sleep(self._min_interval)
