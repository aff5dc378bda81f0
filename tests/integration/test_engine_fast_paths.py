"""Probes of today's engine fast paths against a model of what they must do: new keys
inserted without a lookup (ApplyPlan.insert_new), the error summary counted at staging,
and the settings of every connection (no JIT, the callers' own settings kept)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from importd_server.engine.processing import BATCH_ROWS
from importd_server.model import RowError
from importd_server.progress.hub import LISTENER_NAME
from importd_server.store.availability import MONITOR_NAME
from importd_server.store.pool import connect, create_pool, open_connection
from tests.conftest import AppFactory
from tests.rpc import counts, entries_of, import_and_wait, wait_for_job
from tests.spreadsheets import Cell, xlsx

TENANT = "default"
# Rows of other keys the file never names: their last names are what an extra UNIQUE index
# on (tenant, last_name) makes a file row collide with.
POISON = {"p1@x.com": ("P", "L-p1"), "p2@x.com": ("P", "L-p2")}
STATUS_NAMES = {
    pb.ENTRY_STATUS_CREATED: "CREATED",
    pb.ENTRY_STATUS_UPDATED: "UPDATED",
    pb.ENTRY_STATUS_UNCHANGED: "UNCHANGED",
    pb.ENTRY_STATUS_SKIPPED: "SKIPPED",
    pb.ENTRY_STATUS_FAILED: "FAILED",
    pb.ENTRY_STATUS_NOT_PROCESSED: "NOT_PROCESSED",
}
COUNT_OF = {
    "CREATED": "created",
    "UPDATED": "updated",
    "UNCHANGED": "unchanged",
    "SKIPPED": "skipped",
    "FAILED": "failed",
}


def email(key: int) -> str:
    return f"k{key:02d}@x.com"


# ---------------------------------------------------------------------------------------
# 1. insert_new: outcomes, counts, entries and the target as the model says.


@dataclass(frozen=True)
class Expected:
    outcomes: list[tuple[str, str]]  # per row: status, and the note's or error's gist
    table: dict[str, tuple[str, str]]  # email -> (first_name, last_name), tenant "default"


def model(
    start: dict[str, tuple[str, str]],
    rows: list[tuple[str, str, str]],
    mode: int,
    *,
    check: bool,
    unique: bool,
    dry_run: bool = False,
    all_or_nothing: bool = False,
) -> Expected:
    """What importing `rows` (email, first_name, last_name) into `start` must do."""
    last_of = {row[0]: at for at, row in enumerate(rows)}
    table = dict(start)
    held = {last for _, last in [*start.values(), *POISON.values()]}
    outcomes: list[tuple[str, str]] = []
    for at, (key, first, last) in enumerate(rows):
        if last_of[key] != at:
            outcomes.append(("SKIPPED", "repeated"))
            continue
        exists = key in table
        writes = not exists if mode == pb.IMPORT_MODE_INSERT else table.get(key) != (first, last)
        if not writes:
            outcomes.append(
                ("SKIPPED", "key already exists")
                if mode == pb.IMPORT_MODE_INSERT
                else ("UNCHANGED", "")
            )
            continue
        taken_elsewhere = last in held and (not exists or table[key][1] != last)
        if (check and first == "X") or (unique and taken_elsewhere):
            outcomes.append(("FAILED", "REJECTED_BY_DATABASE"))
            continue
        outcomes.append(("UPDATED" if exists else "CREATED", ""))
        table[key] = (first, last)
    refused = any(s == "FAILED" for s, _ in outcomes)
    if all_or_nothing and refused:
        outcomes = [
            o if o[0] == "FAILED" or o[1] == "repeated" else ("SKIPPED", "all or nothing")
            for o in outcomes
        ]
    if dry_run or (all_or_nothing and refused):
        table = dict(start)
    return Expected(outcomes, table)


def csv_of(rows: list[tuple[str, str, str]]) -> bytes:
    return ("email,first_name,last_name\n" + "".join(f"{e},{f},{n}\n" for e, f, n in rows)).encode()


async def seed_table(
    db: asyncpg.Connection, start: dict[str, tuple[str, str]], others: list[str]
) -> None:
    await db.execute("DELETE FROM contacts")
    await db.executemany(
        "INSERT INTO contacts (tenant, email, first_name, last_name, status)"
        " VALUES ($1, $2, $3, $4, 'active')",
        [(TENANT, k, f, n) for k, (f, n) in {**start, **POISON}.items()]
        + [("other", k, "Other", f"L-other-{k}") for k in others],
    )


async def held_rows(db: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    rows = await db.fetch(
        "SELECT email, first_name, last_name FROM contacts WHERE tenant = $1", TENANT
    )
    return {r["email"]: (r["first_name"], r["last_name"]) for r in rows if r["email"] not in POISON}


async def whole_table(db: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch("SELECT * FROM contacts ORDER BY tenant, email")]


def outcome_of(entry: pb.Entry) -> tuple[str, str]:
    status = STATUS_NAMES[entry.status]
    if status == "FAILED":
        return status, ",".join(e.code for e in entry.errors)
    if status == "SKIPPED":
        if "repeated later" in entry.note:
            return status, "repeated"
        if entry.note == "key already exists":
            return status, entry.note
        return status, "all or nothing"
    return status, ""


def assert_summary_is_the_entries_errors(job: pb.Job, entries: list[pb.Entry]) -> None:
    summary = Counter((e.code, e.field) for entry in entries for e in entry.errors)
    assert {(c.code, c.field): c.count for c in job.error_summary} == summary
    ranked = sorted(job.error_summary, key=lambda c: (-c.count, c.code, c.field))
    assert list(job.error_summary) == ranked
    assert job.failed_count == sum(e.status == pb.ENTRY_STATUS_FAILED for e in entries)


@dataclass
class Constraints:
    """Constraints of the target that the import type does not know, added for a test."""

    db: asyncpg.Connection
    check: bool
    unique: bool

    async def add(self) -> None:
        if self.check:
            await self.db.execute(
                "ALTER TABLE contacts ADD CONSTRAINT probe_no_x CHECK (first_name <> 'X')"
            )
        if self.unique:
            await self.db.execute(
                "CREATE UNIQUE INDEX probe_unique_last ON contacts (tenant, last_name)"
            )

    async def drop(self) -> None:
        await self.db.execute("ALTER TABLE contacts DROP CONSTRAINT IF EXISTS probe_no_x")
        await self.db.execute("DROP INDEX IF EXISTS probe_unique_last")


FILE_ROW = st.tuples(
    st.integers(0, 11), st.sampled_from(["A", "B", "X"]), st.sampled_from(["own", "own", "poison"])
)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.dictionaries(st.integers(0, 11), st.sampled_from(["A", "B"]), max_size=8),
    others=st.sets(st.integers(0, 11), max_size=4),
    file=st.lists(FILE_ROW, min_size=1, max_size=14),
    insert=st.booleans(),
    dry_run=st.booleans(),
    all_or_nothing=st.booleans(),
    check=st.booleans(),
    unique=st.booleans(),
)
async def test_insert_and_upsert_do_what_the_model_says_for_any_table_and_file(
    stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
    start: dict[int, str],
    others: set[int],
    file: list[tuple[int, str, str]],
    insert: bool,
    dry_run: bool,
    all_or_nothing: bool,
    check: bool,
    unique: bool,
) -> None:
    mode = pb.IMPORT_MODE_INSERT if insert else pb.IMPORT_MODE_UPSERT
    held = {email(k): (name, f"L{k}") for k, name in start.items()}
    poison = sorted(POISON.values())
    rows = [
        (email(k), first, f"L{k}" if last == "own" else poison[k % 2][1]) for k, first, last in file
    ]
    constraints = Constraints(db, check, unique)
    await constraints.drop()
    await seed_table(db, held, [email(k) for k in others])
    before = await whole_table(db)
    await constraints.add()
    try:
        expected = model(
            held, rows, mode, check=check, unique=unique, dry_run=dry_run,
            all_or_nothing=all_or_nothing,
        )  # fmt: skip
        job = await import_and_wait(
            stub, csv_of(rows), mode=mode, dry_run=dry_run, all_or_nothing=all_or_nothing
        )
        entries = await entries_of(stub, job.id)
        assert [outcome_of(e) for e in entries] == expected.outcomes
        assert counts(job) == dict(Counter(COUNT_OF[s] for s, _ in expected.outcomes))
        assert await held_rows(db) == expected.table
        assert_summary_is_the_entries_errors(job, entries)
        others_now = [r for r in await whole_table(db) if r["tenant"] != TENANT]
        assert others_now == [r for r in before if r["tenant"] != TENANT]
        wrote = not dry_run and job.status != pb.JOB_STATUS_FAILED
        refused = [(e.key, rows[e.row_number - 1]) for e in entries if e.errors]
        if wrote and check and refused and not unique and not all_or_nothing:
            # RetryJob once the cause is gone: the refused rows go in as the model says.
            await constraints.drop()
            retry = await stub.RetryJob(pb.RetryJobRequest(id=job.id))
            retry = await wait_for_job(stub, retry.id)
            again = model(expected.table, [r for _, r in refused], mode, check=False, unique=False)
            retried = await entries_of(stub, retry.id)
            assert [outcome_of(e) for e in retried] == again.outcomes
            assert await held_rows(db) == again.table
        elif wrote:
            # RevertJob brings the table back exactly (rows inserted by insert_new too).
            await constraints.drop()
            revert = await stub.RevertJob(pb.RevertJobRequest(id=job.id))
            revert = await wait_for_job(stub, revert.id)
            assert revert.status == pb.JOB_STATUS_SUCCEEDED, revert
            assert await whole_table(db) == before
    finally:
        await constraints.drop()


@pytest.mark.parametrize("mode", [pb.IMPORT_MODE_UPSERT, pb.IMPORT_MODE_INSERT], ids=["up", "in"])
async def test_max_errors_counts_the_rows_refused_after_insert_new_fell_back(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection, mode: int
) -> None:
    # One chunk (4 rows): the key in the middle is held, one new row is refused by a CHECK.
    await seed_table(db, {email(2): ("A", "L2")}, [])
    await db.execute("ALTER TABLE contacts ADD CONSTRAINT probe_no_x CHECK (first_name <> 'X')")
    try:
        rows = [(email(1), "B", "L1"), (email(2), "B", "L2"), (email(3), "X", "L3")]
        rows.append((email(4), "B", "L4"))
        job = await import_and_wait(stub, csv_of(rows), mode=mode, max_errors=0)
        assert job.status == pb.JOB_STATUS_FAILED
        expected = model({email(2): ("A", "L2")}, rows, mode, check=True, unique=False)
        entries = await entries_of(stub, job.id)
        assert [outcome_of(e) for e in entries] == expected.outcomes
        assert await held_rows(db) == expected.table
        assert_summary_is_the_entries_errors(job, entries)
    finally:
        await db.execute("ALTER TABLE contacts DROP CONSTRAINT IF EXISTS probe_no_x")


@pytest.mark.parametrize("mode", [pb.IMPORT_MODE_UPSERT, pb.IMPORT_MODE_INSERT], ids=["up", "in"])
async def test_two_new_rows_of_one_chunk_an_extra_unique_index_refuses_together_fail_alone(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection, mode: int
) -> None:
    # One chunk: k01 and k02 are new and share a last name the index wants unique; k03 is
    # held, after them in key order. insert_new fails, `apply` fails, rows go one by one:
    # the later of the two is refused alone.
    await seed_table(db, {email(3): ("A", "L3")}, [])
    await db.execute("CREATE UNIQUE INDEX probe_unique_last ON contacts (tenant, last_name)")
    try:
        rows = [(email(0), "B", "L0"), (email(1), "B", "SAME"), (email(2), "B", "SAME")]
        rows.append((email(3), "B", "L3"))
        job = await import_and_wait(stub, csv_of(rows), mode=mode)
        entries = await entries_of(stub, job.id)
        held = (
            ("UPDATED", "") if mode == pb.IMPORT_MODE_UPSERT else ("SKIPPED", "key already exists")
        )
        assert [outcome_of(e) for e in entries] == [
            ("CREATED", ""),
            ("CREATED", ""),
            ("FAILED", "REJECTED_BY_DATABASE"),
            held,
        ]
        assert_summary_is_the_entries_errors(job, entries)
        expected = {email(0): ("B", "L0"), email(1): ("B", "SAME")}
        expected[email(3)] = ("B", "L3") if mode == pb.IMPORT_MODE_UPSERT else ("A", "L3")
        assert await held_rows(db) == expected
    finally:
        await db.execute("DROP INDEX IF EXISTS probe_unique_last")


@pytest.mark.parametrize(
    ("dry_run", "refused"), [(False, True), (True, False), (False, False)], ids=str
)
async def test_an_all_or_nothing_job_of_two_batches_is_what_the_model_says(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection, dry_run: bool, refused: bool
) -> None:
    # One chunk, two statements' worth of rows (BATCH_ROWS): the first batch all new
    # (insert_new), the second meets a held key midway, and perhaps a row the CHECK refuses.
    start = {email(BATCH_ROWS + 2): ("A", f"L{BATCH_ROWS + 2}")}
    rows = [(email(k), "B", f"L{k}") for k in range(BATCH_ROWS + 4)]
    if refused:
        rows[BATCH_ROWS + 3] = (email(BATCH_ROWS + 3), "X", f"L{BATCH_ROWS + 3}")
    await seed_table(db, start, [])
    await db.execute("ALTER TABLE contacts ADD CONSTRAINT probe_no_x CHECK (first_name <> 'X')")
    try:
        job = await import_and_wait(
            stub, csv_of(rows), all_or_nothing=True, dry_run=dry_run, piece=1 << 16
        )
        expected = model(
            start, rows, pb.IMPORT_MODE_UPSERT, check=True, unique=False, dry_run=dry_run,
            all_or_nothing=True,
        )  # fmt: skip
        entries = await entries_of(stub, job.id)
        assert [outcome_of(e) for e in entries] == expected.outcomes
        assert counts(job) == dict(Counter(COUNT_OF[s] for s, _ in expected.outcomes))
        assert await held_rows(db) == expected.table
        assert_summary_is_the_entries_errors(job, entries)
    finally:
        await db.execute("ALTER TABLE contacts DROP CONSTRAINT IF EXISTS probe_no_x")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", [pb.IMPORT_MODE_UPSERT, pb.IMPORT_MODE_INSERT], ids=["up", "in"])
async def test_two_jobs_importing_overlapping_new_keys_at_once_each_key_goes_in_once(
    make_app: AppFactory, db: asyncpg.Connection, mode: int, seed: int
) -> None:
    app: Application = await make_app(workers=4)
    shuffle = random.Random(seed)
    held = {email(k): ("S", f"L{k}") for k in (3, 11, 17)}
    await seed_table(db, held, [])
    files = {}
    for name, keys in (("A", list(range(0, 18))), ("B", list(range(6, 24)))):
        shuffle.shuffle(keys)
        files[name] = [(email(k), name, f"L{k}") for k in keys]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        jobs = await asyncio.gather(
            *(import_and_wait(stub, csv_of(rows), mode=mode) for rows in files.values())
        )
        outcomes: dict[str, dict[str, str]] = {}
        for name, job in zip(files, jobs, strict=True):
            entries = await entries_of(stub, job.id)
            assert_summary_is_the_entries_errors(job, entries)
            outcomes[name] = {e.key: STATUS_NAMES[e.status] for e in entries}
            assert "FAILED" not in outcomes[name].values(), (name, entries)
    table = await held_rows(db)
    for k in range(24):
        key = email(k)
        statuses = [outcomes[n][key] for n in files if key in outcomes[n]]
        if key in held:
            kept = "UPDATED" if mode == pb.IMPORT_MODE_UPSERT else "SKIPPED"
            assert statuses == [kept] * len(statuses), (key, statuses)
        else:
            assert statuses.count("CREATED") == 1, (key, statuses)
            other = "UPDATED" if mode == pb.IMPORT_MODE_UPSERT else "SKIPPED"
            assert sorted(statuses) == sorted(["CREATED", *[other] * (len(statuses) - 1)])
        writers = [n for n in files if outcomes[n].get(key) in ("CREATED", "UPDATED")]
        assert table[key][0] in (writers or ["S"]), (key, statuses, table[key])
        if mode == pb.IMPORT_MODE_INSERT and key not in held:
            creator = next(n for n in files if outcomes[n].get(key) == "CREATED")
            assert table[key] == (creator, f"L{k}")


# ---------------------------------------------------------------------------------------
# 2. The error summary counted at staging is the FAILED entries' errors, for any file.

# email, first_name, score of one row, for any key (keys repeat).
KINDS: dict[str, tuple[str, str, str]] = {
    "good": ("k{key}@x.com", "A", "1"),
    "good, the key in capitals": ("K{key}@X.COM", "A", "2"),
    "bad email": ("bad{key}", "A", "1"),
    "score too large": ("k{key}@x.com", "A", "1000"),
    "score not a number": ("k{key}@x.com", "A", "x"),
    "everything wrong": ("bad{key}@", "N" * 101, "-5000"),
    "name with comma, quote and newline": ("k{key}@x.com", 'A, "b"\nc', "3"),
    "no email": ("", "A", "1"),
    "blank score": ("k{key}@x.com", "", ""),
    "name too long": ("k{key}@x.com", "N" * 101, "4"),
    "a NUL in the name": ("k{key}@x.com", "A\x00B", "5"),
    "a NUL in the key": ("k{key}\x00@x.com", "A", "6"),
}
SHAPES = ["fields", "a field too many", "a field too few", "a column only this row has"]
FORMATS = {"csv": pb.FILE_FORMAT_CSV, "jsonl": pb.FILE_FORMAT_JSONL, "xlsx": pb.FILE_FORMAT_XLSX}


def render(rows: list[tuple[int, str, str]], fmt: str, header: str, quote_all: bool) -> bytes:
    if fmt == "jsonl":
        lines = []
        for key, kind, shape in rows:
            mail, name, score = (v.format(key=key) for v in KINDS[kind])
            if shape == "a field too many":
                # (A first line that is an array is a JSON document: the file is refused.)
                array = key % 2 == 0 and lines
                lines.append(json.dumps([mail]) if array else "{not json " + mail)
                continue
            record: dict[str, object] = {header: mail, "first_name": name}
            if shape != "a field too few":
                record["score"] = int(score) if score.lstrip("-").isdigit() else score
            if shape == "a column only this row has":
                record["last_name"] = "N" * (key % 5 * 30)  # too long from key 4
            lines.append(json.dumps(record))
        return ("\n".join(lines) + "\n").encode()
    if fmt == "xlsx":
        sheet: list[list[Cell]] = [[header, "first_name", "score"]]
        for key, kind, shape in rows:
            mail, name, score = (v.format(key=key).replace("\x00", "") for v in KINDS[kind])
            cells: list[Cell] = [mail, name, int(score) if score.lstrip("-").isdigit() else score]
            if shape in ("a field too many", "a column only this row has"):
                cells.append("more")
            elif shape == "a field too few":
                cells = cells[:2]
            sheet.append(cells)
        return xlsx({"Sheet1": sheet})
    out = io.StringIO()
    writer = csv.writer(
        out, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator="\n"
    )
    writer.writerow([header, "first_name", "score"])
    for key, kind, shape in rows:
        fields = [v.format(key=key) for v in KINDS[kind]]
        if shape in ("a field too many", "a column only this row has"):
            fields.append("more")
        elif shape == "a field too few":
            fields = fields[:2]
        writer.writerow(fields)
    return out.getvalue().encode()


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 4),
            st.sampled_from(sorted(KINDS)),
            st.sampled_from(["fields", "fields", *SHAPES]),
        ),
        min_size=1,
        max_size=14,
    ),
    fmt=st.sampled_from(["csv", "jsonl", "xlsx"]),
    quote_all=st.booleans(),
    mapped=st.booleans(),
    all_or_nothing=st.booleans(),
    dry_run=st.booleans(),
    mode=st.sampled_from([pb.IMPORT_MODE_UPSERT, pb.IMPORT_MODE_INSERT, pb.IMPORT_MODE_UPDATE]),
    max_errors=st.none() | st.integers(0, 3),
)
async def test_the_error_summary_is_the_failed_entries_errors_for_any_format_and_shape(
    stub: pb_grpc.ImportServiceStub,
    rows: list[tuple[int, str, str]],
    fmt: str,
    quote_all: bool,
    mapped: bool,
    all_or_nothing: bool,
    dry_run: bool,
    mode: int,
    max_errors: int | None,
) -> None:
    header = "Mail Address" if mapped else "email"
    spec: dict[str, Any] = {
        "format": FORMATS[fmt],
        "all_or_nothing": all_or_nothing,
        "dry_run": dry_run,
        "mode": mode,
    }
    if mapped:
        spec["column_map"] = {header: "email"}
    if max_errors is not None:
        spec["max_errors"] = max_errors
    job = await import_and_wait(stub, render(rows, fmt, header, quote_all), **spec)
    if job.total_rows == 0:
        # Enough NULs and the file is taken for binary data: refused whole, no summary.
        assert "binary data" in job.error.message and not job.error_summary, job
        return
    assert job.total_rows == len(rows), job
    entries = await entries_of(stub, job.id)
    assert len(entries) == len(rows)
    assert_summary_is_the_entries_errors(job, entries)
    fetched = await stub.GetJob(pb.GetJobRequest(id=job.id))
    assert fetched.error_summary == job.error_summary
    if job.failed_count:
        # A retry of the failed rows is staged the same way: its summary too.
        retry = await stub.RetryJob(
            pb.RetryJobRequest(id=job.id, statuses=[pb.ENTRY_STATUS_FAILED])
        )
        retry = await wait_for_job(stub, retry.id)
        assert_summary_is_the_entries_errors(retry, await entries_of(stub, retry.id))


@pytest.mark.parametrize(
    ("fmt", "quote_all"),
    [("csv", False), ("csv", True), ("jsonl", False)],
    ids=["csv-fast", "csv-quoted", "jsonl"],
)
async def test_the_error_summary_of_a_file_of_several_blocks_is_the_failed_entries_errors(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection, fmt: str, quote_all: bool
) -> None:
    # 60,000 rows (over 1 MiB: several blocks; over 5,000: several reference batches), keys
    # repeating across blocks. All or nothing with failed rows: staging is the whole job.
    shuffle = random.Random(7)
    kinds = sorted(KINDS)
    rows = [
        (shuffle.randrange(3000), shuffle.choice(kinds), shuffle.choice(["fields", *SHAPES]))
        for _ in range(60_000)
    ]
    data = render(rows, fmt, "email", quote_all).replace(b"\x00", b"")
    job = await import_and_wait(stub, data, all_or_nothing=True, piece=1 << 18, format=FORMATS[fmt])
    assert job.total_rows == len(rows) and job.status == pb.JOB_STATUS_FAILED
    stored = await db.fetch(
        """SELECT error ->> 'code' AS code, coalesce(error ->> 'field', '') AS field,
                  count(*) AS count
           FROM import_entries e, jsonb_array_elements(e.errors) AS error
           WHERE e.job_id = $1 AND e.status = 'FAILED' GROUP BY 1, 2""",
        uuid.UUID(job.id),
    )
    assert {(c.code, c.field): c.count for c in job.error_summary} == {
        (r["code"], r["field"]): r["count"] for r in stored
    }
    assert job.failed_count == await db.fetchval(
        "SELECT count(*) FROM import_entries WHERE job_id = $1 AND status = 'FAILED'",
        uuid.UUID(job.id),
    )
    assert job.skipped_count > 0


def probe_hook(row: Mapping[str, Any]) -> Iterable[RowError]:
    """The row validator of PROBE_TYPE: multiples of 3 refused by column, of 5 whole."""
    if row["n"] % 3 == 0:
        yield RowError("THREE", "n", str(row["n"]), "a multiple of 3")
    if row["n"] % 5 == 0:
        yield RowError("FIVE", "", str(row["n"]), "a multiple of 5")


PROBE_TYPE = f"""
name = "probe_numbers"
table = "probe_numbers"
key = ["n"]
modes = ["INSERT", "UPSERT"]
validator = "{__name__}:probe_hook"

[[columns]]
name = "n"
type = "int"
required = true

[[columns]]
name = "label"
type = "string"
max_length = 3
"""


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["1", "2", "3", "5", "15", "x", ""]), st.sampled_from(["a", "long"])
        ),
        min_size=1,
        max_size=12,
    ),
    all_or_nothing=st.booleans(),
)
async def test_the_error_summary_counts_a_row_validators_errors(
    hooked: pb_grpc.ImportServiceStub, rows: list[tuple[str, str]], all_or_nothing: bool
) -> None:
    data = "n,label\n" + "".join(f"{n},{label}\n" for n, label in rows)
    job = await import_and_wait(
        hooked, data.encode(), import_type="probe_numbers", all_or_nothing=all_or_nothing
    )
    assert job.total_rows == len(rows)
    assert_summary_is_the_entries_errors(job, await entries_of(hooked, job.id))


async def test_the_row_validator_of_the_probe_type_runs(
    hooked: pb_grpc.ImportServiceStub,
) -> None:
    data = b"n,label\n3,a\n5,a\n15,a\n4,a\n"
    job = await import_and_wait(hooked, data, import_type="probe_numbers")
    assert {(c.code, c.field): c.count for c in job.error_summary} == {
        ("THREE", "n"): 2,
        ("FIVE", ""): 2,
    }
    assert counts(job) == {"created": 1, "failed": 3}


@pytest.fixture
async def hooked(
    make_app: AppFactory, tmp_path: Path, db: asyncpg.Connection
) -> AsyncIterator[pb_grpc.ImportServiceStub]:
    """A server that knows PROBE_TYPE (and only it)."""
    types = tmp_path / "types"
    types.mkdir()
    (types / "probe_numbers.toml").write_text(PROBE_TYPE)
    app: Application = await make_app(types_dir=types)
    await db.execute("TRUNCATE probe_numbers")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield pb_grpc.ImportServiceStub(channel)


# ---------------------------------------------------------------------------------------
# 3. Every connection: no JIT, and the caller's own settings kept.


async def test_connections_have_no_jit_and_keep_the_callers_settings(database_url: str) -> None:
    connection = await connect(database_url, server_settings={"application_name": "probe-own"})
    try:
        assert await connection.fetchval("SHOW jit") == "off"
        assert await connection.fetchval("SHOW application_name") == "probe-own"
        assert (
            await connection.fetchval(
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
            == "probe-own"
        )
    finally:
        await connection.close()
    overriding = await connect(database_url, server_settings={"jit": "on"})
    try:
        assert await overriding.fetchval("SHOW jit") == "on"  # a caller's own word wins
    finally:
        await overriding.close()
    query = "&" if "?" in database_url else "?"  # the embedded server's URL has a query
    named = await create_pool(f"{database_url}{query}application_name=probe-dsn", 1)
    try:
        async with named.acquire() as pooled:
            assert await pooled.fetchval("SHOW application_name") == "probe-dsn"
            assert await pooled.fetchval("SHOW jit") == "off"
    finally:
        await named.close()
    operators = await create_pool(f"{database_url}{query}jit=on", 1)
    try:
        async with operators.acquire() as pooled:
            assert await pooled.fetchval("SHOW jit") == "on"  # the URL's own setting stays
    finally:
        await operators.close()
    plain = await open_connection(database_url)
    try:
        assert await plain.fetchval("SHOW jit") == "off"
    finally:
        await plain.close()
    pool = await create_pool(database_url, 2)
    try:
        async with pool.acquire() as pooled:
            assert await pooled.fetchval("SHOW jit") == "off"
    finally:
        await pool.close()


async def test_the_servers_listener_and_monitor_connect_under_their_own_names(
    app: Application, db: asyncpg.Connection
) -> None:
    names = {LISTENER_NAME, MONITOR_NAME}
    async with asyncio.timeout(10):
        while True:
            seen = {
                r["application_name"]
                for r in await db.fetch(
                    "SELECT application_name FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                )
            }
            if names <= seen:
                break
            await asyncio.sleep(0.1)
    # The server's own pool has no JIT either.
    pool = app._pool
    assert pool is not None
    async with pool.acquire() as pooled:
        assert await pooled.fetchval("SHOW jit") == "off"


async def wait_for_backend(db: asyncpg.Connection, condition: str, within: float = 10) -> None:
    """Returns once another backend of this database matches `condition` (SQL)."""
    async with asyncio.timeout(within):
        while not await db.fetchval(  # noqa: ASYNC110 (another backend's state)
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
            f" AND pid <> pg_backend_pid() AND {condition}"
        ):
            await asyncio.sleep(0.02)


def one_after_the_other(
    start: tuple[str, str] | None, rows: dict[str, tuple[tuple[str, str], int]], order: str
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """What jobs (name -> their row of one key, and mode) do to the key one after the other
    in `order`: each job's outcome, and the row the key ends with."""
    held, outcomes = start, {}
    for job in order:
        row, mode = rows[job]
        if held is None:
            outcomes[job], held = "CREATED", row
        elif mode == pb.IMPORT_MODE_INSERT:
            outcomes[job] = "SKIPPED"
        elif held == row:
            outcomes[job] = "UNCHANGED"
        else:
            outcomes[job], held = "UPDATED", row
    return outcomes, held


@pytest.mark.parametrize("mode", [pb.IMPORT_MODE_UPSERT, pb.IMPORT_MODE_INSERT], ids=["up", "in"])
async def test_insert_new_does_not_deadlock_with_a_job_updating_a_key_it_leaves_unchanged(
    make_app: AppFactory, db: asyncpg.Connection, mode: int
) -> None:
    # Job A (UPSERT k00 new, k01 changed): its insert_new meets k01, so its `apply` runs,
    # which updates k01 (`applied`) and then inserts k00 (`created`), here slowly: a
    # trigger sleeps on A's second insert of k00. Job B (UPSERT or INSERT: k00 new, k01 as
    # the table has it) starts meanwhile: its insert_new inserts k00, then k01, whose unique
    # check waits for A's transaction, while A's insert of k00 waits for B's. PostgreSQL
    # cancels one of the two statements; that one falls back (insert_new to `apply`,
    # `apply` to one row at a time) instead of failing its chunk, which would wait out its
    # lease and use up an attempt.
    app: Application = await make_app(workers=2, lease_seconds=3.0)
    await seed_table(db, {email(1): ("S", "L1")}, [])
    await db.execute("CREATE SEQUENCE probe_calls")
    await db.execute(
        "CREATE FUNCTION probe_slow() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN IF nextval('probe_calls') = 2 THEN PERFORM pg_sleep(1.5); END IF;"
        " RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER probe_slow BEFORE INSERT ON contacts FOR EACH ROW"
        " WHEN (NEW.first_name = 'SLOW') EXECUTE FUNCTION probe_slow()"
    )
    a_rows = [(email(0), "SLOW", "L0"), (email(1), "A", "L1")]
    b_rows = [(email(0), "B", "L0"), (email(1), "S", "L1")]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            a = asyncio.ensure_future(import_and_wait(stub, csv_of(a_rows)))
            # A's `apply` (after its insert_new met k01), asleep inserting k00.
            await wait_for_backend(db, "wait_event = 'PgSleep' AND query LIKE '%f.differs%'")
            b = await import_and_wait(stub, csv_of(b_rows), mode=mode)
            a_job = await a
            a_out = [STATUS_NAMES[e.status] for e in await entries_of(stub, a_job.id)]
            b_out = [STATUS_NAMES[e.status] for e in await entries_of(stub, b.id)]
    finally:
        await db.execute("DROP TRIGGER IF EXISTS probe_slow ON contacts")
        await db.execute("DROP FUNCTION IF EXISTS probe_slow()")
        await db.execute("DROP SEQUENCE IF EXISTS probe_calls")
    # No chunk failed on the way.
    attempts = await db.fetch("SELECT attempts FROM import_chunks ORDER BY attempts")
    assert [r["attempts"] for r in attempts] == [1, 1]
    # Each key ends as the two jobs writing it one after the other, in either order, leave
    # it (which job went first may differ from key to key: each statement reads its own
    # snapshot).
    held = await held_rows(db)
    starts: list[tuple[str, str] | None] = [None, ("S", "L1")]
    for key, start in enumerate(starts):
        rows = {
            "A": (a_rows[key][1:], pb.IMPORT_MODE_UPSERT),
            "B": (b_rows[key][1:], mode),
        }
        got = ({"A": a_out[key], "B": b_out[key]}, held[email(key)])
        assert got in [one_after_the_other(start, rows, order) for order in ("AB", "BA")], key
