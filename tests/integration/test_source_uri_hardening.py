"""source_uri against an attacker who swaps the file between the server's checks and its open:
the open never blocks the event loop (a FIFO waits for a writer forever), never follows a
link, and accepts only a regular file; meanwhile the server keeps answering everyone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from importd_server.config import Settings
from tests.conftest import truncate
from tests.rpc import insert_job, rich_error, start_import

HOLD_SECONDS = 30


class SwapAtOpen:
    """Wins the race for the attacker: when any thread of this process is about to open
    `path`, `swap` replaces what is there, and that thread is held until `release` is set,
    so the test can see whether the server still answers while the open is pending."""

    def __init__(self, path: Path, swap: Callable[[Path], None]) -> None:
        self.path = path
        self.swap = swap
        self.reached = threading.Event()
        self.release = threading.Event()

    def on_open(self) -> None:
        self.swap(self.path)
        self.reached.set()
        self.release.wait(HOLD_SECONDS)


# Audit hooks cannot be removed, so one hook serves every test; it acts only while armed.
_armed: dict[str, SwapAtOpen] = {}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _armed and isinstance(args[0], str | os.PathLike):
        swapper = _armed.pop(os.fspath(args[0]), None)
        if swapper is not None:
            swapper.on_open()


sys.addaudithook(_audit)


@contextlib.contextmanager
def armed(swapper: SwapAtOpen) -> Iterator[SwapAtOpen]:
    _armed[str(swapper.path)] = swapper
    try:
        yield swapper
    finally:
        _armed.pop(str(swapper.path), None)
        swapper.release.set()


@contextlib.asynccontextmanager
async def served_from_its_own_thread(settings: Settings, database_url: str) -> AsyncIterator[int]:
    """A server whose event loop runs in a thread of its own, so that a call blocking that
    loop cannot block the test's: yields its port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="importd-under-test")
    thread.start()
    app = Application(settings, database_url)

    async def on_server_loop(coroutine: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))

    try:
        yield await on_server_loop(app.start())
    finally:
        await on_server_loop(app.stop(grace=1.0))
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
        loop.close()


def fifo_at(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def link_to_fifo(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "pipe")


def link_outside(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parents[3] / "globex" / "secret.csv")


def folder_at(path: Path) -> None:
    path.unlink()
    path.mkdir()


SWAPS = {
    "fifo": fifo_at,
    "link-to-fifo": link_to_fifo,
    "link-outside": link_outside,
    "folder": folder_at,
}


async def free_fifo_readers(started: asyncio.Future[Any], fifos: list[Path]) -> None:
    """Opens the FIFOs for writing until the start has answered: a server that blocked on
    one (the bug) is then freed, so that it can stop."""
    async with asyncio.timeout(HOLD_SECONDS):
        while not started.done():
            for fifo in fifos:
                with contextlib.suppress(OSError):  # ENXIO: no reader, nothing to free
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("swap", SWAPS.values(), ids=SWAPS.keys())
async def test_a_file_swapped_just_before_the_open_is_refused_while_the_server_answers(
    settings: Settings,
    database_url: str,
    source_dir: Path,
    db: asyncpg.Connection,
    swap: Callable[[Path], None],
) -> None:
    await truncate(database_url)
    other_job = str(await insert_job(db))
    target = source_dir / "reports" / "x.csv"
    target.parent.mkdir()
    target.write_bytes(b"email\na@x.com\n")
    os.mkfifo(target.parent / "pipe")
    secret = source_dir.parent / "globex" / "secret.csv"
    secret.parent.mkdir()
    secret.write_bytes(b"email\nsecret@globex.com\n")

    async with (
        served_from_its_own_thread(settings, database_url) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = pb_grpc.ImportServiceStub(channel)
        with armed(SwapAtOpen(target, swap)) as swapper:
            started = asyncio.ensure_future(start_import(stub, source_uri=target.as_uri()))
            try:
                assert await asyncio.to_thread(swapper.reached.wait, HOLD_SECONDS)
                # The server's open is held at this moment: every other call still works.
                job = await stub.GetJob(pb.GetJobRequest(id=other_job), timeout=5)
                assert job.id == other_job
            finally:
                swapper.release.set()
                await free_fifo_readers(started, [target, target.parent / "pipe"])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await started
    error = rich_error(refused.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == {"spec.source_uri": "reports/x.csv is not a regular file"}
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 1


@pytest.mark.parametrize(
    ("path", "description"),
    [
        ("reports/missing.csv", "no file at reports/missing.csv"),
        ("../globex/secret.csv", "the path is outside the tenant's folder"),
        ("pipe", "pipe is not a regular file"),
    ],
    ids=["missing", "other-tenant", "fifo"],
)
async def test_source_uri_errors_name_no_server_folder(
    stub: pb_grpc.ImportServiceStub, source_dir: Path, path: str, description: str
) -> None:
    os.mkfifo(source_dir / "pipe")
    (source_dir.parent / "globex").mkdir()
    (source_dir.parent / "globex" / "secret.csv").write_bytes(b"email\nsecret@globex.com\n")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await start_import(stub, source_uri=f"file://{source_dir}/{path}")
    assert rich_error(refused.value).field_violations == {"spec.source_uri": description}
    assert str(source_dir.parent) not in (refused.value.details() or "")
