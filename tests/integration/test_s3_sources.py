"""s3:// sources against a real S3-protocol server (moto's, on 127.0.0.1), read through obstore
with credentials and endpoint from the AWS_* variables, behind the same guard."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import boto3
import grpc
import pytest
from moto.server import ThreadedMotoServer

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.config import Settings
from importd_server.engine.remote import RemoteSources
from tests.conftest import AppFactory
from tests.rpc import counts, rich_error, start_import, wait_for_job

CONTACTS = b"email,first_name\na@x.com,Ann\nb@x.com,Bob\n"
BUCKET = "imports"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "importd-test",
    "AWS_SECRET_ACCESS_KEY": "importd-test-secret",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a free port) with the bucket and a contacts file."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=CREDENTIALS["AWS_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="default/contacts.csv", Body=CONTACTS)
    client.put_object(
        Bucket=BUCKET, Key="default/big.csv", Body=b"email\n" + b"a@x.com\n" * 400_000
    )
    yield endpoint
    server.stop()


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A server that may read the bucket, at the endpoint the environment names, on the
    loopback address the test allows."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    return replace(settings, remote_allow_hosts="127.0.0.1", s3_buckets=BUCKET)


@pytest.fixture
async def stub_with(make_app: AppFactory) -> AsyncIterator[Any]:
    """Makes a stub on a server with these settings overridden."""
    channels: list[grpc.aio.Channel] = []

    async def make(**overrides: Any) -> pb_grpc.ImportServiceStub:
        app = await make_app(**overrides)
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{app.port}"))
        return pb_grpc.ImportServiceStub(channels[-1])

    yield make
    for channel in channels:
        await channel.close()


async def test_an_s3_object_imports_end_to_end(stub: pb_grpc.ImportServiceStub) -> None:
    job = await start_import(stub, source_uri=f"s3://{BUCKET}/default/contacts.csv")
    job = await wait_for_job(stub, job.id)
    assert counts(job) == {"created": 2}
    assert job.file_name == "contacts.csv"
    assert job.sha256 == hashlib.sha256(CONTACTS).hexdigest()


async def test_a_missing_object_fails_the_job_naming_it(stub: pb_grpc.ImportServiceStub) -> None:
    job = await start_import(stub, source_uri=f"s3://{BUCKET}/default/missing.csv")
    job = await wait_for_job(stub, job.id)
    assert job.status == pb.JOB_STATUS_FAILED
    assert job.error.message == f"s3://{BUCKET}/default/missing.csv does not exist"


async def test_an_object_over_the_size_limit_fails_before_its_bytes(stub_with: Any) -> None:
    stub = await stub_with(max_file_bytes=10)
    job = await wait_for_job(
        stub, (await start_import(stub, source_uri=f"s3://{BUCKET}/default/contacts.csv")).id
    )
    assert job.error.message == (
        f"the file is larger than 10 bytes (s3://{BUCKET}/default/contacts.csv has {len(CONTACTS)})"
    )


@pytest.mark.parametrize(
    ("overrides", "uri", "code", "reason"),
    [
        (
            {"remote_allow_hosts": None},
            "s3://imports/default/contacts.csv",
            "PERMISSION_DENIED",
            "ADDRESS_REFUSED",
        ),
        (
            {"s3_buckets": None},
            "s3://imports/default/contacts.csv",
            "FAILED_PRECONDITION",
            "SOURCE_URI_DISABLED",
        ),
        ({}, "s3://other-bucket/default/contacts.csv", "PERMISSION_DENIED", "BUCKET_NOT_ALLOWED"),
        ({}, "s3://imports/acme/contacts.csv", "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        ({}, "s3://imports/contacts.csv", "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        ({}, "s3://imports/default/../acme/contacts.csv", "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        (
            {},
            "s3://imports/default/contacts.csv?versionId=1",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        ({}, "s3://Not_A_Bucket/default/contacts.csv", "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        ({}, "s3://key@imports/default/contacts.csv", "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    ],
)
async def test_s3_uris_outside_what_the_server_allows_are_refused(
    stub_with: Any, overrides: dict[str, Any], uri: str, code: str, reason: str
) -> None:
    stub = await stub_with(**overrides)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(stub, source_uri=uri)
    error = rich_error(caught.value)
    assert (error.code.name, error.reason) == (code, reason), error.message


async def test_an_s3_object_streams_in_bounded_pieces(settings: Settings) -> None:
    sources = RemoteSources.from_settings(settings)
    total = largest = 0
    async for piece in sources.open(f"s3://{BUCKET}/default/big.csv", "default"):
        total += len(piece)
        largest = max(largest, len(piece))
    assert total == len(b"email\n") + 8 * 400_000
    assert largest <= 1024 * 1024  # obstore's default would hand over 10 MB at a time
