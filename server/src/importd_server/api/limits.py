"""What each string field of a request may hold: one table, checked at the edge, before a
request reaches the domain or PostgreSQL (README, "Limits"). PostgreSQL text cannot hold
NUL, and no field is ever echoed or stored beyond its limit."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from importd_server.errors import FieldViolation, InvalidArgument, excerpt

# A request with many bad fields (e.g. thousands of labels) is told about the first few.
MAX_VIOLATIONS = 10


@dataclass(frozen=True)
class Text:
    """The rules of one string field: its length and the characters it may hold."""

    max_chars: int
    forbidden: re.Pattern[str]
    allowed: str  # the characters allowed, in words, for error messages and the README
    min_chars: int = 0

    def problem(self, value: str) -> str | None:
        """What is wrong with the value, or None."""
        if len(value) > self.max_chars:
            return f"is longer than {self.max_chars} characters ({len(value)})"
        if len(value) < self.min_chars:
            return "must not be empty"
        bad = self.forbidden.search(value)
        if bad is not None:
            return (
                f"has U+{ord(bad.group()):04X} at character {bad.start() + 1};"
                f" allowed: {self.allowed}"
            )
        return None


@dataclass(frozen=True)
class Labels:
    """The rules of a map of labels: how many, and the rules of each key and value."""

    max_entries: int
    key: Text
    value: Text
    noun: str = "labels"  # what the entries are called in messages

    def violations(self, field: str, labels: Mapping[str, str]) -> Iterator[FieldViolation]:
        """Each problem of the labels, keys in sorted order (a map has no order of its own)."""
        if len(labels) > self.max_entries:
            yield FieldViolation(
                field, f"has {len(labels)} {self.noun}, more than {self.max_entries}"
            )
        for key in sorted(labels):
            if problem := self.key.problem(key):
                yield FieldViolation(field, f"key {excerpt(key)} {problem}")
            if problem := self.value.problem(labels[key]):
                yield FieldViolation(field, f"value of {excerpt(key)} {problem}")


# Printable ASCII, no space: names, ids, tokens.
TOKEN_CHARACTERS = re.compile(r"[^!-~]")
# Anything but control characters (C0, DEL, C1): free text such as file names.
TEXT_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Free text, or a tab (a TSV file's delimiter).
DELIMITER_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

TOKEN = "printable ASCII without spaces"
TEXT = "any character but control characters"

NAME = Text(63, TOKEN_CHARACTERS, TOKEN)
ID = Text(64, TOKEN_CHARACTERS, TOKEN)
PAGE_TOKEN = Text(1024, TOKEN_CHARACTERS, TOKEN)
LABELS = Labels(
    64,
    key=Text(63, TOKEN_CHARACTERS, TOKEN, min_chars=1),
    value=Text(255, TEXT_CHARACTERS, TEXT),
)

# Every string field of every request message, by "Message.field" (a unit test checks
# that none is missing).
FIELDS: dict[str, Text | Labels] = {
    "ImportSpec.import_type": NAME,
    "ImportSpec.file_name": Text(255, TEXT_CHARACTERS, TEXT),
    "ImportSpec.source_uri": Text(2048, TEXT_CHARACTERS, TEXT),
    "ImportSpec.request_id": Text(128, TOKEN_CHARACTERS, TOKEN),
    "ImportSpec.labels": LABELS,
    "ImportSpec.sheet": Text(255, TEXT_CHARACTERS, TEXT),
    "ImportSpec.column_map": Labels(
        500,
        key=Text(255, TEXT_CHARACTERS, TEXT, min_chars=1),
        value=Text(63, TOKEN_CHARACTERS, TOKEN, min_chars=1),
        noun="entries",
    ),
    # An encoded URL is printable ASCII; the guard checks where it leads (net/http.py).
    "ImportSpec.webhook_url": Text(2048, TOKEN_CHARACTERS, TOKEN),
    "ImportSpec.retry_of": ID,
    "CsvOptions.delimiter": Text(1, DELIMITER_CHARACTERS, f"{TEXT}, or a tab"),
    "CsvOptions.quote": Text(1, TEXT_CHARACTERS, TEXT),
    "CsvOptions.encoding": Text(16, TOKEN_CHARACTERS, TOKEN),
    "GetJobRequest.id": ID,
    "ListJobsRequest.page_token": PAGE_TOKEN,
    "ListJobsRequest.import_type": NAME,
    "ListJobsRequest.search": Text(255, TEXT_CHARACTERS, TEXT),
    # api/filters.py parses it; a tab is whitespace there.
    "ListJobsRequest.filter": Text(1024, DELIMITER_CHARACTERS, f"{TEXT}, or a tab"),
    "StreamProgressRequest.id": ID,
    "ListEntriesRequest.id": ID,
    "ListEntriesRequest.page_token": PAGE_TOKEN,
    "ListEntriesRequest.error_code": NAME,
    "CancelJobRequest.id": ID,
    "RevertJobRequest.id": ID,
    "RevertJobRequest.request_id": Text(128, TOKEN_CHARACTERS, TOKEN),
    "ExportEntriesRequest.id": ID,
    "CreateDownloadLinkRequest.id": ID,
    "WatchJobsRequest.import_type": NAME,
    "WatchJobsRequest.labels": LABELS,
    "ListWebhookDeliveriesRequest.id": ID,
    "RetryJobRequest.id": ID,
    "RetryJobRequest.request_id": Text(128, TOKEN_CHARACTERS, TOKEN),
}


def check_request(request: Message) -> None:
    """Raises INVALID_ARGUMENT naming each string field of the request beyond its limits."""
    violations = tuple(itertools.islice(_violations(request, ""), MAX_VIOLATIONS))
    if violations:
        raise InvalidArgument.for_fields(violations)


def _violations(message: Message, prefix: str) -> Iterator[FieldViolation]:
    for field, value in message.ListFields():  # set fields only: an empty string is fine
        path = f"{prefix}{field.name}"
        rule = FIELDS.get(f"{message.DESCRIPTOR.name}.{field.name}")
        if isinstance(rule, Labels):
            yield from rule.violations(path, value)
        elif isinstance(rule, Text):
            if problem := rule.problem(value):
                yield FieldViolation(path, problem)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from _violations(value, f"{path}.")
