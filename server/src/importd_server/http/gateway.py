"""The HTTP/JSON gateway: each annotated RPC as an HTTP route that calls the server's own
gRPC service over a private channel, forwarding the Authorization header as metadata.

So every check (token, scope, tenancy, test or live, limits) is the very code gRPC callers
meet, and so is every error: the gRPC status becomes google.rpc.Status JSON with the HTTP
status grpc-gateway gives its code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from importd_server.api.status import status_of
from importd_server.errors import InvalidArgument
from importd_server.http.routes import Route, message_class

log = structlog.get_logger(__name__)

Unary = grpc.aio.UnaryUnaryMultiCallable[Any, Any]
ServerStream = grpc.aio.UnaryStreamMultiCallable[Any, Any]
ClientStream = grpc.aio.StreamUnaryMultiCallable[Any, Any]

# grpc-gateway's HTTP status for each gRPC code (runtime.HTTPStatusFromCode).
HTTP_STATUS = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}

# The media type of each download (a server stream with a bytes response_body).
DOWNLOAD_TYPES = {"ExportEntries": "text/csv; charset=utf-8"}
# The first message of a client stream, as JSON, besides what the query sets.
REQUEST_HEADER = "Importd-Request"
# Unary calls end within this; streams last as long as their RPC.
UNARY_DEADLINE_SECONDS = 60.0
# An SSE comment this often keeps proxies from closing a quiet progress stream.
SSE_KEEPALIVE_SECONDS = 15.0


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    """A google.rpc.Status as grpc-gateway writes it: code, message, details with @type."""
    result: dict[str, Any] = json_format.MessageToDict(status)
    result.setdefault("code", status.code)
    result.setdefault("message", status.message)
    return result


def status_response(status: status_pb2.Status, http_status: int | None = None) -> web.Response:
    """An error answer: the status as JSON, with grpc-gateway's HTTP status for its code."""
    return web.json_response(
        status_json(status),
        status=http_status or HTTP_STATUS.get(status.code, 500),
        headers={"Cache-Control": "no-store"},
    )


def message_json(message: Message) -> dict[str, Any]:
    """A message as proto3 JSON (camelCase), every field present."""
    result: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True
    )
    return result


def _call_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return status


class Gateway:
    """The annotated routes, served by calling the gRPC service through `channel`."""

    def __init__(self, channel: grpc.aio.Channel, routes: list[Route], piece_bytes: int) -> None:
        self._channel = channel
        self._routes = routes
        self._piece_bytes = piece_bytes

    def add_routes(self, app: web.Application) -> None:
        """Adds one aiohttp route per binding."""
        for route in self._routes:
            handler = self._handler(route)
            app.router.add_route(route.verb, route.aiohttp_path, handler, name=route.method.name)

    def _handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        request_class = message_class(route.method.input_type)
        response_class = message_class(route.method.output_type)
        serialize, deserialize = request_class.SerializeToString, response_class.FromString
        method = route.method
        if method.client_streaming:
            upload = self._channel.stream_unary(route.rpc_path, serialize, deserialize)
            return functools.partial(self._upload, route, upload)
        if method.server_streaming:
            stream = self._channel.unary_stream(route.rpc_path, serialize, deserialize)
            if route.response_body:
                return functools.partial(self._download, route, stream)
            return functools.partial(self._events, route, stream)
        unary = self._channel.unary_unary(route.rpc_path, serialize, deserialize)
        return functools.partial(self._unary, route, unary)

    async def _unary(self, route: Route, call: Unary, request: web.Request) -> web.StreamResponse:
        try:
            message = route.request_message(
                _path_values(request), request.query.items(), await _json_body(route, request)
            )
            response = await call(
                message, metadata=_metadata(request), timeout=UNARY_DEADLINE_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            return status_response(_call_status(error))
        except InvalidArgument as error:
            return status_response(status_of(error, route.method.name))
        return web.json_response(message_json(response), headers={"Cache-Control": "no-store"})

    async def _events(
        self,
        route: Route,
        stream: grpc.aio.UnaryStreamMultiCallable[Any, Any],
        request: web.Request,
    ) -> web.StreamResponse:
        """A server stream as Server-Sent Events: one `data:` JSON message per event. The
        first message is awaited before answering, so an error before it (a bad token, no
        such job) is an ordinary HTTP error; one after it is an `error` event."""
        opened = await _open_stream(route, stream, request)
        if isinstance(opened, web.Response):
            return opened
        call, first = opened
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass events on as they come
            }
        )
        await response.prepare(request)
        try:
            async for item in _with_keepalives(call, first):
                if item is None:
                    await response.write(b": keep-alive\n\n")
                else:
                    await response.write(_event("", message_json(item)))
        except grpc.aio.AioRpcError as error:
            await response.write(_event("error", status_json(_call_status(error))))
        except ConnectionResetError:
            return response  # the watcher left
        finally:
            call.cancel()  # whatever ended the answer ends the RPC too
        await response.write_eof()
        return response

    async def _download(
        self,
        route: Route,
        stream: grpc.aio.UnaryStreamMultiCallable[Any, Any],
        request: web.Request,
    ) -> web.StreamResponse:
        """A server stream of byte pieces as one streamed HTTP body."""
        opened = await _open_stream(route, stream, request)
        if isinstance(opened, web.Response):
            return opened
        call, first = opened
        response = web.StreamResponse(
            headers={
                "Content-Type": DOWNLOAD_TYPES.get(route.method.name, "application/octet-stream"),
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        try:
            item = first
            while item is not grpc.aio.EOF:
                await response.write(getattr(item, route.response_body))
                item = await call.read()
        except grpc.aio.AioRpcError as error:
            # Too late for a status: the body is cut short, which the client sees as an error.
            log.warning("download cut short", rpc=route.method.name, code=error.code().name)
            return response
        except ConnectionResetError:
            return response  # the client left
        finally:
            call.cancel()
        await response.write_eof()
        return response

    async def _upload(
        self,
        route: Route,
        upload: grpc.aio.StreamUnaryMultiCallable[Any, Any],
        request: web.Request,
    ) -> web.StreamResponse:
        """A client stream from a streamed body: the first message from the path, the query
        and the Importd-Request header; then the body, piece by piece, never held whole."""
        try:
            first = route.request_message(
                _path_values(request), request.query.items(), _header_json(request)
            )
        except InvalidArgument as error:
            return status_response(status_of(error, route.method.name))
        request_class = message_class(route.method.input_type)
        body_field = route.body_field().name

        async def messages() -> AsyncIterator[Message]:
            yield first
            async for piece in request.content.iter_chunked(self._piece_bytes):
                yield request_class(**{body_field: piece})

        try:
            response = await upload(messages(), metadata=_metadata(request))
        except grpc.aio.AioRpcError as error:
            return status_response(_call_status(error))
        return web.json_response(message_json(response), headers={"Cache-Control": "no-store"})


async def _with_keepalives(call: Any, first: Any) -> AsyncIterator[Any]:
    """The stream's messages from `first` on, and None whenever it has been quiet for
    SSE_KEEPALIVE_SECONDS (the pending read is kept, not cancelled: that would end the call)."""
    yield first
    read: asyncio.Task[Any] = asyncio.ensure_future(call.read())
    try:
        while True:
            done, _ = await asyncio.wait({read}, timeout=SSE_KEEPALIVE_SECONDS)
            if not done:
                yield None
                continue
            item = read.result()
            if item is grpc.aio.EOF:
                return
            yield item
            read = asyncio.ensure_future(call.read())
    finally:
        if not read.done():
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await read


def _event(kind: str, data: dict[str, Any]) -> bytes:
    head = f"event: {kind}\n" if kind else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _open_stream(
    route: Route, stream: grpc.aio.UnaryStreamMultiCallable[Any, Any], request: web.Request
) -> web.Response | tuple[grpc.aio.UnaryStreamCall[Any, Any], Any]:
    """Starts a server stream and awaits its first message, so that an error before it (a
    bad token, no such job) is an ordinary HTTP error; else the call and that message."""
    try:
        message = route.request_message(_path_values(request), request.query.items())
    except InvalidArgument as error:
        return status_response(status_of(error, route.method.name))
    call = stream(message, metadata=_metadata(request))
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as error:
        return status_response(_call_status(error))
    return call, first


def _path_values(request: web.Request) -> list[str]:
    info = request.match_info
    return [info[f"p{i}"] for i in range(len(info))]


def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    authorization = request.headers.get("Authorization")
    return (("authorization", authorization),) if authorization else ()


async def _json_body(route: Route, request: web.Request) -> Any:
    if not route.body:
        return None
    try:
        text = await request.text()  # bytes that are not UTF-8: UnicodeDecodeError
        return _loads(text) if text.strip() else {}
    except ValueError:
        raise InvalidArgument("the request body is not valid JSON") from None


def _header_json(request: web.Request) -> dict[str, Any]:
    raw = request.headers.get(REQUEST_HEADER)
    if raw is None:
        return {}
    try:
        value = _loads(raw)
    except ValueError:
        raise InvalidArgument(f"the {REQUEST_HEADER} header is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"the {REQUEST_HEADER} header must be a JSON object")
    return value


def _loads(text: str) -> Any:
    """JSON as a request may hold it: ValueError also for an object key with a lone
    surrogate (`"\\ud800"`), which no field name has and protobuf's parser cannot take
    (it raises SystemError); a lone surrogate in a value is refused by the field's parse."""
    return json.loads(text, object_pairs_hook=_utf8_keys)


def _utf8_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    for key, _ in pairs:
        key.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
    return dict(pairs)
