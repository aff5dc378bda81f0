"""HttpServer: the HTTP port on the server's own event loop (aiohttp): the gateway's routes,
the download links and the page, with JSON errors for anything else."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import structlog
from aiohttp import web
from google.rpc import code_pb2, status_pb2

from importd.v1 import import_service_pb2 as pb
from importd_server.api.status import status_of
from importd_server.config import Settings
from importd_server.http.downloads import LinkDownloads
from importd_server.http.gateway import Gateway, status_response
from importd_server.http.routes import routes_of

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
# The page loads nothing from elsewhere (it works offline) and may not be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Download links carry their signature in the query: never hand it on as a referrer.
    "Referrer-Policy": "no-referrer",
}
# An HTTP error of aiohttp's own (no route, wrong method, body too large) as a gRPC code.
_CODE_OF_HTTP_ERROR = {
    400: code_pb2.INVALID_ARGUMENT,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    413: code_pb2.RESOURCE_EXHAUSTED,
}
# Upload pieces sent on to the gRPC service, well under its message limit.
MAX_PIECE_BYTES = 256 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as google.rpc.Status JSON, aiohttp's own (no such route) included."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _CODE_OF_HTTP_ERROR.get(error.status, code_pb2.UNKNOWN)
        message = f"{error.reason}: {request.method} {request.path[:200]}"
        return status_response(status_pb2.Status(code=code, message=message), error.status)
    except Exception as error:
        return status_response(status_of(error, f"HTTP {request.method}"))


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


class HttpServer:
    """Serves the HTTP port, calling the gRPC service at `grpc_target` (a private socket)."""

    def __init__(self, settings: Settings, grpc_target: str) -> None:
        self._settings = settings
        self._target = grpc_target
        self._socket: socket.socket | None = None
        self._channel: grpc.aio.Channel | None = None
        self._runner: web.AppRunner | None = None

    def bind(self) -> int:
        """Takes the port (before serving, so that links can name it); returns it."""
        settings = self._settings
        assert settings.http_port is not None
        self._socket = socket.create_server((settings.http_host, settings.http_port))
        port: int = self._socket.getsockname()[1]
        return port

    async def start(self, downloads: LinkDownloads) -> None:
        """Serves on the bound port; `downloads` serves the links."""
        assert self._socket is not None, "bind() first"
        limit = self._settings.max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            self._target,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ],
        )
        service = pb.DESCRIPTOR.services_by_name["ImportService"]
        gateway = Gateway(
            self._channel, routes_of(service.methods), min(MAX_PIECE_BYTES, limit // 2)
        )
        app = web.Application(middlewares=[_answers])
        app.on_response_prepare.append(_secure)
        gateway.add_routes(app)
        downloads.add_route(app)
        app.router.add_get("/", _page)
        app.router.add_static("/static/", STATIC)
        # handler_cancellation: a client that leaves cancels its handler, and so its RPC.
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=self._settings.grace_seconds,
        )
        await self._runner.setup()
        site = web.SockSite(self._runner, self._socket, ssl_context=self._ssl_context())
        await site.start()

    def _ssl_context(self) -> ssl.SSLContext | None:
        settings = self._settings
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        return context

    async def stop(self) -> None:
        """Stops listening; running requests get the grace period; closes the channel."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
