"""The clients start imports from a URI: the server reads the file itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from importd_client import AsyncClient, Client, PermissionDenied
from importd_server.app import Application
from importd_server.config import Settings
from tests.conftest import AppFactory
from tests.http_files import FileServer

CONTACTS = b"email,first_name\na@x.com,Ann\nb@x.com,Bob\n"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test server may fetch from 127.0.0.1, where the test's file server runs."""
    return replace(settings, remote_allow_hosts="127.0.0.1")


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    server = await FileServer({"contacts.csv": CONTACTS}).start()
    yield server
    await server.stop()


async def test_the_async_client_starts_an_import_from_a_uri(
    app: Application, files: FileServer
) -> None:
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        job = await client.start_import(
            source_uri=files.url("/files/contacts.csv?sig=abc"), import_type="contacts"
        )
        final = await job.wait(timeout=30)
        assert job.succeeded and final.created_count == 2
        assert final.file_name == "contacts.csv"

        with pytest.raises(PermissionDenied) as caught:
            await client.start_import(
                source_uri=f"https://[::1]:{files.port}/files/contacts.csv",
                import_type="contacts",
            )
        assert caught.value.reason == "ADDRESS_REFUSED"


async def test_the_sync_client_starts_an_import_from_a_uri(
    app: Application, files: FileServer
) -> None:
    def use(target: str, uri: str) -> None:
        with Client(target) as client:
            job = client.start_import(source_uri=uri, import_type="contacts", mode="insert")
            assert job.wait(timeout=30).created_count == 2

    # Blocking code runs in a thread: the server shares this test's event loop.
    await asyncio.to_thread(use, f"127.0.0.1:{app.port}", files.url("/files/contacts.csv"))


async def test_start_import_takes_a_source_or_a_uri_not_both(app: Application) -> None:
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        with pytest.raises(TypeError):
            await client.start_import(import_type="contacts")
        with pytest.raises(TypeError):
            await client.start_import(
                CONTACTS, source_uri="https://example.com/x.csv", import_type="contacts"
            )


@pytest.mark.parametrize(
    ("overrides", "schemes"),
    [
        ({"remote_allow_hosts": None}, ["file", "https"]),
        ({}, ["file", "https", "http"]),
        ({"source_dir": None, "s3_buckets": "imports"}, ["https", "http", "s3"]),
    ],
)
async def test_the_server_names_the_source_uri_schemes_it_accepts(
    make_app: AppFactory, overrides: dict[str, object], schemes: list[str]
) -> None:
    app = await make_app(**overrides)
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        assert await client.list_source_uri_schemes() == schemes
