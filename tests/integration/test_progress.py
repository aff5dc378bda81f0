"""StreamProgress: snapshot, changes, one terminal event; many watchers; lost LISTEN
connections; slow watchers; shutdown."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from importd_server.progress.hub import LISTENER_NAME
from tests.conftest import AppFactory
from tests.rpc import (
    import_and_wait,
    read_to_end,
    rich_error,
    start_import,
    wait_for_job,
    wait_for_progress,
    wait_until,
)


def contacts_file(rows: int) -> bytes:
    return ("email\n" + "".join(f"p{i}@x.com\n" for i in range(rows))).encode()


async def watch(stub: pb_grpc.ImportServiceStub, job_id: str) -> list[pb.ProgressEvent]:
    """Every event of one progress stream, until it ends."""
    return [e async for e in stub.StreamProgress(pb.StreamProgressRequest(id=job_id))]


def assert_well_formed(events: list[pb.ProgressEvent], final: pb.Job) -> None:
    """Snapshot first, counts never going back, exactly one terminal event: the final job."""
    assert events, "no events"
    processed = [e.job.processed_rows for e in events]
    assert processed == sorted(processed)
    assert [e.terminal for e in events] == [False] * (len(events) - 1) + [True]
    last = events[-1].job
    last.ClearField("rows_per_second")
    expected = pb.Job()
    expected.CopyFrom(final)
    expected.ClearField("rows_per_second")
    assert last == expected


class HeldChunks:
    """Holds chunks from `first` on (FOR UPDATE): SKIP LOCKED workers pass them by."""

    def __init__(self, database_url: str, first: int) -> None:
        self._database_url = database_url
        self._first = first
        self._released = False

    async def __aenter__(self) -> HeldChunks:
        self._connection = await asyncpg.connect(self._database_url)
        self._transaction = self._connection.transaction()
        await self._transaction.start()
        await self._connection.execute(
            "SELECT 1 FROM import_chunks WHERE chunk_number >= $1 FOR UPDATE", self._first
        )
        return self

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await self._transaction.rollback()

    async def __aexit__(self, *_: object) -> None:
        await self.release()
        await self._connection.close()


async def queued_job(make_app: AppFactory, database_url: str, rows: int) -> str:
    api_only = await make_app(workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
        job = await start_import(pb_grpc.ImportServiceStub(channel), contacts_file(rows))
    return job.id


async def test_joining_a_finished_job_gives_exactly_one_terminal_event(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, contacts_file(10))
    events = await watch(stub, job.id)
    assert len(events) == 1
    assert events[0].terminal
    assert events[0].job == job
    assert not events[0].HasField("estimated_time_remaining")


async def test_a_watcher_sees_the_snapshot_each_change_and_the_terminal_state(
    make_app: AppFactory, database_url: str
) -> None:
    job_id = await queued_job(make_app, database_url, rows=20)  # chunks 1..5 of 4 rows
    async with HeldChunks(database_url, first=3) as held:
        app = await make_app(workers=2)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            stream = stub.StreamProgress(pb.StreamProgressRequest(id=job_id))
            events = [await stream.read()]
            await wait_for_progress(stub, job_id, rows=8)
            while events[-1].job.processed_rows < 8:
                events.append(await stream.read())
            middle = events[-1]
            await held.release()
            events += await read_to_end(stream)
            final = await stub.GetJob(pb.GetJobRequest(id=job_id))
    assert events[0].job.processed_rows in (0, 4, 8)
    assert middle.job.status == pb.JOB_STATUS_RUNNING
    assert middle.job.progress_percent == 40.0
    assert middle.HasField("estimated_time_remaining")
    assert final.status == pb.JOB_STATUS_SUCCEEDED
    assert_well_formed(events, final)


async def test_two_hundred_watchers_each_get_the_same_terminal_event(
    make_app: AppFactory, database_url: str
) -> None:
    job_id = await queued_job(make_app, database_url, rows=200)
    app = await make_app(workers=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        streams = await asyncio.gather(*(watch(stub, job_id) for _ in range(200)))
        final = await stub.GetJob(pb.GetJobRequest(id=job_id))
    assert final.status == pb.JOB_STATUS_SUCCEEDED
    for events in streams:
        assert_well_formed(events, final)
    assert app.hub is not None and app.hub.subscriber_count == 0


async def test_a_watcher_that_never_reads_slows_neither_the_import_nor_other_watchers(
    make_app: AppFactory, database_url: str
) -> None:
    job_id = await queued_job(make_app, database_url, rows=400)
    app = await make_app(workers=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        stalled = stub.StreamProgress(pb.StreamProgressRequest(id=job_id))  # never read
        events = await asyncio.wait_for(watch(stub, job_id), 30)
        final = await stub.GetJob(pb.GetJobRequest(id=job_id))
        assert_well_formed(events, final)
        stalled.cancel()
    assert app.hub is not None
    await wait_until(lambda: app.hub is not None and app.hub.subscriber_count == 0)


async def test_a_killed_listen_connection_reconnects_and_no_terminal_event_is_missed(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection
) -> None:
    job_id = await queued_job(make_app, database_url, rows=20)
    async with HeldChunks(database_url, first=2) as held:
        app = await make_app(workers=2)
        assert app.hub is not None
        await asyncio.wait_for(app.hub.listening.wait(), 5)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            stream = stub.StreamProgress(pb.StreamProgressRequest(id=job_id))
            first = await stream.read()
            killed = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()",
                LISTENER_NAME,
            )
            assert killed >= 1
            await wait_until(lambda: not app.hub.listening.is_set())
            await held.release()  # the job finishes while the listener is down
            rest = await read_to_end(stream)
            final = await wait_for_job(stub, job_id)
    assert_well_formed([first, *rest], final)
    await asyncio.wait_for(app.hub.listening.wait(), 5)  # and it is listening again


async def test_shutdown_ends_open_streams_with_unavailable(
    make_app: AppFactory, database_url: str
) -> None:
    job_id = await queued_job(make_app, database_url, rows=8)
    app = await make_app(workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        stream = stub.StreamProgress(pb.StreamProgressRequest(id=job_id))
        assert (await stream.read()).job.status == pb.JOB_STATUS_QUEUED
        stopping = asyncio.create_task(app.stop(grace=5))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.read()
        await stopping
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "SERVER_SHUTTING_DOWN"


async def test_stream_progress_of_an_unknown_or_malformed_id(app: Application) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await watch(stub, str(uuid.uuid4()))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await watch(stub, "nope")
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert app.hub is not None and app.hub.subscriber_count == 0
