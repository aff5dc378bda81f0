"""Client and Job: the same API as AsyncClient and AsyncJob, for code without asyncio.

Each Client runs one AsyncClient on a private event loop in a background thread, so both
clients share one implementation and behave alike (retries, resumed streams, errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, Unpack

import grpc

from importd.v1 import import_service_pb2 as pb
from importd_client._async_client import (
    DEFAULT_TARGET,
    AsyncClient,
    AsyncJob,
    ImportOptions,
    RetryPolicy,
    Source,
)

T = TypeVar("T")


class _LoopThread:
    """An event loop on a daemon thread, and ways to run coroutines and iterators on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="importd-client", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted (Ctrl-C): the coroutine must not go on alone, e.g. still reading an
            # iterator that is about to be closed.
            future.cancel()
            raise

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        steps: list[asyncio.Task[Any] | None] = []

        async def step() -> tuple[bool, T | None]:
            steps[:] = [asyncio.current_task()]
            try:
                return True, await anext(iterator)
            except StopAsyncIteration:
                return False, None

        async def close() -> None:
            # A Ctrl-C inside run_coroutine_threadsafe leaves a step scheduled that `run`
            # could not cancel: end it first, or aclose() finds the iterator still running.
            for task in steps:
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

        try:
            while True:
                more, item = self.run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            self.run(close())

    def stop(self) -> None:
        async def cancel_the_rest() -> None:
            # Calls still running in other threads end (CancelledError) instead of hanging.
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_the_rest())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class Client:
    """A connection to importd. Use as `with Client(...) as client:`.

    Takes the same options as AsyncClient: `token` (sent on every call), `timeout` (each
    unary call's deadline), `retry` (for UNAVAILABLE on safe calls), `credentials` (TLS).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._runner = _LoopThread()

        async def connect() -> AsyncClient:
            return AsyncClient(
                target, token=token, timeout=timeout, retry=retry, credentials=credentials
            )

        self._async = self._runner.run(connect())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection and stops the background thread."""
        self._runner.run(self._async.close())
        self._runner.stop()

    def start_import(
        self,
        source: Source | None = None,
        *,
        import_type: str,
        source_uri: str | None = None,
        on_created: Callable[[str], object] | None = None,
        **options: Unpack[ImportOptions],
    ) -> Job:
        """Uploads a file, or names one by `source_uri`, and returns its job; see
        AsyncClient.start_import. `on_created` runs on the client's own thread: it may
        hand the id to another thread, which can follow the job while this call sends."""
        job = self._runner.run(
            self._async.start_import(
                source,
                import_type=import_type,
                source_uri=source_uri,
                on_created=on_created,
                **options,
            )
        )
        return Job(self._runner, job)

    def get_job(self, job_id: str) -> Job:
        """The job with this id."""
        return Job(self._runner, self._runner.run(self._async.get_job(job_id)))

    def retry_job(
        self,
        job_id: str,
        *,
        statuses: Iterable[str | int] = (),
        mode: str | int | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Starts a new job over an ended job's rows that did not go in; see
        AsyncClient.retry_job."""
        retried = self._async.retry_job(job_id, statuses=statuses, mode=mode, request_id=request_id)
        return Job(self._runner, self._runner.run(retried))

    def revert_job(self, job_id: str, *, request_id: str | None = None) -> Job:
        """Reverts an ended job; returns the revert (see AsyncClient.revert_job)."""
        revert = self._runner.run(self._async.revert_job(job_id, request_id=request_id))
        return Job(self._runner, revert)

    def list_jobs(
        self,
        *,
        statuses: Iterable[str | int] = (),
        import_type: str | None = None,
        filter: str = "",
        page_size: int = 100,
    ) -> Iterator[Job]:
        """The caller's jobs, newest first, fetched page by page as you iterate; see
        AsyncClient.list_jobs for `filter`."""
        jobs = self._async.list_jobs(
            statuses=statuses, import_type=import_type, filter=filter, page_size=page_size
        )
        for job in self._runner.iterate(jobs):
            yield Job(self._runner, job)

    def watch_jobs(
        self,
        *,
        statuses: Iterable[str | int] = (),
        import_type: str | None = None,
        labels: Mapping[str, str] | None = None,
        since: datetime | None = None,
    ) -> Iterator[pb.Job]:
        """Every change to your jobs that match the filters, resumed transparently; see
        AsyncClient.watch_jobs."""
        return self._runner.iterate(
            self._async.watch_jobs(
                statuses=statuses, import_type=import_type, labels=labels, since=since
            )
        )

    def list_import_types(self) -> list[pb.ImportType]:
        """The import types the server knows, with their columns and rules."""
        return self._runner.run(self._async.list_import_types())

    def list_source_uri_schemes(self) -> list[str]:
        """The schemes `source_uri` may use on this server, e.g. ["file", "https", "s3"]."""
        return self._runner.run(self._async.list_source_uri_schemes())


class Job:
    """A handle on one job; see AsyncJob. `job` is its last known state."""

    def __init__(self, runner: _LoopThread, job: AsyncJob) -> None:
        self._runner = runner
        self._job = job

    @property
    def job(self) -> pb.Job:
        """The last known state."""
        return self._job.job

    @property
    def id(self) -> str:
        """The job's id."""
        return self._job.id

    @property
    def status(self) -> str:
        """The last known status, e.g. "RUNNING" or "SUCCEEDED"."""
        return self._job.status

    @property
    def done(self) -> bool:
        """Whether the job has ended (as last known)."""
        return self._job.done

    @property
    def succeeded(self) -> bool:
        """Whether the job ended with every row applied."""
        return self._job.succeeded

    def refresh(self) -> pb.Job:
        """Fetches the job's current state."""
        return self._runner.run(self._job.refresh())

    def wait(self, timeout: float | None = None) -> pb.Job:
        """Waits until the job ends; see AsyncJob.wait."""
        return self._runner.run(self._job.wait(timeout))

    def progress(self) -> Iterator[pb.ProgressEvent]:
        """Progress events until the job ends, resumed transparently; see AsyncJob.progress."""
        return self._runner.iterate(self._job.progress())

    def entries(
        self, statuses: Iterable[str | int] = (), *, page_size: int = 500
    ) -> Iterator[pb.Entry]:
        """The job's entries in row order, fetched page by page as you iterate."""
        return self._runner.iterate(self._job.entries(statuses, page_size=page_size))

    def cancel(self) -> pb.Job:
        """Cancels the job; committed chunks stay."""
        return self._runner.run(self._job.cancel())

    def revert(self, *, request_id: str | None = None) -> Job:
        """Reverts this ended job; returns the revert (see AsyncClient.revert_job)."""
        return Job(self._runner, self._runner.run(self._job.revert(request_id=request_id)))

    def download_not_imported(
        self, path: str | os.PathLike[str], statuses: Iterable[str | int] = ()
    ) -> Path:
        """Writes the rows that were not imported as CSV; see AsyncJob.download_not_imported."""
        return self._runner.run(self._job.download_not_imported(path, statuses))

    def download_report(self, path: str | os.PathLike[str]) -> Path:
        """Writes every row of the file as CSV; see AsyncJob.download_report."""
        return self._runner.run(self._job.download_report(path))

    def retry(
        self,
        statuses: Iterable[str | int] = (),
        *,
        mode: str | int | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Starts a new job over this ended job's rows that did not go in; see
        AsyncClient.retry_job."""
        retried = self._job.retry(statuses, mode=mode, request_id=request_id)
        return Job(self._runner, self._runner.run(retried))
