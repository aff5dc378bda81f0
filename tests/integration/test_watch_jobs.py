"""WatchJobs against a real server: a snapshot, then every change to the caller's jobs
(filtered, coalesced, tenant- and test/live-scoped), resumable with `since`; and the
clients' watch_jobs that resumes by itself across a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_client import AsyncClient, Client
from importd_server.app import Application
from tests.acceptance.processes import free_port
from tests.conftest import AppFactory
from tests.rpc import insert_job, rich_error, start_import, wait_for_job, wait_until

CONTACTS = b"email\n" + b"".join(b"p%d@x.com\n" % i for i in range(12))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def start_as(stub: pb_grpc.ImportServiceStub, token: str, data: bytes, **spec: Any) -> pb.Job:
    """Starts an import with a token; returns the job once it has ended."""
    metadata = bearer(token)

    async def requests() -> AsyncIterator[pb.StartImportRequest]:
        yield pb.StartImportRequest(spec=pb.ImportSpec(import_type="contacts", **spec))
        yield pb.StartImportRequest(chunk=data)

    job: pb.Job = await stub.StartImport(requests(), metadata=metadata)
    async with asyncio.timeout(30):
        while job.status < pb.JOB_STATUS_SUCCEEDED:
            await asyncio.sleep(0.05)
            job = await stub.GetJob(pb.GetJobRequest(id=job.id), metadata=metadata)
    return job


async def notify(db: asyncpg.Connection, job_id: object) -> None:
    await db.execute("SELECT pg_notify('importd_progress', $1)", str(job_id))


class Watch:
    """A WatchJobs stream read in the background: its snapshot, then every job state."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.snapshot: list[pb.Job] | None = None
        self.changes: list[pb.Job] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        pending: list[pb.Job] = []
        async for response in self.call:
            if self.snapshot is None:
                pending.extend(response.jobs)
                if response.snapshot_complete:
                    self.snapshot = pending
            else:
                self.changes.extend(response.jobs)

    def states_of(self, job_id: str) -> list[pb.Job]:
        return [j for j in self.changes if j.id == job_id]

    async def until_ended(self, job_id: str, within: float = 30) -> list[pb.Job]:
        """The states of the job seen until its terminal one."""
        await wait_until(
            lambda: any(j.status >= pb.JOB_STATUS_SUCCEEDED for j in self.states_of(job_id)),
            within,
        )
        return self.states_of(job_id)

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def watching(stub: pb_grpc.ImportServiceStub, **request: Any) -> Watch:
    metadata = request.pop("metadata", ())
    watch = Watch(stub.WatchJobs(pb.WatchJobsRequest(**request), metadata=metadata))
    await wait_until(lambda: watch.snapshot is not None)
    return watch


def key(job: pb.Job) -> tuple[int, int]:
    return (job.update_time.seconds, job.update_time.nanos)


async def test_a_watch_gets_the_active_jobs_then_every_change_of_a_new_job_to_its_end(
    app: Application, stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    queued = await insert_job(db, status="QUEUED")
    await insert_job(db, status="SUCCEEDED", end_time=datetime.now(UTC))
    watch = await watching(stub)
    try:
        assert [j.id for j in watch.snapshot or []] == [str(queued)]
        job = await start_import(stub, CONTACTS)
        states = await watch.until_ended(job.id)
    finally:
        await watch.close()
    final = await wait_for_job(stub, job.id)
    assert states[-1] == final
    assert states[-1].created_count == 12
    assert [key(s) for s in states] == sorted({key(s) for s in states})  # forward only


async def test_only_jobs_matching_every_filter_are_reported(
    app: Application, stub: pb_grpc.ImportServiceStub
) -> None:
    by_label = await watching(stub, labels={"team": "a"})
    by_status = await watching(stub, statuses=[pb.JOB_STATUS_SUCCEEDED])
    by_type = await watching(stub, import_type="transactions")
    try:
        team_a = await start_import(stub, CONTACTS, labels={"team": "a", "x": "1"})
        team_b = await start_import(stub, CONTACTS, labels={"team": "b"})
        await by_label.until_ended(team_a.id)
        await by_status.until_ended(team_b.id)
        await by_status.until_ended(team_a.id)
    finally:
        for watch in (by_label, by_status, by_type):
            await watch.close()
    assert {j.id for j in by_label.changes} == {team_a.id}
    assert {j.status for j in by_status.changes} == {pb.JOB_STATUS_SUCCEEDED}
    assert {j.id for j in by_status.changes} == {team_a.id, team_b.id}
    assert by_type.changes == []


async def test_another_tenants_jobs_and_live_jobs_for_a_test_token_are_never_reported(
    make_app: AppFactory, tmp_path: Path, db: asyncpg.Connection
) -> None:
    static = tmp_path / "tokens.toml"
    static.write_text(
        '[[tokens]]\ntoken = "acme"\ntenant = "acme"\nlive = true\n'
        '[[tokens]]\ntoken = "acme-test"\ntenant = "acme"\nlive = false\n'
        '[[tokens]]\ntoken = "globex"\ntenant = "globex"\nlive = true\n'
    )
    app = await make_app(auth_static_tokens=static)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        acme = await watching(stub, metadata=bearer("acme"))
        acme_test = await watching(stub, metadata=bearer("acme-test"))
        try:
            theirs = await start_as(stub, "globex", CONTACTS)
            live = await start_as(stub, "acme", CONTACTS)
            dry = await start_as(stub, "acme-test", CONTACTS, dry_run=True)
            await acme.until_ended(live.id)
            await acme.until_ended(dry.id)
            await acme_test.until_ended(dry.id)
            # Both watches have heard of every change but theirs; one more of theirs, heard
            # by the listener and read by the fan-out, must not reach either.
            await notify(db, theirs.id)
            await asyncio.sleep(1)
        finally:
            await acme.close()
            await acme_test.close()
    assert {j.id for j in acme.changes} == {live.id, dry.id}
    assert {j.id for j in acme_test.changes} == {dry.id}


async def test_since_brings_the_jobs_that_changed_while_a_watcher_was_away(
    app: Application, stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    older = await insert_job(db, status="FAILED", update_time=now - timedelta(hours=1))
    ended = await insert_job(db, status="SUCCEEDED", update_time=now)
    running = await insert_job(db, status="RUNNING", update_time=now - timedelta(days=1))
    since = pb.WatchJobsRequest().since
    since.FromDatetime(now)
    watch = await watching(stub, since=since)
    await watch.close()
    assert watch.snapshot is not None
    # Oldest change first; the job that ended before `since` is not there.
    assert [j.id for j in watch.snapshot] == [str(running), str(ended)]
    assert str(older) not in {j.id for j in watch.snapshot}


async def test_a_big_snapshot_comes_in_several_messages(
    app: Application, stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    for _ in range(230):
        await insert_job(db, status="QUEUED")
    responses = []
    async for response in stub.WatchJobs(pb.WatchJobsRequest()):
        responses.append(response)
        if response.snapshot_complete:
            break
    assert [len(r.jobs) for r in responses] == [100, 100, 30]
    assert [r.snapshot_complete for r in responses] == [False, False, True]


async def test_a_bad_filter_is_invalid_argument(stub: pb_grpc.ImportServiceStub) -> None:
    for request, field in [
        (pb.WatchJobsRequest(statuses=[99]), "statuses"),
        (pb.WatchJobsRequest(labels={"": "x"}), "labels"),
        (pb.WatchJobsRequest(import_type="x" * 64), "import_type"),
    ]:
        try:
            async for _ in stub.WatchJobs(request):
                raise AssertionError("the watch should have been refused")
        except grpc.aio.AioRpcError as error:
            details = rich_error(error)
            assert details.code == grpc.StatusCode.INVALID_ARGUMENT
            assert list(details.field_violations) == [field]


async def test_the_clients_watch_resumes_across_a_server_restart_without_repeats(
    make_app: AppFactory,
) -> None:
    port = free_port()
    first = await make_app(port=port, workers=0)
    seen: list[pb.Job] = []
    async with AsyncClient(f"127.0.0.1:{port}") as client:

        async def watch() -> None:
            async for job in client.watch_jobs():
                seen.append(job)

        watching_task = asyncio.create_task(watch())
        job = await client.start_import(CONTACTS, import_type="contacts")
        await wait_until(lambda: any(j.id == job.id for j in seen))
        await first.stop(grace=1)  # the stream ends UNAVAILABLE; the job is still queued
        await make_app(port=port, workers=2)  # a new server on the same address runs it
        await wait_until(lambda: seen[-1].status == pb.JOB_STATUS_SUCCEEDED, within=30)
        watching_task.cancel()
        await asyncio.gather(watching_task, return_exceptions=True)
    states = [j for j in seen if j.id == job.id]
    assert states[0].status == pb.JOB_STATUS_QUEUED
    assert [key(s) for s in states] == sorted({key(s) for s in states})  # no repeat, forward
    assert states[-1].created_count == 12


async def test_the_sync_clients_watch_has_the_same_shape(app: Application) -> None:
    async def in_thread() -> list[pb.Job]:
        def run() -> list[pb.Job]:
            with Client(f"127.0.0.1:{app.port}") as client:
                job = client.start_import(CONTACTS, import_type="contacts", labels={"k": "v"})
                states = []
                for state in client.watch_jobs(labels={"k": "v"}):
                    states.append(state)
                    if state.id == job.id and state.status == pb.JOB_STATUS_SUCCEEDED:
                        return states
            raise AssertionError("the watch ended early")

        return await asyncio.to_thread(run)

    states = await asyncio.wait_for(in_thread(), 30)
    assert states[-1].created_count == 12
