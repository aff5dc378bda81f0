"""WatchJobs, ListWebhookDeliveries and GetWebhookSecret over the HTTP port: the same answers
as over gRPC, the watch as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import AppFactory
from tests.integration.test_http_api import Http, sse
from tests.webhook_receiver import Receiver


@pytest.fixture
async def http(make_app: AppFactory) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(
            await make_app(http_port=0, remote_allow_hosts="127.0.0.1", webhook_poll_seconds=0.05),
            session,
        )


async def test_a_watch_over_http_is_a_snapshot_then_each_change_as_events(http: Http) -> None:
    seen: list[Any] = []
    url = f"{http.base}/v1/jobs:watch?importType=contacts"
    async with http.session.get(url) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        events = sse(response.content)
        kind, snapshot = await anext(events)
        assert (kind, snapshot) == ("", {"jobs": [], "snapshotComplete": True})
        job = await http.start()
        async with asyncio.timeout(30):
            while not seen or seen[-1]["status"] != "JOB_STATUS_PARTIALLY_SUCCEEDED":
                _, message = await anext(events)
                seen.extend(message["jobs"])
    assert {j["id"] for j in seen} == {job["id"]}


async def test_deliveries_and_the_secret_over_http_are_those_of_grpc(http: Http) -> None:
    receiver = await Receiver().start()
    try:
        status, secret = await http.call("GET", "/v1/webhookSecret")
        assert status == 200 and secret["secret"].startswith("whsec_")
        receiver.secret = secret["secret"]
        job = await http.start(webhookUrl=receiver.url())
        async with asyncio.timeout(30):
            while True:
                status, listed = await http.call("GET", f"/v1/jobs/{job['id']}/webhookDeliveries")
                deliveries = listed.get("deliveries", [])
                if deliveries and deliveries[0]["state"] != "WEBHOOK_DELIVERY_STATE_PENDING":
                    break
                await asyncio.sleep(0.05)
    finally:
        await receiver.stop()
    [delivery] = deliveries
    assert delivery["state"] == "WEBHOOK_DELIVERY_STATE_DELIVERED"
    assert [r.webhook_id for r in receiver.received] == [delivery["id"]]
    assert receiver.received[0].verified
