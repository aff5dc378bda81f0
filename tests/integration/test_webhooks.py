"""Webhooks against a real server and a real receiver on 127.0.0.1: signed the Standard
Webhooks way (verified by the reference library), every event delivered despite failures,
each attempt visible through the API, and the SSRF guard in front of every target."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from tests.conftest import AppFactory
from tests.rpc import rich_error, start_import, wait_for_job
from tests.webhook_receiver import Receiver

CONTACTS = b"email,score\na@x.com,1\nb@x.com,2\nc@x.com,3\nd@x.com,4\ne@x.com,5\n"
# Quick retries, a short attempt timeout; the receiver's address allowed, as an operator would.
WEBHOOK_SETTINGS: dict[str, Any] = {
    "remote_allow_hosts": "127.0.0.1",
    "webhook_poll_seconds": 0.05,
    "webhook_initial_backoff_seconds": 0.05,
    "webhook_max_backoff_seconds": 0.2,
    "webhook_timeout_seconds": 2.0,
    "webhook_lease_seconds": 5.0,
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.stop()


@pytest.fixture
async def webhook_app(make_app: AppFactory) -> Application:
    return await make_app(**WEBHOOK_SETTINGS)


@pytest.fixture
async def hook_stub(webhook_app: Application) -> AsyncIterator[pb_grpc.ImportServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{webhook_app.port}") as channel:
        yield pb_grpc.ImportServiceStub(channel)


async def deliveries(stub: pb_grpc.ImportServiceStub, job_id: str) -> list[pb.WebhookDelivery]:
    response = await stub.ListWebhookDeliveries(pb.ListWebhookDeliveriesRequest(id=job_id))
    return list(response.deliveries)


async def settled(
    stub: pb_grpc.ImportServiceStub, job_id: str, count: int, within: float = 30
) -> list[pb.WebhookDelivery]:
    """The job's `count` deliveries, once none is pending any more."""
    found: list[pb.WebhookDelivery] = []

    async def done() -> bool:
        nonlocal found
        found = await deliveries(stub, job_id)
        return len(found) == count and all(
            d.state != pb.WEBHOOK_DELIVERY_STATE_PENDING for d in found
        )

    await wait_until_true(done, within)
    return found


async def wait_until_true(condition: Callable[[], Awaitable[bool]], within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


async def secret_of(stub: pb_grpc.ImportServiceStub) -> str:
    response = await stub.GetWebhookSecret(pb.GetWebhookSecretRequest())
    return response.secret


async def test_a_finished_job_is_posted_as_json_signed_as_the_reference_library_verifies(
    hook_stub: pb_grpc.ImportServiceStub, receiver: Receiver
) -> None:
    receiver.secret = await secret_of(hook_stub)
    job = await start_import(hook_stub, CONTACTS, webhook_url=receiver.url())
    final = await wait_for_job(hook_stub, job.id)

    [delivery] = await settled(hook_stub, job.id, 1)
    [received] = receiver.received
    assert received.verified
    assert received.webhook_id == delivery.id
    assert received.job == final  # the final Job, as GetJob returns it
    assert delivery.state == pb.WEBHOOK_DELIVERY_STATE_DELIVERED
    assert delivery.job_status == pb.JOB_STATUS_SUCCEEDED
    assert delivery.url == receiver.url()
    [attempt] = delivery.attempts
    assert (attempt.number, attempt.http_status, attempt.error) == (1, 204, "")
    assert attempt.latency.ToTimedelta().total_seconds() > 0


async def test_every_status_change_is_posted_when_the_job_asks(
    hook_stub: pb_grpc.ImportServiceStub, receiver: Receiver
) -> None:
    receiver.secret = await secret_of(hook_stub)
    job = await start_import(
        hook_stub, CONTACTS, webhook_url=receiver.url(), webhook_events=pb.WEBHOOK_EVENTS_ALL
    )
    await wait_for_job(hook_stub, job.id)

    found = await settled(hook_stub, job.id, 3)
    assert [d.job_status for d in found] == [
        pb.JOB_STATUS_QUEUED,
        pb.JOB_STATUS_RUNNING,
        pb.JOB_STATUS_SUCCEEDED,
    ]
    assert {r.job.status for r in receiver.received} == {d.job_status for d in found}
    assert all(r.verified for r in receiver.received)
    queued = next(r.job for r in receiver.received if r.job.status == pb.JOB_STATUS_QUEUED)
    assert queued.total_rows == 5  # the job as its status change committed, file staged


async def test_a_job_ended_in_its_first_transaction_has_one_event_with_its_final_state(
    hook_stub: pb_grpc.ImportServiceStub, receiver: Receiver
) -> None:
    receiver.secret = await secret_of(hook_stub)
    job = await start_import(
        hook_stub,
        b'email\n"unbalanced\n',
        webhook_url=receiver.url(),
        webhook_events=pb.WEBHOOK_EVENTS_ALL,
    )
    assert job.status == pb.JOB_STATUS_FAILED

    [delivery] = await settled(hook_stub, job.id, 1)
    assert delivery.job_status == pb.JOB_STATUS_FAILED
    [received] = receiver.received
    assert received.job.error.message == job.error.message


async def test_a_receiver_that_fails_then_recovers_gets_every_event_under_one_id_each(
    hook_stub: pb_grpc.ImportServiceStub, receiver: Receiver
) -> None:
    receiver.secret = await secret_of(hook_stub)
    receiver.script = [500, 503, "timeout", 500, "timeout"]
    jobs = [
        await start_import(hook_stub, CONTACTS, webhook_url=receiver.url(), file_name=f"{n}.csv")
        for n in range(3)
    ]
    for job in jobs:
        await wait_for_job(hook_stub, job.id)

    found = [d for job in jobs for d in await settled(hook_stub, job.id, 1)]
    assert {d.state for d in found} == {pb.WEBHOOK_DELIVERY_STATE_DELIVERED}
    assert receiver.delivered_ids() == {d.id for d in found}
    assert {r.webhook_id for r in receiver.received} == {d.id for d in found}
    assert all(r.verified for r in receiver.received)
    attempts = [a for d in found for a in d.attempts]
    assert len(attempts) == len(receiver.received) == 5 + 3
    failures = sorted((a.http_status, a.error) for a in attempts if a.error)
    assert failures == [
        (0, "no answer within 2 s"),
        (0, "no answer within 2 s"),
        (500, "the receiver answered HTTP 500"),
        (500, "the receiver answered HTTP 500"),
        (503, "the receiver answered HTTP 503"),
    ]
    for delivery in found:
        assert [a.number for a in delivery.attempts] == list(range(1, len(delivery.attempts) + 1))
        assert delivery.attempts[-1].http_status == 204


async def test_a_delivery_is_given_up_when_the_retry_period_is_over(
    make_app: AppFactory, receiver: Receiver
) -> None:
    app = await make_app(**{**WEBHOOK_SETTINGS, "webhook_retry_seconds": 0.5})
    receiver.script = [500] * 1000
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        receiver.secret = await secret_of(stub)
        job = await start_import(stub, CONTACTS, webhook_url=receiver.url())
        [delivery] = await settled(stub, job.id, 1)
    assert delivery.state == pb.WEBHOOK_DELIVERY_STATE_FAILED
    assert delivery.HasField("end_time")
    assert not delivery.HasField("next_attempt_time")
    assert 1 <= len(delivery.attempts) == len(receiver.received) < 20
    assert {a.http_status for a in delivery.attempts} == {500}


async def test_a_loopback_webhook_url_is_refused_without_the_allowance(
    stub: pb_grpc.ImportServiceStub, receiver: Receiver
) -> None:
    for url, reason in [
        (receiver.url(scheme="https"), "ADDRESS_REFUSED"),
        (receiver.url(host="[::1]", scheme="https"), "ADDRESS_REFUSED"),
        (receiver.url(host="webhooks.example"), "PLAIN_HTTP_REFUSED"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await start_import(stub, CONTACTS, webhook_url=url)
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.PERMISSION_DENIED, url
        assert error.reason == reason, url
    listed = await stub.ListJobs(pb.ListJobsRequest())
    assert list(listed.jobs) == []


async def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(
    stub: pb_grpc.ImportServiceStub, receiver: Receiver
) -> None:
    job = await start_import(stub, CONTACTS, webhook_url=receiver.url("localhost", "https"))
    [delivery] = await settled(stub, job.id, 1, within=60)
    assert delivery.state == pb.WEBHOOK_DELIVERY_STATE_FAILED  # at once: no retry can help
    [attempt] = delivery.attempts
    assert "loopback address" in attempt.error
    assert attempt.http_status == 0
    assert receiver.received == []


@pytest.mark.parametrize(
    ("spec", "field", "description"),
    [
        (
            {"webhook_events": pb.WEBHOOK_EVENTS_ALL},
            "spec.webhook_events",
            "needs a webhook_url",
        ),
        (
            {"webhook_url": "ftp://hooks.example/x"},
            "spec.webhook_url",
            "scheme 'ftp' is not https",
        ),
        (
            {"webhook_url": "https://user:pw@hooks.example/x"},
            "spec.webhook_url",
            "credentials in the URL (user:password@) are not accepted; use a signed URL",
        ),
        (
            {"webhook_url": "https://hooks.example/x", "webhook_events": 9},
            "spec.webhook_events",
            "9 is not a valid value",
        ),
    ],
    ids=["events-without-url", "not-https", "credentials", "unknown-events"],
)
async def test_a_bad_webhook_spec_is_invalid_argument(
    stub: pb_grpc.ImportServiceStub, spec: dict[str, Any], field: str, description: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(stub, CONTACTS, **spec)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == {field: description}


async def test_a_job_without_a_webhook_has_no_delivery(
    hook_stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await start_import(hook_stub, CONTACTS)
    await wait_for_job(hook_stub, job.id)
    assert await deliveries(hook_stub, job.id) == []
