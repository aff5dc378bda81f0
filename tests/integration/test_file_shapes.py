"""Files in the shapes people have, end to end against a real server: workbooks, other
delimiters and encodings, files that are clearly something else, and the column map."""

from __future__ import annotations

import codecs
import io
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import date

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_client import AsyncClient
from importd_server.app import Application
from tests.conftest import AppFactory
from tests.rpc import counts, entries_of, import_and_wait, rich_error, start_import
from tests.spreadsheets import Sheets, ods, xlsx

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def dialect(job: pb.Job) -> dict[str, object]:
    """The job's dialect, compactly."""
    return {
        "format": pb.FileFormat.Name(job.dialect.format),
        "encoding": job.dialect.encoding,
        "delimiter": job.dialect.delimiter,
        "sheet": job.dialect.sheet,
        "detected": list(job.dialect.detected),
    }


@pytest.mark.parametrize(
    ("write", "file_name", "file_format"),
    [(xlsx, "people.xlsx", "FILE_FORMAT_XLSX"), (ods, "export.csv", "FILE_FORMAT_ODS")],
    ids=["xlsx", "ods-named-csv"],
)
async def test_a_workbook_is_imported_from_its_first_visible_sheet(
    stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
    write: Callable[[Sheets], bytes],
    file_name: str,
    file_format: str,
) -> None:
    book = write(
        {
            "People": [
                None,
                ["E-mail", "First_Name", "score", "birth_date"],
                ["a@x.com", "Ann", 7, date(1990, 5, 17)],
                None,
                ["b@x.com", "Bob", 150, "soon"],
            ]
        }
    )
    job = await import_and_wait(stub, book, file_name=file_name, piece=1000)
    assert (job.status, counts(job)) == (
        pb.JOB_STATUS_PARTIALLY_SUCCEEDED,
        {"created": 1, "failed": 1},
    )
    assert job.format == pb.FileFormat.Value(file_format)
    assert dialect(job) == {
        "format": file_format,
        "encoding": "",
        "delimiter": "",
        "sheet": "People",
        "detected": ["format", "sheet"],
    }
    row = await db.fetchrow("SELECT first_name, score, birth_date FROM contacts")
    assert dict(row) == {"first_name": "Ann", "score": 7, "birth_date": date(1990, 5, 17)}
    failed = (await entries_of(stub, job.id, pb.ENTRY_STATUS_FAILED))[0]
    # The row and line numbers are the data row's and the sheet's own.
    assert (failed.row_number, failed.line_number) == (2, 5)
    assert [(e.field, e.value) for e in failed.errors] == [
        ("birth_date", "soon"),
        ("score", "150"),
    ]


async def test_a_named_sheet_is_read(stub: pb_grpc.ImportServiceStub) -> None:
    book = xlsx({"Old": [["email"], ["old@x.com"]], "New": [["email"], ["new@x.com"]]})
    job = await import_and_wait(stub, book, sheet="new")
    assert (job.status, job.dialect.sheet, list(job.dialect.detected)) == (
        pb.JOB_STATUS_SUCCEEDED,
        "New",
        ["format"],
    )
    assert [e.key for e in await entries_of(stub, job.id)] == ["new@x.com"]


async def test_a_missing_sheet_fails_the_job_naming_the_sheets(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await start_import(stub, xlsx({"People": [["email"]]}), sheet="Leads")
    assert (job.status, job.error.code, job.error.message) == (
        pb.JOB_STATUS_FAILED,
        INVALID_ARGUMENT,
        "the workbook has no sheet 'Leads' (sheets: 'People')",
    )


@pytest.mark.parametrize(
    ("delimiter", "name"),
    [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")],
    ids=["semicolon", "tab", "pipe"],
)
async def test_the_delimiter_is_sniffed(
    stub: pb_grpc.ImportServiceStub, delimiter: str, name: str
) -> None:
    text = f"email{delimiter}first_name\na@x.com{delimiter}Smith, Ann\n"
    job = await import_and_wait(stub, text.encode(), file_name=f"{name}.csv")
    assert (job.status, counts(job)) == (pb.JOB_STATUS_SUCCEEDED, {"created": 1})
    assert dialect(job) == {
        "format": "FILE_FORMAT_CSV",
        "encoding": "utf-8",
        "delimiter": delimiter,
        "sheet": "",
        "detected": ["format", "encoding", "delimiter"],
    }
    assert (await entries_of(stub, job.id))[0].raw["first_name"] == "Smith, Ann"


@pytest.mark.parametrize(
    ("bom", "encoding"),
    [(codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")],
    ids=["utf-16-le", "utf-16-be"],
)
async def test_a_utf16_export_is_read_by_its_byte_order_mark(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection, bom: bytes, encoding: str
) -> None:
    data = bom + "email\tfirst_name\r\na@x.com\tJürgen 😀\r\n".encode(encoding)
    job = await import_and_wait(stub, data, piece=3)  # pieces split the characters
    assert (job.status, job.dialect.encoding, job.dialect.delimiter) == (
        pb.JOB_STATUS_SUCCEEDED,
        encoding,
        "\t",
    )
    assert await db.fetchval("SELECT first_name FROM contacts") == "Jürgen 😀"


async def test_a_latin1_file_is_read_through_the_servers_fallback_list(
    make_app: AppFactory,
) -> None:
    app = await make_app(fallback_encodings="latin-1")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        data = "email;first_name\nj@x.com;Jürgen\n".encode("latin-1")
        job = await import_and_wait(stub, data)
        assert (job.status, job.dialect.encoding, "encoding" in job.dialect.detected) == (
            pb.JOB_STATUS_SUCCEEDED,
            "latin-1",
            True,
        )
        assert (await entries_of(stub, job.id))[0].raw["first_name"] == "Jürgen"
        types = await stub.ListImportTypes(pb.ListImportTypesRequest())
        assert list(types.fallback_encodings) == ["latin-1"]


async def test_without_a_fallback_a_file_that_is_not_utf8_fails_saying_where(
    make_app: AppFactory,
) -> None:
    app = await make_app(fallback_encodings=None)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        job = await start_import(stub, "email\nj\xfcrgen@x.com\n".encode("latin-1"))
    assert (job.status, job.error.message) == (
        pb.JOB_STATUS_FAILED,
        "the file is not valid utf-8: byte 0xfc at offset 7 cannot be decoded (invalid start byte)",
    )
    # The job still says how the file was read.
    assert (job.dialect.encoding, job.dialect.delimiter) == ("utf-8", ",")


def random_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("contacts.csv", "email\na@x.com\n")
    return buffer.getvalue()


def zip_bomb() -> bytes:
    """A valid workbook carrying a part of 8 MiB of zeros (about 8 KiB compressed)."""
    buffer = io.BytesIO(xlsx({"S": [["email"], ["a@x.com"]]}))
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("xl/media/image1.png", (2024, 1, 1, 0, 0, 0))
        archive.writestr(info, bytes(8 * 1024**2), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "spec", "reason", "message"),
    [
        (
            b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>",
            {},
            "WRONG_FILE_TYPE",
            "the file looks like an HTML page, not CSV, JSON Lines, XLSX or ODS",
        ),
        (
            b"<html><body><h1>403 Forbidden</h1></body></html>",
            {"format": pb.FILE_FORMAT_CSV},
            "WRONG_FILE_TYPE",
            "the file looks like an HTML page, not CSV",
        ),
        (
            b'[\n  {"email": "a@x.com"},\n  {"email": "b@x.com"}\n]\n',
            {"file_name": "contacts.json"},
            "WRONG_FILE_TYPE",
            "the file looks like a JSON array, not CSV, JSON Lines, XLSX or ODS: importd reads"
            " JSON Lines, one object a line",
        ),
        (
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
            {},
            "WRONG_FILE_TYPE",
            "the file looks like a PDF document, not CSV, JSON Lines, XLSX or ODS",
        ),
        (
            random_zip(),
            {},
            "WRONG_FILE_TYPE",
            "the file looks like a ZIP archive (of 'contacts.csv'), not CSV, JSON Lines, XLSX"
            " or ODS",
        ),
        (
            zip_bomb(),
            {},
            "WORKBOOK_TOO_LARGE",
            "the workbook's part 'xl/media/image1.png' is compressed more than 100 to 1, as zip"
            " bombs are",
        ),
    ],
    ids=["html", "html-as-csv", "json-array", "pdf", "random-zip", "zip-bomb"],
)
async def test_a_file_that_is_clearly_not_a_table_fails_saying_what_it_looks_like(
    stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
    data: bytes,
    spec: dict[str, object],
    reason: str,
    message: str,
) -> None:
    job = await start_import(stub, data, piece=64 * 1024, **spec)
    assert (job.status, job.error.code, job.error.message) == (
        pb.JOB_STATUS_FAILED,
        INVALID_ARGUMENT,
        message,
    )
    assert rich_error_reason(job) == reason
    assert await db.fetchval("SELECT count(*) FROM import_entries") == 0


def rich_error_reason(job: pb.Job) -> str:
    """The ErrorInfo reason of the job's error."""
    for detail in job.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def test_the_column_map_renames_headers_for_staging_and_the_workers(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    data = b"E-Mail Address,Given,Points,Notes\na@x.com,Ann,7,x\nb@x.com,Bob,8,y\n"
    job = await import_and_wait(
        stub,
        data,
        column_map={" e-mail address ": "email", "GIVEN": "FirstName", "points": "score"},
    )
    assert (job.status, counts(job)) == (pb.JOB_STATUS_SUCCEEDED, {"created": 2})
    rows = await db.fetch("SELECT email, first_name, score FROM contacts ORDER BY email")
    assert [tuple(r) for r in rows] == [("a@x.com", "Ann", 7), ("b@x.com", "Bob", 8)]
    # Entries keep the file's own headers.
    assert dict((await entries_of(stub, job.id))[0].raw) == {
        "E-Mail Address": "a@x.com",
        "Given": "Ann",
        "Points": "7",
        "Notes": "x",
    }


async def test_a_mapped_header_beside_the_columns_own_name_is_a_duplicate(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await start_import(stub, b"Mail,email\na@x.com,b@x.com\n", column_map={"Mail": "email"})
    assert job.error.message == "column 'email' appears twice in the header (columns 1 and 2)"


@pytest.mark.parametrize(
    ("column_map", "description"),
    [
        (
            {"E-Mail": "emial"},
            "key 'E-Mail' is mapped to 'emial', which is no column of contacts (columns: email,"
            " first_name, last_name, phone, birth_date, status, score)",
        ),
        (
            {"E-Mail": "email", "Mail": "e-mail"},
            "keys 'E-Mail' and 'Mail' both map to column email",
        ),
        (
            {"Mail": "email", " mail ": "first_name"},
            "keys ' mail ' and 'Mail' name one header (header names match without regard to"
            " case and surrounding spaces)",
        ),
        ({"  ": "email"}, "key '  ' is blank"),
    ],
    ids=["unknown-column", "two-headers-one-column", "one-header-twice", "blank-header"],
)
async def test_a_bad_column_map_is_invalid_argument_naming_the_field(
    stub: pb_grpc.ImportServiceStub, column_map: dict[str, str], description: str
) -> None:
    async def requests() -> AsyncIterator[pb.StartImportRequest]:
        spec = pb.ImportSpec(import_type="contacts", column_map=column_map)
        yield pb.StartImportRequest(spec=spec)
        yield pb.StartImportRequest(chunk=b"email\na@x.com\n")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartImport(requests())
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == {"spec.column_map": description}


async def test_list_import_types_names_the_formats_encodings_and_delimiters(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    response = await stub.ListImportTypes(pb.ListImportTypesRequest())
    assert list(response.formats) == [
        pb.FILE_FORMAT_CSV,
        pb.FILE_FORMAT_JSONL,
        pb.FILE_FORMAT_XLSX,
        pb.FILE_FORMAT_ODS,
    ]
    assert {"utf-8", "utf-16", "latin-1", "windows-1252"} <= set(response.encodings)
    assert list(response.fallback_encodings) == ["windows-1252"]
    assert list(response.sniffed_delimiters) == [",", ";", "\t", "|"]


MAGIC_PREFIXES = [b"", b"PK\x03\x04", b"\xff\xfe", b"\xfe\xff", b"\x1f\x8b\x08", b"<html>", b"{"]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=600),
    prefix=st.sampled_from(MAGIC_PREFIXES),
    workbook_tail=st.booleans(),
)
async def test_arbitrary_bytes_end_in_rows_or_a_job_level_error_never_internal(
    stub: pb_grpc.ImportServiceStub, data: bytes, prefix: bytes, workbook_tail: bool
) -> None:
    # Some examples are a real workbook with arbitrary bytes written over its middle.
    if workbook_tail:
        book = bytearray(xlsx({"S": [["email"], ["a@x.com"]]}))
        book[100 : 100 + len(data)] = data
        payload = bytes(book)
    else:
        payload = prefix + data
    job = await start_import(stub, payload, piece=97)
    if job.status == pb.JOB_STATUS_FAILED:
        assert job.error.code == INVALID_ARGUMENT
    else:
        assert job.status in (
            pb.JOB_STATUS_QUEUED,
            pb.JOB_STATUS_SUCCEEDED,
            pb.JOB_STATUS_PARTIALLY_SUCCEEDED,
        )


async def test_the_client_sends_the_sheet_and_the_column_map(app: Application) -> None:
    book = ods({"Intro": [["read me"]], "Leads": [["Mail"], ["a@x.com"]]})
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        job = await client.start_import(
            book, import_type="contacts", sheet="Leads", column_map={"Mail": "email"}
        )
        await job.wait(timeout=30)
    assert (job.job.status, job.job.created_count, job.job.dialect.sheet) == (
        pb.JOB_STATUS_SUCCEEDED,
        1,
        "Leads",
    )
