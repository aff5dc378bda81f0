"""StartImport's edges: files, sources, idempotency, aborted uploads, and spec errors."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from tests.conftest import AppFactory
from tests.rpc import counts, entries_of, import_and_wait, rich_error, start_import, wait_for_job


async def test_gzip_jsonl_upload_is_imported(stub: pb_grpc.ImportServiceStub) -> None:
    lines = b'{"email": "a@x.com", "score": 7}\n{"e-mail": "b@x.com", "first_name": "B"}\n'
    job = await import_and_wait(stub, gzip.compress(lines), file_name="people.jsonl.gz", piece=1)
    assert job.format == pb.FILE_FORMAT_JSONL
    assert job.status == pb.JOB_STATUS_SUCCEEDED
    assert counts(job) == {"created": 2}


async def test_latin1_csv_with_semicolons(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    data = "email;first_name\nj@x.com;Jürgen\n".encode("latin-1")
    job = await import_and_wait(stub, data, csv=pb.CsvOptions(delimiter=";", encoding="latin-1"))
    assert job.status == pb.JOB_STATUS_SUCCEEDED
    assert await db.fetchval("SELECT first_name FROM contacts") == "Jürgen"


async def test_job_records_size_and_sha256_of_the_bytes_received(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    import hashlib

    data = b"email\na@x.com\n"
    job = await start_import(stub, data)
    assert job.status == pb.JOB_STATUS_QUEUED
    assert (job.file_size_bytes, job.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert job.total_rows == 1


async def test_an_unreadable_file_fails_the_job_with_a_precise_error(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await start_import(stub, b'email,first_name\na@x.com,"unclosed\nb@x.com,B\n')
    assert job.status == pb.JOB_STATUS_FAILED
    assert job.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert job.error.message == "unbalanced quote in the row starting at line 2"
    assert await entries_of(stub, job.id) == []
    assert (await stub.GetJob(pb.GetJobRequest(id=job.id))).status == pb.JOB_STATUS_FAILED


async def test_a_file_over_the_size_limit_fails_the_job(
    app: Application, make_app: AppFactory
) -> None:
    small = await make_app(max_file_bytes=64)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small.port}") as channel:
        job = await start_import(pb_grpc.ImportServiceStub(channel), b"email\n" + b"a@x.com\n" * 20)
    assert job.status == pb.JOB_STATUS_FAILED
    assert job.error.message == "the file is larger than 64 bytes"
    assert job.file_size_bytes > 64


async def test_a_header_only_file_succeeds_with_no_rows(stub: pb_grpc.ImportServiceStub) -> None:
    job = await start_import(stub, b"email,first_name\n")
    assert job.status == pb.JOB_STATUS_SUCCEEDED
    assert job.total_rows == 0


async def test_source_uri_reads_a_file_inside_the_allowed_folder(
    stub: pb_grpc.ImportServiceStub, source_dir: Path
) -> None:
    (source_dir / "contacts.csv").write_bytes(b"email\na@x.com\nb@x.com\n")
    job = await start_import(stub, source_uri=(source_dir / "contacts.csv").as_uri())
    job = await wait_for_job(stub, job.id)
    assert counts(job) == {"created": 2}
    assert job.file_name == "contacts.csv"


@pytest.mark.parametrize(
    "uri",
    [
        "file://{dir}/../secret.csv",
        "file:///etc/passwd",
        "ftp://example.com/x.csv",
        "file://{dir}/missing.csv",
    ],
)
async def test_source_uri_outside_the_folder_or_not_a_file_is_refused(
    stub: pb_grpc.ImportServiceStub, source_dir: Path, uri: str
) -> None:
    (source_dir.parent / "secret.csv").write_bytes(b"email\na@x.com\n")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(stub, source_uri=uri.format(dir=source_dir))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.field_violations) == ["spec.source_uri"]


async def test_the_same_request_id_and_spec_returns_the_same_job(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    first = await start_import(stub, b"email\na@x.com\n", request_id="r-1")
    again = await start_import(stub, b"email\na@x.com\n", request_id="r-1")
    assert again.id == first.id
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 1


async def test_concurrent_starts_with_one_request_id_make_one_job(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    jobs = await asyncio.gather(
        *(start_import(stub, b"email\na@x.com\n", request_id="r-race") for _ in range(5))
    )
    assert len({j.id for j in jobs}) == 1
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 1


async def test_the_same_request_id_with_another_spec_is_already_exists(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    first = await start_import(stub, b"email\na@x.com\n", request_id="r-2")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(stub, b"email\na@x.com\n", request_id="r-2", dry_run=True)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "REQUEST_ID_REUSED"
    assert error.metadata == {"request_id": "r-2", "job_id": first.id}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"import_type": "unicorns"}, "spec.import_type"),
        ({"import_type": "contacts", "csv": pb.CsvOptions(delimiter=";;")}, "spec.csv.delimiter"),
        ({"import_type": "contacts", "csv": pb.CsvOptions(encoding="utf-7")}, "spec.csv.encoding"),
        ({"import_type": "contacts", "max_errors": -1}, "spec.max_errors"),
    ],
)
async def test_bad_specs_are_invalid_argument_naming_the_field(
    stub: pb_grpc.ImportServiceStub, spec: dict[str, object], field: str
) -> None:
    async def requests() -> AsyncIterator[pb.StartImportRequest]:
        yield pb.StartImportRequest(spec=pb.ImportSpec(**spec))  # type: ignore[arg-type]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartImport(requests())
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.field_violations


async def test_an_upload_must_start_with_the_spec(stub: pb_grpc.ImportServiceStub) -> None:
    async def requests() -> AsyncIterator[pb.StartImportRequest]:
        yield pb.StartImportRequest(chunk=b"email\n")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartImport(requests())
    assert rich_error(caught.value).field_violations == {
        "spec": "the first message must carry the spec"
    }


async def test_list_import_types_describes_contacts_and_transactions(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    response = await stub.ListImportTypes(pb.ListImportTypesRequest())
    assert [t.name for t in response.import_types] == ["contacts", "transactions"]
    contacts = response.import_types[0]
    assert list(contacts.key_columns) == ["email"]
    score = next(c for c in contacts.columns if c.name == "score")
    assert (score.type, score.min, score.max) == ("int", "0", "100")
    transactions = response.import_types[1]
    assert list(transactions.modes) == [pb.IMPORT_MODE_INSERT, pb.IMPORT_MODE_UPSERT]
