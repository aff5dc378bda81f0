"""StartImport to a finished job: every mode's counts, every row's entry, the target's rows."""

from __future__ import annotations

import asyncpg
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.engine.processing import BATCH_ROWS
from tests.rpc import counts, entries_of, import_and_wait

SEED = b"""email,first_name,last_name,score
ann@x.com,Ann,Archer,10
bob@x.com,Bob,Baker,20
cy@x.com,Cy,Cook,30
"""


async def contacts(db: asyncpg.Connection) -> dict[str, tuple[object, ...]]:
    rows = await db.fetch("SELECT email, first_name, last_name, score, status FROM contacts")
    return {r["email"]: tuple(r)[1:] for r in rows}


async def seed(stub: pb_grpc.ImportServiceStub) -> None:
    job = await import_and_wait(stub, SEED, mode=pb.IMPORT_MODE_INSERT)
    assert job.status == pb.JOB_STATUS_SUCCEEDED
    assert counts(job) == {"created": 3}


async def test_upsert_counts_unchanged_rows_separately(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await seed(stub)
    data = b"""email,first_name,last_name,score
ann@x.com,Ann,Archer,10
bob@x.com,Bobby,Baker,20
dee@x.com,Dee,Dunn,40
"""
    job = await import_and_wait(stub, data, mode=pb.IMPORT_MODE_UPSERT)
    assert job.status == pb.JOB_STATUS_SUCCEEDED
    assert counts(job) == {"created": 1, "updated": 1, "unchanged": 1}
    assert (job.processed_rows, job.total_rows, job.progress_percent) == (3, 3, 100.0)
    statuses = [(e.row_number, e.status) for e in await entries_of(stub, job.id)]
    assert statuses == [
        (1, pb.ENTRY_STATUS_UNCHANGED),
        (2, pb.ENTRY_STATUS_UPDATED),
        (3, pb.ENTRY_STATUS_CREATED),
    ]
    assert await contacts(db) == {
        "ann@x.com": ("Ann", "Archer", 10, "active"),
        "bob@x.com": ("Bobby", "Baker", 20, "active"),
        "cy@x.com": ("Cy", "Cook", 30, "active"),
        "dee@x.com": ("Dee", "Dunn", 40, "active"),
    }


async def test_insert_skips_keys_that_exist(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await seed(stub)
    job = await import_and_wait(
        stub, b"email,first_name\nann@x.com,Changed\neve@x.com,Eve\n", mode=pb.IMPORT_MODE_INSERT
    )
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert counts(job) == {"created": 1, "skipped": 1}
    skipped = await entries_of(stub, job.id, pb.ENTRY_STATUS_SKIPPED)
    assert [(e.row_number, e.note) for e in skipped] == [(1, "key already exists")]
    assert (await contacts(db))["ann@x.com"][0] == "Ann"


async def test_update_changes_only_the_columns_in_the_file_and_skips_missing_keys(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await seed(stub)
    data = b"email,score\nann@x.com,11\nbob@x.com,20\nzed@x.com,1\n"
    job = await import_and_wait(stub, data, mode=pb.IMPORT_MODE_UPDATE)
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert counts(job) == {"updated": 1, "unchanged": 1, "skipped": 1}
    entries = await entries_of(stub, job.id)
    assert [(e.status, e.note) for e in entries] == [
        (pb.ENTRY_STATUS_UPDATED, ""),
        (pb.ENTRY_STATUS_UNCHANGED, ""),
        (pb.ENTRY_STATUS_SKIPPED, "key does not exist"),
    ]
    rows = await contacts(db)
    assert rows["ann@x.com"] == ("Ann", "Archer", 11, "active")
    assert "zed@x.com" not in rows


async def test_delete_removes_existing_keys_and_skips_missing_ones(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await seed(stub)
    job = await import_and_wait(
        stub, b"email\nann@x.com\nnobody@x.com\ncy@x.com\n", mode=pb.IMPORT_MODE_DELETE
    )
    assert counts(job) == {"deleted": 2, "skipped": 1}
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert set(await contacts(db)) == {"bob@x.com"}


async def test_a_key_repeated_in_the_file_the_later_row_wins_and_the_earlier_says_so(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    data = b"email,first_name\nann@x.com,First\nbob@x.com,Bob\nann@x.com,Second\nann@x.com,Third\n"
    job = await import_and_wait(stub, data, mode=pb.IMPORT_MODE_UPSERT)
    assert counts(job) == {"created": 2, "skipped": 2}
    assert job.processed_rows == 4
    entries = await entries_of(stub, job.id)
    assert [(e.row_number, e.status, e.note) for e in entries] == [
        (1, pb.ENTRY_STATUS_SKIPPED, "key ann@x.com is repeated later in the file, at row 4"),
        (2, pb.ENTRY_STATUS_CREATED, ""),
        (3, pb.ENTRY_STATUS_SKIPPED, "key ann@x.com is repeated later in the file, at row 4"),
        (4, pb.ENTRY_STATUS_CREATED, ""),
    ]
    assert (await contacts(db))["ann@x.com"][0] == "Third"


async def test_every_kind_of_bad_row_gets_its_exact_entry(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    data = (
        b"email,first_name,phone,birth_date,status,score\n"
        b"good@x.com,Good,+14155550100,1990-01-01,lead,5\n"
        b"bob@,Bob,,,,\n"
        b",NoEmail,,,,\n"
        b"x@x.com,Phone,555-CALL,,,\n"
        b"y@x.com,Date,,31/12/1990,,\n"
        b"z@x.com,Enum,,,retired,\n"
        b"w@x.com,Score,,,,1000\n"
        b"v@x.com,Many,12,2020-02-30,nope,-5\n"
        b"u@x.com,Short\n"
    )
    job = await import_and_wait(stub, data)
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert counts(job) == {"created": 1, "failed": 8}
    failed = await entries_of(stub, job.id, pb.ENTRY_STATUS_FAILED)
    got = {e.row_number: [(x.code, x.field, x.value, x.message) for x in e.errors] for e in failed}
    assert got == {
        2: [("INVALID_EMAIL", "email", "bob@", "not a valid e-mail address")],
        3: [("REQUIRED", "email", "", "a value is required")],
        4: [
            (
                "INVALID_PHONE",
                "phone",
                "555-CALL",
                "not an E.164 phone number (+ and up to 15 digits)",
            )
        ],
        5: [("INVALID_DATE", "birth_date", "31/12/1990", "not a date (YYYY-MM-DD)")],
        6: [("INVALID_ENUM", "status", "retired", "not one of active, inactive, lead")],
        7: [("TOO_LARGE", "score", "1000", "must be at most 100")],
        8: [
            ("INVALID_PHONE", "phone", "12", "not an E.164 phone number (+ and up to 15 digits)"),
            ("INVALID_DATE", "birth_date", "2020-02-30", "not a date (YYYY-MM-DD)"),
            ("INVALID_ENUM", "status", "nope", "not one of active, inactive, lead"),
            ("TOO_SMALL", "score", "-5", "must be at least 0"),
        ],
        9: [("WRONG_FIELD_COUNT", "", "u@x.com,Short", "the row has 2 fields, the header has 6")],
    }
    assert [e.line_number for e in failed] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert dict(failed[0].raw) == {
        "email": "bob@",
        "first_name": "Bob",
        "phone": "",
        "birth_date": "",
        "status": "",
        "score": "",
    }
    assert set(await contacts(db)) == {"good@x.com"}


async def test_dry_run_counts_what_would_happen_and_writes_nothing(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await seed(stub)
    before = await contacts(db)
    data = b"email,first_name\nann@x.com,Changed\nnew@x.com,New\nbad,Bad\n"
    job = await import_and_wait(stub, data, dry_run=True)
    assert job.dry_run
    assert counts(job) == {"created": 1, "updated": 1, "failed": 1}
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert await contacts(db) == before


async def test_all_or_nothing_commits_nothing_when_one_row_is_bad(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    rows = "".join(f"p{i}@x.com,P{i}\n" for i in range(10))
    data = f"email,first_name\n{rows}bad-email,Bad\n".encode()
    job = await import_and_wait(stub, data, all_or_nothing=True)
    assert job.status == pb.JOB_STATUS_FAILED
    assert counts(job) == {"failed": 1, "skipped": 10}
    assert job.error.message == "1 row(s) failed, so nothing was imported (all_or_nothing)"
    assert await contacts(db) == {}
    skipped = await entries_of(stub, job.id, pb.ENTRY_STATUS_SKIPPED)
    assert {e.note for e in skipped} == {
        "not imported: other rows failed and the job is all_or_nothing"
    }


async def test_all_or_nothing_imports_everything_when_every_row_is_valid(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    rows = "".join(f"p{i}@x.com,P{i}\n" for i in range(10))
    job = await import_and_wait(stub, f"email,first_name\n{rows}".encode(), all_or_nothing=True)
    assert job.status == pb.JOB_STATUS_SUCCEEDED
    assert counts(job) == {"created": 10}
    assert len(await contacts(db)) == 10


async def test_max_errors_fails_the_job_and_leaves_later_chunks_unprocessed(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    # Chunks of 4 rows (the test settings): chunk 1 has 3 failures, over max_errors=2.
    bad_then_good = ["bad1", "bad2", "bad3", "ok1@x.com"] + [f"ok{i}@x.com" for i in range(2, 9)]
    data = ("email\n" + "\n".join(bad_then_good) + "\n").encode()
    job = await import_and_wait(stub, data, max_errors=2)
    assert job.status == pb.JOB_STATUS_FAILED
    assert job.error.message == "3 rows failed, more than max_errors (2)"
    assert job.failed_count == 3
    not_processed = await entries_of(stub, job.id, pb.ENTRY_STATUS_NOT_PROCESSED)
    assert len(not_processed) == job.not_processed_count == job.total_rows - job.processed_rows
    assert len(await contacts(db)) == job.created_count


@pytest.mark.parametrize("mode", [pb.IMPORT_MODE_UPDATE, pb.IMPORT_MODE_DELETE])
async def test_modes_an_import_type_does_not_allow_are_refused(
    stub: pb_grpc.ImportServiceStub, mode: int
) -> None:
    import grpc

    from tests.rpc import rich_error, start_import

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_import(stub, b"transaction_id\n", import_type="transactions", mode=mode)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.field_violations) == ["spec.mode"]


async def test_max_errors_counts_rows_that_failed_to_parse_and_then_nothing_runs(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    data = b"email,first_name\na@x.com\nb@x.com,B\n"  # row 1 has too few fields
    job = await import_and_wait(stub, data, max_errors=0)
    assert job.status == pb.JOB_STATUS_FAILED
    assert job.error.message == "1 rows failed, more than max_errors (0)"
    assert await contacts(db) == {}


async def test_a_row_the_database_refuses_fails_alone_with_the_databases_reason(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    # A rule importd does not know: the table's owner added it.
    await db.execute("ALTER TABLE contacts ADD CONSTRAINT low_scores CHECK (score < 50)")
    data = b"email,score\na@x.com,10\nb@x.com,60\nc@x.com,20\n"
    try:
        dry = await import_and_wait(stub, data, dry_run=True)
        assert counts(dry) == {"created": 2, "failed": 1}
        assert await contacts(db) == {}
        job = await import_and_wait(stub, data)
    finally:
        await db.execute("ALTER TABLE contacts DROP CONSTRAINT low_scores")
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert counts(job) == {"created": 2, "failed": 1}
    failed = await entries_of(stub, job.id, pb.ENTRY_STATUS_FAILED)
    assert [(e.row_number, e.errors[0].code) for e in failed] == [(2, "REJECTED_BY_DATABASE")]
    assert "low_scores" in failed[0].errors[0].message
    assert set(await contacts(db)) == {"a@x.com", "c@x.com"}


async def test_all_or_nothing_keeps_nothing_when_the_database_refuses_a_row(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    # More rows than one statement takes (processing.BATCH_ROWS), the refused one in the
    # second batch: the first batch's rows, applied already, are rolled back too.
    rows = "".join(f"p{i}@x.com,{i % 40}\n" for i in range(BATCH_ROWS + 100))
    data = f"email,score\n{rows}".encode()
    await db.execute("ALTER TABLE contacts ADD CONSTRAINT low_scores CHECK (score < 39)")
    try:
        job = await import_and_wait(stub, data, all_or_nothing=True)
    finally:
        await db.execute("ALTER TABLE contacts DROP CONSTRAINT low_scores")
    refused = [i + 1 for i in range(BATCH_ROWS + 100) if i % 40 == 39]
    assert job.status == pb.JOB_STATUS_FAILED
    assert counts(job) == {"failed": len(refused), "skipped": BATCH_ROWS + 100 - len(refused)}
    assert await contacts(db) == {}
    failed = await entries_of(stub, job.id, pb.ENTRY_STATUS_FAILED)
    assert [e.row_number for e in failed] == refused
    assert {e.errors[0].code for e in failed} == {"REJECTED_BY_DATABASE"}


async def test_an_invalid_row_whose_key_repeats_later_is_skipped_not_failed(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    data = b"email,score\na@x.com,1000\nb@x.com,1\na@X.COM,2\nb@x.com,2000\n"
    job = await import_and_wait(stub, data)
    assert counts(job) == {"created": 1, "skipped": 2, "failed": 1}
    entries = await entries_of(stub, job.id)
    assert [(e.status, e.note, [x.code for x in e.errors]) for e in entries] == [
        (pb.ENTRY_STATUS_SKIPPED, "key a@x.com is repeated later in the file, at row 3", []),
        (pb.ENTRY_STATUS_SKIPPED, "key b@x.com is repeated later in the file, at row 4", []),
        (pb.ENTRY_STATUS_CREATED, "", []),
        (pb.ENTRY_STATUS_FAILED, "", ["TOO_LARGE"]),
    ]
    assert await contacts(db) == {"a@x.com": (None, None, 2, "active")}


async def test_values_the_file_spells_unusually_are_stored_as_validated(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    # Not canonical, so checked by RowChecker at staging and cast from its clean text.
    data = b"email,first_name,phone,birth_date,status,score\n a@X.com , Ann ,+1 (415) 555-0100,2024-02-29,,+7\n"
    job = await import_and_wait(stub, data)
    assert counts(job) == {"created": 1}
    row = await db.fetchrow("SELECT * FROM contacts")
    assert (row["email"], row["first_name"], row["phone"], row["status"], row["score"]) == (
        "a@x.com",
        "Ann",
        "+14155550100",
        "active",
        7,
    )
    [entry] = await entries_of(stub, job.id)
    assert entry.raw["email"] == " a@X.com " and entry.key == "a@x.com"


@pytest.mark.parametrize(
    "mode", [pb.IMPORT_MODE_UPSERT, pb.IMPORT_MODE_INSERT], ids=["upsert", "insert"]
)
async def test_a_key_the_target_holds_midway_through_a_first_import_is_found(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection, mode: int
) -> None:
    # Chunks of new keys are inserted without looking each key up (insert_new); the third
    # chunk's third key in key order is the target's already, so its attempt inserts two
    # rows and then fails: they are rolled back, and that chunk and the ones after look
    # every key up.
    await seed(stub)  # ann, bob, cy
    names = ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4", "bz", "bob", "ba", "bb", "d1", "d2"]
    data = b"email,first_name\n" + b"".join(f"{n}@x.com,{n.upper()}\n".encode() for n in names)
    job = await import_and_wait(stub, data, mode=mode)
    inserted = [n for n in names if n != "bob"]
    if mode == pb.IMPORT_MODE_UPSERT:
        assert counts(job) == {"created": len(inserted), "updated": 1}
        bob = pb.ENTRY_STATUS_UPDATED
    else:
        assert counts(job) == {"created": len(inserted), "skipped": 1}
        bob = pb.ENTRY_STATUS_SKIPPED
    entries = await entries_of(stub, job.id)
    assert [e.status for e in entries] == [
        bob if n == "bob" else pb.ENTRY_STATUS_CREATED for n in names
    ]
    rows = await contacts(db)
    assert len(rows) == 3 + len(inserted)
    assert {n: rows[f"{n}@x.com"][0] for n in inserted} == {n: n.upper() for n in inserted}
    assert rows["bob@x.com"][0] == ("BOB" if mode == pb.IMPORT_MODE_UPSERT else "Bob")
