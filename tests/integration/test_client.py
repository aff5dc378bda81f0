"""The Python client against a real server: every call, errors, retries, resumed streams."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from importd_client import (
    AlreadyExists,
    AsyncClient,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RetryPolicy,
    Unavailable,
    entry_status_name,
)
from tests.acceptance.processes import free_port
from tests.conftest import AppFactory
from tests.rpc import wait_until

MIXED = b"email,first_name,score\na@x.com,A,1\nbad,B,2\nc@x.com,C,300\nd@x.com,D,4\n"


class RecordingInterceptor(grpc.aio.ServerInterceptor):
    """Remembers each call's method and metadata."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        metadata = dict(handler_call_details.invocation_metadata or ())
        self.calls.append((handler_call_details.method, metadata))
        return await continuation(handler_call_details)


@pytest.fixture
async def recorded(make_app: AppFactory) -> tuple[int, RecordingInterceptor]:
    recorder = RecordingInterceptor()
    app = await make_app(interceptors=[recorder])
    assert app.port is not None
    return app.port, recorder


async def test_every_call_of_the_async_client_works_and_carries_the_token(
    recorded: tuple[int, RecordingInterceptor], tmp_path: Path
) -> None:
    port, recorder = recorded
    source = tmp_path / "people.csv"
    source.write_bytes(MIXED)
    async with AsyncClient(f"127.0.0.1:{port}", token="s3cret") as client:
        job = await client.start_import(source, import_type="contacts", mode="upsert")
        assert job.job.file_name == "people.csv"
        assert job.job.request_id  # generated
        final = await job.wait(timeout=30)
        assert job.status == "PARTIALLY_SUCCEEDED" and job.done and not job.succeeded
        assert (final.created_count, final.failed_count) == (2, 2)

        again = await client.get_job(job.id)
        assert again.job == final
        failed = [e async for e in job.entries("failed")]
        assert [(e.row_number, entry_status_name(e)) for e in failed] == [
            (2, "FAILED"),
            (3, "FAILED"),
        ]
        assert [e.row_number async for e in job.entries(page_size=1)] == [1, 2, 3, 4]

        target = await job.download_not_imported(tmp_path / "fix-me.csv")
        rows = list(csv.reader(io.StringIO(target.read_text())))
        assert [r[0] for r in rows] == ["email", "bad", "c@x.com"]
        assert not (tmp_path / "fix-me.csv.partial").exists()

        with pytest.raises(FailedPrecondition) as finished:
            await job.cancel()
        assert finished.value.reason == "JOB_ALREADY_ENDED"

        revert = await job.revert(request_id="undo-people")
        assert revert.job.revert_of == job.id
        reverted = await revert.wait(timeout=30)
        assert (reverted.deleted_count, revert.status) == (2, "SUCCEEDED")
        assert (await client.revert_job(job.id, request_id="undo-people")).id == revert.id
        with pytest.raises(FailedPrecondition) as twice:
            await client.revert_job(job.id)
        assert twice.value.reason == "ALREADY_REVERTED"

        types = await client.list_import_types()
        assert [t.name for t in types] == ["contacts", "transactions"]
    assert recorder.calls
    assert {m["authorization"] for _, m in recorder.calls} == {"Bearer s3cret"}


async def test_start_import_takes_bytes_and_file_objects_and_list_jobs_pages(
    recorded: tuple[int, RecordingInterceptor],
) -> None:
    port, _ = recorded
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        first = await client.start_import(b"email\na@x.com\n", import_type="contacts")
        second = await client.start_import(
            io.BytesIO(b'{"email": "b@x.com"}\n'), import_type="contacts", file_format="jsonl"
        )
        third = await client.start_import(
            b"email\nc@x.com\n", import_type="contacts", labels={"team": "crm"}, dry_run=True
        )
        for job in (first, second, third):
            await job.wait(timeout=30)
        listed = [job.id async for job in client.list_jobs(page_size=2)]
        assert listed == [third.id, second.id, first.id]
        dry = [
            job.id async for job in client.list_jobs(statuses=["succeeded"], import_type="contacts")
        ]
        assert len(dry) == 3
        assert third.job.dry_run and dict(third.job.labels) == {"team": "crm"}


async def test_errors_are_typed_and_carry_the_servers_details(
    recorded: tuple[int, RecordingInterceptor],
) -> None:
    port, _ = recorded
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        with pytest.raises(InvalidArgument) as bad_mode:
            await client.start_import(b"x", import_type="transactions", mode="delete")
        assert list(bad_mode.value.field_violations) == ["spec.mode"]
        assert str(bad_mode.value).startswith("INVALID_ARGUMENT: spec.mode: transactions allows")
        with pytest.raises(NotFound) as missing:
            await client.get_job("7c9e6679-7425-40de-944b-e07fc1f90ae7")
        assert missing.value.metadata == {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}
        await client.start_import(b"email\na@x.com\n", import_type="contacts", request_id="r1")
        with pytest.raises(AlreadyExists):
            await client.start_import(
                b"email\nz@x.com\n", import_type="contacts", mode="insert", request_id="r1"
            )
        with pytest.raises(
            ValueError, match="'sideways' is not one of insert, upsert, update, delete"
        ):
            await client.start_import(b"", import_type="contacts", mode="sideways")


async def test_a_retried_start_with_its_request_id_never_makes_two_jobs(
    recorded: tuple[int, RecordingInterceptor], db: asyncpg.Connection
) -> None:
    port, _ = recorded
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        one = await client.start_import(
            b"email\na@x.com\n", import_type="contacts", request_id="same"
        )
        two = await client.start_import(
            b"email\na@x.com\n", import_type="contacts", request_id="same"
        )
    assert one.id == two.id
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 1


async def test_safe_calls_are_retried_until_the_server_is_up(make_app: AppFactory) -> None:
    port = free_port()
    app_task = asyncio.create_task(_start_later(make_app, port, delay=0.7))
    async with AsyncClient(f"127.0.0.1:{port}", retry=RetryPolicy(deadline=30)) as client:
        types = await client.list_import_types()
    await app_task
    assert [t.name for t in types] == ["contacts", "transactions"]


async def test_unavailable_is_raised_once_retries_are_spent() -> None:
    async with AsyncClient(f"127.0.0.1:{free_port()}", retry=RetryPolicy(deadline=0.5)) as client:
        with pytest.raises(Unavailable):
            await client.list_import_types()


async def test_progress_resumes_across_a_server_restart(make_app: AppFactory) -> None:
    port = free_port()
    first = await make_app(port=port, workers=0)
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        job = await client.start_import(
            b"email\n" + b"".join(b"p%d@x.com\n" % i for i in range(40)), import_type="contacts"
        )
        events = []

        async def follow() -> None:
            async for event in job.progress():
                events.append(event)

        following = asyncio.create_task(follow())
        await wait_until(lambda: len(events) >= 1)
        await first.stop(grace=1)  # the stream ends UNAVAILABLE; the job is still queued
        await make_app(port=port, workers=2)  # a new server on the same address
        await asyncio.wait_for(following, 30)
    assert events[0].job.status == 1  # QUEUED
    assert events[-1].terminal and events[-1].job.created_count == 40
    assert [e.terminal for e in events].count(True) == 1


async def test_the_sync_client_has_the_same_shape(app: Any, tmp_path: Path) -> None:
    # Blocking code runs in a thread: the server shares this test's event loop.
    await asyncio.to_thread(use_the_sync_client, f"127.0.0.1:{app.port}", tmp_path)


def use_the_sync_client(target: str, tmp_path: Path) -> None:
    with Client(target, token="t") as client:
        job = client.start_import(MIXED, import_type="contacts")
        statuses = [e.job.status for e in job.progress()]
        assert statuses[-1] == 4  # PARTIALLY_SUCCEEDED
        assert job.wait(timeout=10).failed_count == 2
        assert [e.row_number for e in job.entries(["failed"])] == [2, 3]
        assert [j.id for j in client.list_jobs()] == [job.id]
        assert job.download_not_imported(tmp_path / "x.csv").read_text().count("\n") == 3
        assert client.get_job(job.id).succeeded is False
        with pytest.raises(FailedPrecondition):
            job.cancel()
        revert = job.revert()
        assert revert.wait(timeout=10).deleted_count == 2
        assert client.get_job(job.id).job.reverted_by == revert.id
        with pytest.raises(FailedPrecondition):
            client.revert_job(job.id)
        assert [t.name for t in client.list_import_types()] == ["contacts", "transactions"]

        retried = job.retry(mode="upsert")
        assert (retried.job.retry_of, retried.job.total_rows) == (job.id, 2)
        assert retried.wait(timeout=10).failed_count == 2
        again = client.retry_job(job.id, mode="upsert", request_id=retried.job.request_id)
        assert again.id == retried.id  # the same request_id: the same job
        assert [j.id for j in client.list_jobs(filter=f'retry_of = "{job.id}"')] == [retried.id]


async def _start_later(make_app: AppFactory, port: int, delay: float) -> None:
    await asyncio.sleep(delay)
    await make_app(port=port)


async def test_closing_the_sync_client_ends_calls_still_waiting_in_other_threads() -> None:
    import threading

    client = Client(f"127.0.0.1:{free_port()}", retry=RetryPolicy(deadline=600, max_backoff=0.2))
    outcome: list[BaseException] = []

    def wait_forever() -> None:
        try:
            client.list_import_types()
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait_forever)
    waiter.start()
    await asyncio.sleep(0.5)
    await asyncio.to_thread(client.close)
    await asyncio.to_thread(waiter.join, 5)
    assert not waiter.is_alive()
    assert outcome and isinstance(outcome[0], BaseException)


async def test_a_job_is_retried_from_its_rows_or_from_its_corrected_export(
    app: Any, tmp_path: Path
) -> None:
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        job = await client.start_import(MIXED, import_type="contacts")
        await job.wait(timeout=10)
        retried = await job.retry(["failed"])
        assert retried.job.retry_of == job.id
        assert (await retried.wait(timeout=10)).failed_count == 2
        with pytest.raises(InvalidArgument) as bad:
            await job.retry(["created"])
        assert list(bad.value.field_violations) == ["statuses"]

        export = await job.download_not_imported(tmp_path / "fix.csv")
        rows = list(csv.reader(io.StringIO(export.read_text())))
        rows[1][0], rows[2][2] = "b@x.com", "3"  # the e-mail and the score, fixed
        fixed = io.StringIO()
        csv.writer(fixed).writerows(rows)
        upload = await client.start_import(
            fixed.getvalue().encode(), import_type="contacts", retry_of=job.id
        )
        assert (await upload.wait(timeout=10)).created_count == 2
        children = [j.id async for j in client.list_jobs(filter=f'retry_of = "{job.id}"')]
        assert children == [upload.id, retried.id]
