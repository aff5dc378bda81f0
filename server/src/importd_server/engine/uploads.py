"""What an upload holds while its file streams in: a slot of the replica's upload limit with
threads of its own, and a progress writer that keeps its job row up to date.

An upload's parser thread blocks while it waits for bytes, for as long as the caller takes to
send them. In the event loop's default executor (shared by every `asyncio.to_thread` of the
server) a few idle uploads would starve everything else, so uploads run in an executor of
their own with exactly the threads the upload limit needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from importd_server.errors import Unavailable
from importd_server.store.jobs import JobStore

P = ParamSpec("P")
T = TypeVar("T")

# Each upload uses at most two threads at once: its parser, and a hand-over of bytes to it
# that waits while the parser is behind.
THREADS_PER_UPLOAD = 2
# At most this many progress writes a second per upload: watchers see ~4 events a second.
PROGRESS_INTERVAL_SECONDS = 0.25

UploadState = tuple[int, int, int | None]
"""Bytes received, rows staged, and total rows once the file is read whole."""


class JobEnded(Exception):
    """The job stopped receiving while its file streamed in: cancelled, or failed by the
    housekeeper. Its upload is dropped; the job stays as they left it."""


class UploadSlots:
    """At most `limit` uploads at once on this replica, each with threads of its own."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_use = 0
        self._executor = ThreadPoolExecutor(
            THREADS_PER_UPLOAD * limit, thread_name_prefix="importd-upload"
        )

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        """Holds a slot for the block; UNAVAILABLE when every slot is taken (another
        replica may have room, and the client retries)."""
        if self._in_use >= self._limit:
            raise Unavailable(
                f"this server is receiving {self._limit} files, the most it takes at once;"
                " retry shortly",
                reason="TOO_MANY_UPLOADS",
                metadata={"limit": str(self._limit)},
            )
        self._in_use += 1
        try:
            yield
        finally:
            self._in_use -= 1

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`function(*args)` in one of the uploads' threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    def close(self) -> None:
        """Lets the threads end (uploads still running were aborted by the server's stop)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@contextlib.asynccontextmanager
async def writing_progress(
    jobs: JobStore,
    job_id: uuid.UUID,
    state: Callable[[], UploadState],
    heartbeat_seconds: float,
) -> AsyncIterator[None]:
    """Writes `state()` to the job row while the block runs: when it changes (at most ~4
    times a second) and at least every `heartbeat_seconds`, each write a short transaction
    of its own, then once more when the block ends normally. If the job stops receiving
    meanwhile (JobEnded: cancelled, failed by the housekeeper) or a write fails, the block
    is cancelled and that error raised instead."""
    body = asyncio.current_task()
    assert body is not None
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    failure: Exception | None = None

    async def write() -> None:
        nonlocal failure
        last: UploadState | None = None
        last_time = loop.time()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PROGRESS_INTERVAL_SECONDS):
                        await stopping.wait()
                current = state()
                if current != last or loop.time() - last_time >= heartbeat_seconds:
                    if not await jobs.record_upload_progress(job_id, *current):
                        raise JobEnded
                    last, last_time = current, loop.time()
                if stopping.is_set():
                    return
        except Exception as error:
            failure = error
            if not stopping.is_set():
                body.cancel()  # the upload stops now, whatever it waits for

    writer = asyncio.create_task(write(), name=f"importd-upload-progress-{job_id}")
    try:
        yield
        stopping.set()
        await writer
    except asyncio.CancelledError:
        writer.cancel()
        # Cancelled by the writer alone (not also by the caller going away): its error.
        if failure is not None and body.uncancel() == 0:
            raise failure from None
        raise
    except BaseException:
        writer.cancel()
        raise
    if failure is not None:
        raise failure
