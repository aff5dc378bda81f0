"""An HTTP server on 127.0.0.1 (a free port) serving files from memory, with the behaviours
remote sources must cope with: ranges, dropped connections, redirects, errors, stalls."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

PIECE = 64 * 1024


@dataclass
class FileServer:
    """Serves `files` at /files/<name> (with an ETag and ranges); see `_routes` for the rest.
    `drops` responses of /files break off after `drop_after` body bytes (then `on_drop` runs)."""

    files: dict[str, bytes] = field(default_factory=dict)
    drops: int = 0
    drop_after: int = 0
    on_drop: Callable[[], None] = lambda: None
    etags: bool = True  # without one, a dropped download cannot be resumed safely
    requests: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # as requested, query included
    sent: int = 0  # body bytes written by the streaming routes
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> FileServer:
        app = web.Application()
        app.add_routes(self._routes())
        # A client that goes away cancels its handler (stalls and endless streams end).
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The URL of `path` on this server (through another host name if given)."""
        return f"http://{host}:{self.port}{path}"

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/files/{name}", self._file),
            web.get("/hops/{count}/{name}", self._hops),
            web.get("/to", self._redirect_to),
            web.get("/status/{code}", self._status),
            web.get("/stall", self._stall),
            web.get("/trickle", self._trickle),
            web.get("/generated/{size}", self._generated),
            web.get("/announces/{size}", self._announces),
        ]

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        self.paths.append(request.raw_path)
        data = self.files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        start = 0
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes=") and request.headers.get("If-Range", etag) == etag:
            start = int(wanted.removeprefix("bytes=").removesuffix("-"))
        response = web.StreamResponse(status=206 if start else 200)
        if self.etags:
            response.headers["ETag"] = etag
        response.headers["Accept-Ranges"] = "bytes"
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response.content_length = len(data) - start
        await response.prepare(request)
        if self.drops:
            self.drops -= 1
            await response.write(data[start : start + self.drop_after])
            self.on_drop()
            assert request.transport is not None
            request.transport.close()  # mid-file: the client sees a short body
            return response
        await response.write(data[start:])
        return response

    async def _hops(self, request: web.Request) -> web.StreamResponse:
        count, name = int(request.match_info["count"]), request.match_info["name"]
        if count:
            raise web.HTTPFound(f"/hops/{count - 1}/{name}")
        raise web.HTTPFound(f"/files/{name}")

    async def _redirect_to(self, request: web.Request) -> web.StreamResponse:
        if "location" not in request.query:
            return web.Response(status=302)
        raise web.HTTPFound(request.query["location"])

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="no file here")

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await asyncio.sleep(60)
        return response

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(1200):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    async def _generated(self, request: web.Request) -> web.StreamResponse:
        """`size` bytes made as they are sent; "?chunked" leaves the length out."""
        size = int(request.match_info["size"])
        response = web.StreamResponse()
        if "chunked" in request.query:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        piece = b"a@x.com\n" * (PIECE // 8)
        while self.sent < size:
            part = piece[: size - self.sent]
            await response.write(part)
            self.sent += len(part)
        return response

    async def _announces(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = int(request.match_info["size"])
        await response.prepare(request)
        await asyncio.sleep(60)
        return response
