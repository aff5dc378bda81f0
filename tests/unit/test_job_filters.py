"""ListJobs' filter (api/filters.py): what it accepts, what it refuses, and that no text
makes it fail in any other way."""

from __future__ import annotations

import contextlib
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importd_server.api.filters import parse_filter
from importd_server.errors import InvalidArgument
from importd_server.model import JobConditions, JobStatus, TimeBound

NOV = datetime(2026, 11, 1, tzinfo=UTC)


def test_the_issues_example_parses_to_its_conditions() -> None:
    conditions = parse_filter('labels.batch = "x" AND create_time > "2026-11-01T00:00:00Z"')
    assert conditions == JobConditions(labels={"batch": "x"}, created_after=TimeBound(NOV, False))


def test_every_field_and_operator() -> None:
    parent = uuid.uuid4()
    text = (
        f'retry_of = "{parent}" AND status = SUCCEEDED AND import_type = contacts'
        ' AND request_id = "r \\"1\\"" AND create_time >= "2026-11-01T00:00:00Z"'
        ' AND create_time <= "2026-11-02T01:00:00+01:00" AND labels.a-b.c = "v"'
    )
    assert parse_filter(text) == JobConditions(
        labels={"a-b.c": "v"},
        retry_of=parent,
        status=JobStatus.SUCCEEDED,
        import_type="contacts",
        request_id='r "1"',
        created_after=TimeBound(NOV, True),
        created_before=TimeBound(NOV + timedelta(days=1), True),
    )


def test_time_bounds_keep_the_tighter_one() -> None:
    conditions = parse_filter(
        'create_time > "2026-11-01T00:00:00Z" AND create_time >= "2026-11-03T00:00:00Z"'
        ' AND create_time < "2026-11-09T00:00:00Z" AND create_time <= "2026-11-09T00:00:00Z"'
    )
    assert conditions.created_after == TimeBound(NOV + timedelta(days=2), True)
    assert conditions.created_before == TimeBound(NOV + timedelta(days=8), False)
    equal = parse_filter('create_time = "2026-11-01T00:00:00Z"')
    assert equal.created_after == equal.created_before == TimeBound(NOV, True)


def test_a_blank_filter_sets_nothing() -> None:
    assert parse_filter("") == parse_filter("  \t ") == JobConditions()


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("status", 7, "incomplete"),
        ("status =", 9, "incomplete"),
        ("status = SUCCEEDED OR status = FAILED", 20, "expected AND"),
        ("status = DONE", 10, "unknown status"),
        ("status > SUCCEEDED", 8, "only be compared with ="),
        ("owner = x", 1, "unknown field"),
        ("labels. = x", 1, "needs a key"),
        ('labels.a = "x" AND labels.a = "y"', 20, "compared twice"),
        ("status = SUCCEEDED AND status = FAILED", 24, "compared twice"),
        ('retry_of = "nope"', 12, "not a job id"),
        ('create_time > "2026-11-01"', 15, "RFC 3339"),
        ('create_time > "2026-11-01T00:00:00"', 15, "RFC 3339"),
        ('create_time > "0001-01-01T00:00:00+01:00"', 15, "RFC 3339"),
        ('labels.a = "x', 12, "not closed"),
        ("labels.a = x;", 13, "unexpected character"),
        ("= x AND", 1, "expected a field name"),
        ("status status status", 8, "expected an operator"),
        ("status = =", 10, "expected a value"),
    ],
)
def test_refusals_name_the_filter_and_the_position(text: str, position: int, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    [violation] = caught.value.field_violations
    assert violation.field == "filter"
    assert violation.description.startswith(f"at character {position}: ")
    assert words in violation.description


@given(st.text(max_size=80))
def test_any_text_parses_or_is_invalid_argument(text: str) -> None:
    try:
        parse_filter(text)
    except InvalidArgument as error:
        [violation] = error.field_violations
        assert re.match(r"at character \d+: ", violation.description)


FRAGMENTS = st.sampled_from(
    ["labels.", "status", "retry_of", "create_time", "=", "<=", ">", '"', "AND", " ", "x", "\\"]
)


@given(st.lists(FRAGMENTS, max_size=12).map("".join))
def test_near_misses_parse_or_are_invalid_argument(text: str) -> None:
    with contextlib.suppress(InvalidArgument):
        parse_filter(text)


label_keys = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
label_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    labels=st.dictionaries(label_keys, label_values, max_size=4),
    status=st.none() | st.sampled_from(list(JobStatus)),
    retry_of=st.none() | st.uuids(),
    after=st.none() | st.tuples(times, st.booleans()),
    spaces=st.sampled_from([" ", "  ", "\t"]),
)
def test_generated_filters_parse_to_their_conditions(
    labels: dict[str, str],
    status: JobStatus | None,
    retry_of: uuid.UUID | None,
    after: tuple[datetime, bool] | None,
    spaces: str,
) -> None:
    clauses = [f"labels.{k}{spaces}={spaces}{quoted(v)}" for k, v in labels.items()]
    if status is not None:
        clauses.append(f"status = {status.value}")
    if retry_of is not None:
        clauses.append(f"retry_of = {quoted(str(retry_of))}")
    if after is not None:
        moment, inclusive = after
        clauses.append(f"create_time {'>=' if inclusive else '>'} {quoted(moment.isoformat())}")
    assert parse_filter(f"{spaces}AND{spaces}".join(clauses)) == JobConditions(
        labels=labels,
        status=status,
        retry_of=retry_of,
        created_after=TimeBound(*after) if after else None,
    )
