"""`importd serve` as a newcomer runs it: a real process, with and without DATABASE_URL."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.acceptance.processes import serve


@pytest.fixture(params=["DATABASE_URL", "embedded"])
def served(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`importd serve` on the test database, or on an embedded one of its own."""
    url = database_url if request.param == "DATABASE_URL" else None
    with serve(tmp_path / "data", url) as server:
        yield server


def test_serve_answers_get_job_and_stops_cleanly_on_sigterm(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, process = served
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.GetJob(pb.GetJobRequest(id=str(uuid.uuid4())), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as malformed:
            stub.GetJob(pb.GetJobRequest(id="42"), timeout=5)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert process.stderr is not None
    log = process.stderr.read().decode()
    assert '"event": "importd stopped"' in log
