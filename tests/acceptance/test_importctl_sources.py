"""importctl starts imports from a URI the server reads itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from importd_server.app import Application
from importd_server.config import Settings
from tests.acceptance.test_importctl import importctl
from tests.http_files import FileServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test server may fetch from 127.0.0.1, where the test's file server runs."""
    return replace(settings, remote_allow_hosts="127.0.0.1")


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    server = await FileServer({"contacts.csv": b"email\na@x.com\nb@x.com\n"}).start()
    yield server
    await server.stop()


async def test_start_from_a_url_watches_the_job_to_its_end(
    app: Application, files: FileServer
) -> None:
    url = files.url("/files/contacts.csv?signature=s3cr3t")
    code, stdout, stderr = await importctl(app, "start", url, "--type", "contacts", "--watch")
    assert code == 0, stderr
    assert "SUCCEEDED" in stdout and "created    2" in stdout
    assert "s3cr3t" not in stdout


async def test_a_refused_url_exits_three_with_the_reason(
    app: Application, files: FileServer
) -> None:
    url = f"https://[::1]:{files.port}/files/contacts.csv"
    code, _, stderr = await importctl(app, "start", url, "--type", "contacts")
    assert code == 3
    assert "::1 is a loopback address" in stderr


async def test_a_missing_local_file_is_a_usage_error(app: Application, tmp_path: Path) -> None:
    code, _, stderr = await importctl(app, "start", str(tmp_path / "nope.csv"), "-t", "contacts")
    assert code == 2
    assert "no file at" in stderr
