"""ListJobs' `filter`: a small, strict subset of AIP-160. Comparisons joined by AND, each a
field, an operator and a value (quoted, or a bare word):

    labels.batch = "x" AND create_time >= "2026-11-01T00:00:00Z" AND status = SUCCEEDED

The parser only ever builds a `model.JobConditions` (values, never SQL text): the query in
`store/queries/jobs.sql` takes them as parameters. Every refusal is INVALID_ARGUMENT on the
field `filter`, naming the character where the problem starts.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from importd_server.errors import InvalidArgument, excerpt
from importd_server.model import JobConditions, JobStatus, TimeBound

FIELD = "filter"
# A token: whitespace, a quoted string (backslash escapes \" and \\), an operator, or a word.
_TOKEN = re.compile(
    r'(?P<space>\s+)|(?P<string>"(?:[^"\\]|\\["\\])*")|(?P<op><=|>=|=|<|>)'
    r"|(?P<word>[A-Za-z0-9_.:/+-]+)"
)
# Fields compared with "=" only, each at most once.
EQUALITY_FIELDS = ("retry_of", "status", "import_type", "request_id")
LABEL_PREFIX = "labels."


@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "op" or "word"
    text: str  # a string's value, unquoted
    position: int  # 1-based character of the filter where the token starts


def parse_filter(text: str) -> JobConditions:
    """The conditions a filter sets; INVALID_ARGUMENT naming the position of the first problem.
    An empty (or blank) filter sets none."""
    tokens = _tokens(text)
    conditions = JobConditions()
    index = 0
    while index < len(tokens):
        if index:
            joiner = tokens[index]
            if joiner.kind != "word" or joiner.text != "AND":
                raise _bad(joiner.position, f"expected AND, found {excerpt(joiner.text)}")
            index += 1
        clause = tokens[index : index + 3]
        if len(clause) < 3:
            where = tokens[-1].position + len(tokens[-1].text)
            raise _bad(where, "incomplete comparison: expected a field, an operator and a value")
        conditions = _apply(conditions, *clause)
        index += 3
    return conditions


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] == '"':
                raise _bad(position + 1, "the quoted value is not closed")
            raise _bad(position + 1, f"unexpected character {excerpt(text[position])}")
        kind = match.lastgroup
        assert kind is not None
        if kind == "string":
            value = re.sub(r"\\([\"\\])", r"\1", match.group()[1:-1])
            tokens.append(_Token(kind, value, position + 1))
        elif kind != "space":
            tokens.append(_Token(kind, match.group(), position + 1))
        position = match.end()
    return tokens


def _apply(conditions: JobConditions, name: _Token, op: _Token, value: _Token) -> JobConditions:
    """The conditions with one more comparison."""
    if name.kind != "word":
        raise _bad(name.position, f"expected a field name, found {excerpt(name.text)}")
    if op.kind != "op":
        raise _bad(op.position, f"expected an operator (= < <= > >=), found {excerpt(op.text)}")
    if value.kind == "op":
        raise _bad(value.position, f"expected a value, found {excerpt(value.text)}")
    field = name.text
    if field == "create_time":
        return _time_bound(conditions, op, value)
    if op.text != "=":
        raise _bad(op.position, f"{field} can only be compared with =")
    if field.startswith(LABEL_PREFIX):
        key = field.removeprefix(LABEL_PREFIX)
        if not key:
            raise _bad(name.position, "labels needs a key, e.g. labels.batch")
        if key in conditions.labels:
            raise _bad(name.position, f"label {excerpt(key)} is compared twice")
        return replace(conditions, labels={**conditions.labels, key: value.text})
    if field not in EQUALITY_FIELDS:
        known = ", ".join(("labels.<key>", "create_time", *EQUALITY_FIELDS))
        raise _bad(name.position, f"unknown field {excerpt(field)} (known: {known})")
    if getattr(conditions, field) is not None:
        raise _bad(name.position, f"{field} is compared twice")
    if field == "retry_of":
        try:
            return replace(conditions, retry_of=uuid.UUID(value.text))
        except ValueError:
            raise _bad(value.position, f"{excerpt(value.text)} is not a job id") from None
    if field == "status":
        try:
            return replace(conditions, status=JobStatus(value.text))
        except ValueError:
            known = ", ".join(JobStatus)
            raise _bad(value.position, f"unknown status {excerpt(value.text)} ({known})") from None
    if field == "import_type":
        return replace(conditions, import_type=value.text)
    return replace(conditions, request_id=value.text)


def _time_bound(conditions: JobConditions, op: _Token, value: _Token) -> JobConditions:
    """The conditions with a bound on create_time ("=" is two bounds)."""
    moment: datetime | None = None
    try:
        # RFC 3339: a date, a time and an offset ("Z" or ±hh:mm); in UTC, as stored (a
        # time that has none, e.g. year 1 at +01:00, is refused).
        written = datetime.fromisoformat(value.text)
        if written.tzinfo is not None:
            moment = written.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    if moment is None or "T" not in value.text.upper():
        raise _bad(
            value.position,
            f'{excerpt(value.text)} is not an RFC 3339 time, e.g. "2026-11-01T00:00:00Z"',
        )
    if op.text in ("=", ">", ">="):
        bound = TimeBound(moment, inclusive=op.text != ">")
        conditions = replace(conditions, created_after=_tighter(conditions.created_after, bound, 1))
    if op.text in ("=", "<", "<="):
        bound = TimeBound(moment, inclusive=op.text != "<")
        conditions = replace(
            conditions, created_before=_tighter(conditions.created_before, bound, -1)
        )
    return conditions


def _tighter(current: TimeBound | None, new: TimeBound, direction: int) -> TimeBound:
    """The stricter of two lower (direction 1) or upper (-1) bounds."""
    if current is None:
        return new
    if current.time == new.time:
        return TimeBound(new.time, current.inclusive and new.inclusive)
    later = new.time > current.time
    return new if later == (direction == 1) else current


def _bad(position: int, problem: str) -> InvalidArgument:
    return InvalidArgument.for_field(FIELD, f"at character {position}: {problem}")
