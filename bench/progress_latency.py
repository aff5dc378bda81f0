"""Benchmark: 1,000 concurrent watchers of one running job on one replica; prints the
p50/p99 delay between a change of the job being committed and each watcher receiving it.

    uv run python bench/progress_latency.py [--watchers 1000] [--rows 300000]

The delay of an event is the watcher's clock at receipt minus the job's `update_time`,
which the database sets with clock_timestamp() when the counters change (a few
milliseconds before the commit, so the figure errs on the high side). Snapshots are not
counted: only events caused by a change while the watcher was connected.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.import_vs_copy import reset, upsert_contacts, write_contacts
from tests.acceptance.processes import serve

CHANNELS = 10


async def watch(stub: pb_grpc.ImportServiceStub, job_id: str, delays: list[float]) -> int:
    """Follows the job to its end; records the delay of every event after the snapshot."""
    events = 0
    async for event in stub.StreamProgress(pb.StreamProgressRequest(id=job_id)):
        received = time.time()
        events += 1
        if events > 1:
            delays.append(received - event.job.update_time.ToDatetime(tzinfo=UTC).timestamp())
    return events


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--chunk-size", default="1000")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        sys.exit("set DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "contacts.csv"
        write_contacts(path, args.rows)
        await reset(database_url)
        settings = {
            "workers": "2",
            "chunk_size": args.chunk_size,
            "max_streams_per_tenant": str(args.watchers),  # every watcher is one tenant's
        }
        with serve(Path(folder), database_url, **settings) as (port, _):
            channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
            stubs = [pb_grpc.ImportServiceStub(c) for c in channels]
            job = await stubs[0].StartImport(upsert_contacts(path))
            delays: list[float] = []
            started = time.perf_counter()
            counts = await asyncio.gather(
                *(watch(stubs[i % CHANNELS], job.id, delays) for i in range(args.watchers))
            )
            elapsed = time.perf_counter() - started
            final = await stubs[0].GetJob(pb.GetJobRequest(id=job.id))
            for channel in channels:
                await channel.close()
        await reset(database_url)

    delays.sort()
    p50 = statistics.median(delays) * 1000
    p99 = delays[int(len(delays) * 0.99) - 1] * 1000
    worst = delays[-1] * 1000
    print(f"{args.watchers} watchers, {args.rows} rows: {pb.JobStatus.Name(final.status)}")
    print(f"events per watcher: min {min(counts)}, max {max(counts)}; run {elapsed:.1f} s")
    print(f"delay commit -> watcher: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
