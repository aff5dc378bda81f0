"""The client's retries: jittered exponential backoff under a total deadline, only for calls
that are safe to repeat."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import stamina
from stamina.instrumentation import RetryDetails

from importd_client import AsyncClient, RetryPolicy, Unavailable
from tests.acceptance.processes import free_port

# No cap is reached within the deadline: each pause is initial * 2^(n-1) plus its jitter.
POLICY = RetryPolicy(deadline=0.5, initial_backoff=0.05, max_backoff=5.0, jitter=0.05)


@pytest.fixture
def retries() -> Iterator[list[RetryDetails]]:
    """Every retry the client schedules, as stamina reports it (the pause it chose)."""
    scheduled: list[RetryDetails] = []
    before = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([scheduled.append])
    yield scheduled
    stamina.instrumentation.set_on_retry_hooks(before)


async def pauses_until_given_up(policy: RetryPolicy, scheduled: list[RetryDetails]) -> list[float]:
    """The pauses one client makes retrying a read against a port nobody listens on."""
    scheduled.clear()
    async with AsyncClient(f"127.0.0.1:{free_port()}", retry=policy) as client:
        with pytest.raises(Unavailable):
            await client.list_import_types()
    return [retry.wait_for for retry in scheduled]


async def test_two_clients_turned_away_together_pause_differently(
    retries: list[RetryDetails],
) -> None:
    first = await pauses_until_given_up(POLICY, retries)
    second = await pauses_until_given_up(POLICY, retries)

    assert len(first) >= 3 and len(second) >= 3
    for pauses in (first, second):
        for n, pause in enumerate(pauses, 1):
            floor = POLICY.initial_backoff * 2 ** (n - 1)
            assert floor - 1e-9 <= pause <= floor + POLICY.jitter + 1e-9  # float sums
    # Without jitter the two would be equal, pause for pause.
    assert all(a != b for a, b in zip(first, second, strict=False))


async def test_retries_stop_at_the_deadline_not_after_a_number_of_attempts(
    retries: list[RetryDetails],
) -> None:
    policy = RetryPolicy(deadline=1.0, initial_backoff=0.01, max_backoff=0.05, jitter=0.01)
    loop = asyncio.get_running_loop()
    began = loop.time()
    pauses = await pauses_until_given_up(policy, retries)
    took = loop.time() - began

    # Far more attempts than a count of 6 would have allowed: time is the bound.
    assert len(pauses) > 10
    # Given up once the deadline had passed, and no later than one more pause and call.
    assert policy.deadline <= took < policy.deadline + 2.0
    assert max(pauses) == pytest.approx(policy.max_backoff)


async def test_an_upload_that_cannot_be_read_twice_is_not_retried_while_reads_are(
    retries: list[RetryDetails],
) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"email\na@x.com\n")
    os.close(write_end)
    pipe = os.fdopen(read_end, "rb")  # not seekable: what was sent cannot be sent again
    async with AsyncClient(f"127.0.0.1:{free_port()}", retry=POLICY) as client:
        with pipe, pytest.raises(Unavailable):
            await client.start_import(pipe, import_type="contacts")
        assert retries == []
        with pytest.raises(Unavailable):
            await client.start_import(b"email\na@x.com\n", import_type="contacts")
        assert retries, "bytes can be sent again: the upload is retried"
