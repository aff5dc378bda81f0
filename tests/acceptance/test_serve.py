"""`importd serve` as a newcomer runs it: a real process, with and without DATABASE_URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_serving(channel: grpc.Channel, process: subprocess.Popen[bytes]) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "importd serve exited during start-up"
        try:
            response = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            time.sleep(0.2)
    raise AssertionError("importd serve did not report SERVING in time")


@pytest.fixture(params=["DATABASE_URL", "embedded"])
def served(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[tuple[grpc.Channel, subprocess.Popen[bytes]]]:
    """`importd serve` on a free port: on the test database, or on its own embedded one."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["IMPORTD_DATA_DIR"] = str(tmp_path / "data")
    env["IMPORTD_LOG_FORMAT"] = "json"
    if request.param == "DATABASE_URL":
        env["DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, "-m", "importd_server", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until_serving(channel, process)
            yield channel, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_serve_answers_get_job_and_stops_cleanly_on_sigterm(
    served: tuple[grpc.Channel, subprocess.Popen[bytes]],
) -> None:
    channel, process = served
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
