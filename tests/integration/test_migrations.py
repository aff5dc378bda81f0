"""Migrations: applied once, in order, safely when replicas start together; jobs written
before a migration stay readable and runnable after it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from importd_server.config import Settings
from importd_server.store.migrate import load_migrations, migrate
from importd_server.store.pool import create_pool
from tests.conftest import prepare_schema, with_database
from tests.rpc import counts, entries_of, insert_job, wait_for_job


async def test_replicas_starting_together_apply_each_migration_exactly_once(
    server_url: str,
) -> None:
    name = "importd_migrate_race"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    pools = [await create_pool(with_database(server_url, name), 2) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(pool) for pool in pools))
        versions = [m.version for m in load_migrations()]
        # Exactly one replica applied everything; the others found nothing left to do.
        assert sorted(applied, key=len) == [[], [], versions]
        rows = await pools[0].fetch("SELECT version FROM importd_migrations ORDER BY version")
        assert [r["version"] for r in rows] == versions
        assert await migrate(pools[0]) == []
    finally:
        for pool in pools:
            await pool.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


async def test_jobs_staged_before_engine_v2_stay_readable_and_new_workers_finish_them(
    server_url: str, settings: Settings
) -> None:
    # Jobs as the version before migration engine_v2 left them: one finished (every outcome in
    # its entries), one queued (rows not validated at staging, keys resolved).
    name = "importd_upgrade_to_engine_v2"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    database = await asyncpg.connect(url)
    application = None
    try:
        await database.execute(
            "CREATE TABLE importd_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        engine_v2 = next(m.version for m in load_migrations() if m.name == "engine_v2")
        for migration in load_migrations():
            if migration.version < engine_v2:
                await database.execute(migration.sql)
                await database.execute(
                    "INSERT INTO importd_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
        finished = await insert_job(
            database,
            status="PARTIALLY_SUCCEEDED",
            columns=["email"],
            total_rows=2,
            processed_rows=2,
            created_count=1,
            failed_count=1,
        )
        error = json.dumps(
            [
                {
                    "code": "INVALID_EMAIL",
                    "field": "email",
                    "value": "x",
                    "message": "not a valid e-mail address",
                }
            ]
        )
        await database.execute(
            "INSERT INTO import_entries (job_id, row_number, line_number, status, key, raw, errors)"
            " VALUES ($1, 1, 2, 'CREATED', 'a@x.com', '{a@x.com}', NULL),"
            "        ($1, 2, 3, 'FAILED', NULL, '{x}', $2::jsonb)",
            finished,
            error,
        )
        await database.execute(
            "INSERT INTO import_chunks (job_id, chunk_number, first_row, last_row, status)"
            " VALUES ($1, 1, 1, 2, 'DONE')",
            finished,
        )
        queued = await insert_job(database, columns=["email", "score"], total_rows=3, dry_run=False)
        await database.execute(
            "INSERT INTO import_entries (job_id, row_number, line_number, status, key, raw)"
            " VALUES ($1, 1, 2, 'PENDING', 'b@x.com', '{b@x.com,5}'),"
            "        ($1, 2, 3, 'PENDING', NULL, '{bad,1}'),"
            "        ($1, 3, 4, 'PENDING', 'C@x.com', '{\" C@X.COM \",7}')",
            queued,
        )
        await database.execute(
            "INSERT INTO import_chunks (job_id, chunk_number, first_row, last_row)"
            " VALUES ($1, 1, 1, 2), ($1, 2, 3, 3)",
            queued,
        )
        await prepare_schema(url)  # applies engine_v2 and later, creates the target tables

        application = Application(replace(settings, workers=1), url)
        await application.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{application.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            old = await entries_of(stub, str(finished))
            assert [(e.status, [x.code for x in e.errors]) for e in old] == [
                (pb.ENTRY_STATUS_CREATED, []),
                (pb.ENTRY_STATUS_FAILED, ["INVALID_EMAIL"]),
            ]
            job = await wait_for_job(stub, str(queued))
            assert counts(job) == {"created": 2, "failed": 1}
            entries = await entries_of(stub, str(queued))
            assert [(e.status, [x.code for x in e.errors]) for e in entries] == [
                (pb.ENTRY_STATUS_CREATED, []),
                (pb.ENTRY_STATUS_FAILED, ["INVALID_EMAIL"]),
                (pb.ENTRY_STATUS_CREATED, []),
            ]
        rows = await database.fetch("SELECT email, score FROM contacts ORDER BY email")
        assert [tuple(r) for r in rows] == [("C@x.com", 7), ("b@x.com", 5)]
    finally:
        if application is not None:
            await application.stop(grace=1.0)
        await database.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_recorded_previous_values_are_compressed_with_lz4_where_postgresql_has_it(
    db: asyncpg.Connection,
) -> None:
    has_lz4 = await db.fetchval(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    compression = await db.fetchval(
        "SELECT attcompression::text FROM pg_attribute"
        " WHERE attrelid = 'import_before_images'::regclass AND attname = 'images'"
    )
    assert compression == ("l" if has_lz4 else "")
