"""A database outage on demand: a TCP proxy between importd and PostgreSQL that can drop
every connection and refuse new ones, then let them through again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit, urlunsplit


class DatabaseProxy:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server of `upstream_url` (TCP or a Unix
    socket); `url` is `upstream_url` through the proxy."""

    def __init__(self, upstream_url: str) -> None:
        self._upstream = urlsplit(upstream_url)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The upstream URL with the proxy as its host (and no socket folder parameter)."""
        credentials = self._upstream.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(self._upstream._replace(netloc=netloc, query=""))

    async def start(self) -> None:
        """Listens on a free port the first time, on the same port afterwards."""
        self._server = await asyncio.start_server(
            self._forward, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """The outage: every open connection is closed, and new ones are refused."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def restore(self) -> None:
        """The end of the outage: connections are accepted again."""
        await self.start()

    async def close(self) -> None:
        """Stops the proxy."""
        if self._server is not None:
            await self.cut()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        query = parse_qs(self._upstream.query)
        port = self._upstream.port or int(query.get("port", ["5432"])[0])
        if self._upstream.hostname:
            return await asyncio.open_connection(self._upstream.hostname, port)
        return await asyncio.open_unix_connection(f"{query['host'][0]}/.s.PGSQL.{port}")

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await self._open_upstream()
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        try:
            async with asyncio.TaskGroup() as pipes:
                pipes.create_task(_pipe(reader, upstream_writer))
                pipes.create_task(_pipe(upstream_reader, writer))
        finally:
            self._writers.difference_update((writer, upstream_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies until either side closes, then closes the other (so the peer sees the loss)."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def database_proxy(upstream_url: str) -> AsyncIterator[DatabaseProxy]:
    """A started DatabaseProxy, closed when the block ends."""
    proxy = DatabaseProxy(upstream_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
