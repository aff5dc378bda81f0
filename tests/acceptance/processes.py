"""`importd serve` as a real process, for tests that need a replica of their own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTUP_SECONDS = 60


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_serving(port: int, process: subprocess.Popen[bytes]) -> None:
    """Returns once the server reports SERVING; fails if it exits or takes too long."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                assert process.stderr is not None
                log = process.stderr.read().decode(errors="replace")
                raise AssertionError(f"importd serve exited during start-up:\n{log[-4000:]}")
            try:
                response = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise AssertionError("importd serve did not report SERVING in time")


def serve_command(port: int) -> list[str]:
    """The `importd serve` command line, on `port`."""
    return [sys.executable, "-m", "importd_server", "serve", "--port", str(port)]


def serve_environment(data_dir: Path, database_url: str | None, **settings: str) -> dict[str, str]:
    """The environment of an `importd serve` process: JSON logs, metrics and HTTP on any free port,
    `settings` as IMPORTD_<NAME> variables; without a database_url, the embedded PostgreSQL
    in `data_dir`."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["IMPORTD_DATA_DIR"] = str(data_dir)
    env["IMPORTD_LOG_FORMAT"] = "json"
    env["IMPORTD_METRICS_PORT"] = "0"
    env["IMPORTD_HTTP_PORT"] = "0"
    env.update({f"IMPORTD_{name.upper()}": value for name, value in settings.items()})
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env


@contextmanager
def serve(
    data_dir: Path, database_url: str | None, **settings: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Runs `importd serve` on a free port until the block ends; yields (port, process).

    `settings` become IMPORTD_<NAME> variables; without a database_url the process starts
    its own embedded PostgreSQL in `data_dir`.
    """
    port = free_port()
    process = subprocess.Popen(
        serve_command(port),
        env=serve_environment(data_dir, database_url, **settings),
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_serving(port, process)
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()
