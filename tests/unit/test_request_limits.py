"""The limits table: it covers every string field of every request, and each rule holds at
its boundary and for every character it forbids."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd_server.api.limits import FIELDS, MAX_VIOLATIONS, Labels, Text, check_request
from importd_server.errors import InvalidArgument, excerpt


def request_fields(message: Descriptor) -> Iterator[str]:
    """ "Message.field" for each string or map field of a message and the messages in it."""
    for field in message.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield f"{message.name}.{field.name}"
        elif field.message_type is not None:
            yield from request_fields(field.message_type)
        elif field.type == FieldDescriptor.TYPE_STRING:
            yield f"{message.name}.{field.name}"


REQUEST_FIELDS = sorted(
    {
        name
        for method in pb.DESCRIPTOR.services_by_name["ImportService"].methods
        for name in request_fields(method.input_type)
    }
)


def test_every_string_field_of_every_request_has_a_rule_and_no_rule_is_stale() -> None:
    assert sorted(FIELDS) == REQUEST_FIELDS


def text_rules() -> dict[str, Text]:
    """Every Text rule by the field it is for, labels' keys and values included."""
    rules: dict[str, Text] = {}
    for name, rule in FIELDS.items():
        if isinstance(rule, Labels):
            rules[f"{name}.key"], rules[f"{name}.value"] = rule.key, rule.value
        else:
            rules[name] = rule
    return rules


TEXT_RULES = text_rules()
# Every character of the first 768 code points (controls, ASCII, Latin-1, ...) and a few
# from far away: which of them a rule allows and forbids are its classes of input.
CHARACTERS = [chr(c) for c in range(0x300)] + ["\u2028", "\ufeff", "東", "€", "\U0001f600"]


def allowed_text(rule: Text, size: int) -> st.SearchStrategy[str]:
    """Text of exactly `size` allowed characters: a short drawn piece, repeated."""
    allowed = [c for c in CHARACTERS if rule.forbidden.match(c) is None]
    piece = st.text(st.sampled_from(allowed), min_size=1, max_size=16)
    return piece.map(lambda p: (p * (size // len(p) + 1))[:size])


def forbidden_character(rule: Text) -> st.SearchStrategy[str]:
    return st.sampled_from([c for c in CHARACTERS if rule.forbidden.match(c) is not None])


@pytest.mark.parametrize("name", sorted(TEXT_RULES))
@settings(max_examples=20)
@given(data=st.data())
def test_a_value_at_its_limit_passes_and_one_character_more_is_refused(
    name: str, data: st.DataObject
) -> None:
    rule = TEXT_RULES[name]
    longest = data.draw(allowed_text(rule, rule.max_chars))
    assert rule.problem(longest) is None
    too_long = data.draw(allowed_text(rule, rule.max_chars + 1))
    assert rule.problem(too_long) == (
        f"is longer than {rule.max_chars} characters ({rule.max_chars + 1})"
    )


@pytest.mark.parametrize("name", sorted(TEXT_RULES))
@settings(max_examples=20)
@given(data=st.data())
def test_a_forbidden_character_is_refused_naming_it_and_where_it_is(
    name: str, data: st.DataObject
) -> None:
    rule = TEXT_RULES[name]
    bad = data.draw(forbidden_character(rule))
    before = data.draw(allowed_text(rule, data.draw(st.integers(0, rule.max_chars - 1))))
    after = data.draw(allowed_text(rule, data.draw(st.integers(0, rule.max_chars - 1))))
    value = (before + bad + after)[: rule.max_chars]
    assert rule.problem(value) == (
        f"has U+{ord(bad):04X} at character {len(before) + 1}; allowed: {rule.allowed}"
    )


@pytest.mark.parametrize("character", ["\x00", "\x1f", "\x7f", "\x85", "\t", "\n", " "])
def test_ids_request_ids_and_label_keys_refuse_controls_and_spaces(character: str) -> None:
    for name in ("GetJobRequest.id", "ImportSpec.request_id", "ImportSpec.labels.key"):
        assert TEXT_RULES[name].problem(f"a{character}") is not None


def test_file_names_take_any_script_but_no_control_character() -> None:
    rule = TEXT_RULES["ImportSpec.file_name"]
    assert rule.problem("Kontakte März 2026, 東京 (1).csv") is None
    assert rule.problem("a\x00.csv") is not None


def test_a_request_with_many_bad_fields_is_told_about_the_first_few_in_key_order() -> None:
    spec = pb.ImportSpec(labels={f"k {i:03}": "v" for i in range(100)})
    with pytest.raises(InvalidArgument) as caught:
        check_request(pb.StartImportRequest(spec=spec))
    assert [v.description for v in caught.value.field_violations] == [
        "has 100 labels, more than 64",
        *(
            f"key 'k {i:03}' has U+0020 at character 2; allowed: printable ASCII without spaces"
            for i in range(MAX_VIOLATIONS - 1)
        ),
    ]
    assert {v.field for v in caught.value.field_violations} == {"spec.labels"}


def test_a_label_key_must_not_be_empty() -> None:
    assert TEXT_RULES["ImportSpec.labels.key"].problem("") == "must not be empty"


@given(
    value=st.text(st.characters(exclude_categories=("Cs",)), max_size=200), limit=st.integers(1, 60)
)
def test_an_excerpt_is_short_escaped_and_says_how_long_the_value_was(
    value: str, limit: int
) -> None:
    shown = excerpt(value, limit)
    assert "\x00" not in shown and len(shown) <= 10 * limit + 30
    if len(value) <= limit:
        assert shown == repr(value)
    else:
        assert shown == f"{value[:limit]!r}... ({len(value)} characters)"
