"""A replica killed (`kill -9`) in the middle of posting a webhook: the event is in the
database, so another replica posts it once the lease expires, under the same webhook-id."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.acceptance.processes import serve
from tests.conftest import AppFactory
from tests.rpc import start_import, wait_for_job, wait_until
from tests.webhook_receiver import Receiver

CONTACTS = b"email,score\na@x.com,1\nb@x.com,2\n"
ALLOW = "127.0.0.1"


async def test_a_replica_killed_mid_delivery_loses_no_event(
    make_app: AppFactory, database_url: str, tmp_path: Path
) -> None:
    receiver = await Receiver(script=["hold"]).start()  # the first POST never gets an answer
    api_only = await make_app(workers=0, webhook_deliverers=0, remote_allow_hosts=ALLOW)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            secret = await stub.GetWebhookSecret(pb.GetWebhookSecretRequest())
            receiver.secret = secret.secret
            doomed_settings = {
                "workers": "2",
                "webhook_deliverers": "1",
                "remote_allow_hosts": ALLOW,
                "webhook_poll_seconds": "0.05",
                "webhook_timeout_seconds": "2",
                "webhook_lease_seconds": "3",
            }
            with serve(tmp_path, database_url, **doomed_settings) as (_, doomed):
                job = await start_import(stub, CONTACTS, webhook_url=receiver.url())
                await asyncio.wait_for(receiver.arrived.wait(), 60)
                doomed.kill()  # SIGKILL while its POST waits for an answer
                doomed.wait()
            final = await wait_for_job(stub, job.id)

            await make_app(
                workers=0,
                remote_allow_hosts=ALLOW,
                webhook_poll_seconds=0.05,
                webhook_timeout_seconds=2.0,
                webhook_lease_seconds=3.0,
            )
            await wait_until(lambda: len(receiver.received) == 2, within=30)
            # The receiver has the POST a moment before the deliverer records its answer.
            request = pb.ListWebhookDeliveriesRequest(id=job.id)
            async with asyncio.timeout(30):
                while True:
                    response = await stub.ListWebhookDeliveries(request)
                    states = [d.state for d in response.deliveries]
                    if states == [pb.WEBHOOK_DELIVERY_STATE_DELIVERED]:
                        break
                    await asyncio.sleep(0.05)
    finally:
        await receiver.stop()

    [delivery] = response.deliveries
    first, second = receiver.received
    assert first.answered == "hold"
    assert first.webhook_id == second.webhook_id == delivery.id  # receivers de-duplicate on it
    assert second.verified
    assert second.job == final
    assert delivery.state == pb.WEBHOOK_DELIVERY_STATE_DELIVERED
    # The first attempt died with its replica before it could be recorded.
    assert [(a.number, a.http_status) for a in delivery.attempts] == [(2, 204)]
