"""HTTP routes read from the proto's google.api.http annotations, and the transcoding of an
HTTP request into the RPC's request message (path parameters, query parameters, JSON body).

The routes are built from the method options at start-up, so the HTTP API cannot drift from
the proto: a new RPC without an annotation stops the start-up instead of going missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from importd_server.errors import InvalidArgument

# A path variable: `{id}` (one segment). `{name=pattern}` forms are not used by importd.
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_VERBS = ("get", "put", "post", "delete", "patch")
# Message types a query parameter may set, from their JSON string form.
_STRING_FORM_MESSAGES = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    method: MethodDescriptor
    verb: str
    template: str
    body: str
    response_body: str

    @property
    def rpc_path(self) -> str:
        """The gRPC method path, e.g. /importd.v1.ImportService/GetJob."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def path_fields(self) -> tuple[str, ...]:
        """The request fields the path binds, in order."""
        return tuple(_VARIABLE.findall(self.template))

    @property
    def aiohttp_path(self) -> str:
        """The template as an aiohttp route: each variable is one segment, and stops at a
        ':' so that `/v1/jobs/{id}:cancel` is not read as the id `x:cancel`."""
        names = iter(range(len(self.path_fields)))
        return _VARIABLE.sub(lambda _: f"{{p{next(names)}:[^/:]+}}", self.template)

    def request_message(
        self,
        path_values: Iterable[str],
        query: Iterable[tuple[str, str]],
        body: Any = None,
    ) -> Message:
        """The RPC's request from an HTTP request's parts. `body` is the decoded JSON body
        of a body binding; for a client stream, whose body is its bytes field, the first
        message's other fields as JSON."""
        message = message_class(self.method.input_type)()
        values: dict[str, Any] = {}
        if self.body == "*":
            if not isinstance(body, dict):
                raise InvalidArgument("the request body must be a JSON object")
            values.update(body)
        else:
            if self.method.client_streaming:
                values.update(body or {})  # the first message, as JSON (from a header)
            elif self.body:
                values[self.body] = body
            for name, value in query:
                _set_query_value(values, self.method.input_type, name, value)
        # Path parameters win over the same field in a body, as in grpc-gateway.
        for field_path, value in zip(self.path_fields, path_values, strict=True):
            _place(values, field_path.split("."), value)
        try:
            json_format.ParseDict(values, message)
        except json_format.ParseError as error:
            raise InvalidArgument(
                f"the request does not fit {message.DESCRIPTOR.name}: {error}"
            ) from None
        return message

    def body_field(self) -> FieldDescriptor:
        """The bytes field a client stream's body fills, piece by piece."""
        return self.method.input_type.fields_by_name[self.body]


def routes_of(methods: Iterable[MethodDescriptor]) -> list[Route]:
    """Every HTTP binding of the methods; ValueError for a method without one, or with a
    binding the gateway cannot serve."""
    routes: list[Route] = []
    for method in methods:
        rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
        bindings = [rule, *rule.additional_bindings]
        if not rule.WhichOneof("pattern"):
            raise ValueError(f"{method.full_name} has no google.api.http annotation")
        routes.extend(_route(method, binding) for binding in bindings)
    return routes


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Route:
    verb = rule.WhichOneof("pattern")
    if verb not in _VERBS:
        raise ValueError(f"{method.full_name}: the {verb} pattern is not supported")
    route = Route(method, verb.upper(), getattr(rule, verb), rule.body, rule.response_body)
    if "{" in _VARIABLE.sub("", route.template) or "*" in route.template:
        raise ValueError(f"{method.full_name}: only {{field}} path variables are supported")
    if method.client_streaming:
        if method.server_streaming:
            raise ValueError(f"{method.full_name}: bidirectional streams have no HTTP form")
        field = method.input_type.fields_by_name.get(rule.body)
        if field is None or field.type != FieldDescriptor.TYPE_BYTES:
            raise ValueError(f"{method.full_name}: a client stream's body must be a bytes field")
    return route


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message type."""
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def _field(message: Descriptor, name: str) -> FieldDescriptor:
    """A field by its proto name (page_size) or its JSON name (pageSize)."""
    field = message.fields_by_name.get(name)
    if field is None:
        field = next((f for f in message.fields if f.json_name == name), None)
    if field is None:
        raise InvalidArgument(f"unknown query parameter {name!r} for {message.name}")
    return field


def _set_query_value(values: dict[str, Any], message: Descriptor, name: str, raw: str) -> None:
    """Sets `a.b.c=raw` in the JSON-shaped `values`, converted for the field's type."""
    *parents, last = name.split(".")
    path = []
    for part in parents:
        field = _field(message, part)
        if field.message_type is None or _is_map(field) or _repeated(field):
            raise InvalidArgument(f"query parameter {name!r}: {part} has no fields to set")
        path.append(field.name)
        message = field.message_type
    leaf = _field(message, last)
    path.append(leaf.name)
    if _is_map(leaf) or (
        leaf.message_type is not None and leaf.message_type.full_name not in _STRING_FORM_MESSAGES
    ):
        raise InvalidArgument(f"query parameter {name!r}: {leaf.name} cannot be set from a query")
    value = _json_value(leaf, raw)
    if _repeated(leaf):
        _place(values, path, value, append=True)
    elif _lookup(values, path) is not None:
        raise InvalidArgument(f"query parameter {name!r} is given more than once")
    else:
        _place(values, path, value)


# An enum given by number: ASCII digits only (str.isdigit also takes "²", which int()
# refuses), and few enough for int() (ParseDict refuses one out of range).
_ENUM_NUMBER = re.compile(r"-?[0-9]{1,10}")


def _json_value(field: FieldDescriptor, raw: str) -> Any:
    """A query string as the JSON value ParseDict expects for the field."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if raw not in ("true", "false"):
            raise InvalidArgument(f"{field.name}: {raw[:40]!r} is not true or false")
        return raw == "true"
    if field.type == FieldDescriptor.TYPE_ENUM and _ENUM_NUMBER.fullmatch(raw):
        return int(raw)
    return raw  # numbers, enums by name, bytes (base64) and timestamps parse from text


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _is_map(field: FieldDescriptor) -> bool:
    return bool(field.message_type is not None and field.message_type.GetOptions().map_entry)


def _place(values: dict[str, Any], path: list[str], value: Any, append: bool = False) -> None:
    for part in path[:-1]:
        inner = values.setdefault(part, {})
        if not isinstance(inner, dict):
            raise InvalidArgument(f"{'.'.join(path)} is set twice")
        values = inner
    if append:
        values.setdefault(path[-1], []).append(value)
    else:
        values[path[-1]] = value


def _lookup(values: Mapping[str, Any], path: list[str]) -> Any:
    for part in path:
        if not isinstance(values, Mapping):
            return None
        values = values.get(part)  # type: ignore[assignment]
    return values
