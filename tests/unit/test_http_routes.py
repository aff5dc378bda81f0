"""The HTTP routes come from the proto's annotations, and an HTTP request's parts become
the RPC's request message, or INVALID_ARGUMENT: never another failure."""

from __future__ import annotations

import contextlib

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from hypothesis import given
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd_server.errors import InvalidArgument
from importd_server.http.routes import Route, routes_of

SERVICE = pb.DESCRIPTOR.services_by_name["ImportService"]
ROUTES = {route.method.name: route for route in routes_of(SERVICE.methods)}


def test_a_method_without_an_http_annotation_stops_the_start_up() -> None:
    file = descriptor_pb2.FileDescriptorProto(name="bare.proto", package="bare", syntax="proto3")
    file.message_type.add(name="Empty")
    service = file.service.add(name="Bare")
    service.method.add(name="Call", input_type=".bare.Empty", output_type=".bare.Empty")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    bare = pool.FindServiceByName("bare.Bare")
    with pytest.raises(ValueError, match=r"bare\.Bare\.Call has no google\.api\.http annotation"):
        routes_of(bare.methods)


def test_a_variable_stops_at_a_colon_so_custom_verbs_keep_their_routes() -> None:
    assert ROUTES["CancelJob"].aiohttp_path == "/v1/jobs/{p0:[^/:]+}:cancel"
    assert ROUTES["GetJob"].aiohttp_path == "/v1/jobs/{p0:[^/:]+}"


def test_query_parameters_fill_fields_by_either_name_and_by_type() -> None:
    request = ROUTES["ListJobs"].request_message(
        [],
        [
            ("pageSize", "20"),
            ("statuses", "JOB_STATUS_RUNNING"),
            ("statuses", "1"),
            ("import_type", "contacts"),
        ],
    )
    assert request == pb.ListJobsRequest(
        page_size=20,
        statuses=[pb.JOB_STATUS_RUNNING, pb.JOB_STATUS_QUEUED],
        import_type="contacts",
    )
    first = ROUTES["StartImport"].request_message(
        [],
        [("spec.csv.header", "false"), ("spec.dryRun", "true")],
        {"spec": {"importType": "contacts", "labels": {"batch": "7"}}},
    )
    assert first.spec.csv.HasField("header") and not first.spec.csv.header
    assert (first.spec.dry_run, first.spec.import_type, dict(first.spec.labels)) == (
        True,
        "contacts",
        {"batch": "7"},
    )


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("nope", "1", "unknown query parameter"),
        ("pageSize", "20x", "does not fit"),
        ("pageSize", "99999999999", "does not fit"),
        ("importType.x", "1", "has no fields"),
        ("statuses", "JOB_STATUS_NOPE", "does not fit"),
    ],
)
def test_a_query_parameter_that_fits_no_field_is_invalid_argument(
    name: str, value: str, problem: str
) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        ROUTES["ListJobs"].request_message([], [(name, value)])


def test_maps_and_repeated_scalars_given_twice_are_refused_from_a_query() -> None:
    with pytest.raises(InvalidArgument, match="cannot be set from a query"):
        ROUTES["StartImport"].request_message([], [("spec.labels", "a")])
    with pytest.raises(InvalidArgument, match="more than once"):
        ROUTES["ListJobs"].request_message([], [("pageSize", "1"), ("page_size", "2")])
    with pytest.raises(InvalidArgument, match="true or false"):
        ROUTES["StartImport"].request_message([], [("spec.dryRun", "yes")])


def test_path_parameters_win_over_the_body() -> None:
    request = ROUTES["CancelJob"].request_message(["from-path"], [], {"id": "from-body"})
    assert request.id == "from-path"


names = st.sampled_from(
    [
        "id",
        "pageSize",
        "statuses",
        "offset",
        "errorCode",
        "spec",
        "spec.mode",
        "spec.csv",
        "spec.csv.header",
        "spec.labels",
        "spec.maxErrors",
        "chunk",
        "spec.importType",
    ]
) | st.text(max_size=12)
values = st.text(max_size=20) | st.integers().map(str) | st.sampled_from(["true", "1e3", "-0"])
bodies = st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers())


@given(
    route=st.sampled_from(sorted(ROUTES.values(), key=lambda r: r.method.name)),
    path=st.lists(st.text(max_size=20), min_size=1, max_size=1),
    query=st.lists(st.tuples(names, values), max_size=5),
    body=bodies,
)
def test_any_request_parts_make_a_request_or_invalid_argument(
    route: Route, path: list[str], query: list[tuple[str, str]], body: object
) -> None:
    with contextlib.suppress(InvalidArgument):
        route.request_message(path[: len(route.path_fields)], query, body)


@pytest.mark.parametrize("number", ["²", "--5", "9" * 5000, "99999999999", "-"])
def test_an_enum_number_that_is_not_one_is_invalid_argument(number: str) -> None:
    # Found by the property above in CI: "²".isdigit() is true, and int() refused it.
    route = next(r for r in ROUTES.values() if r.template == "/v1/jobs:import")
    with pytest.raises(InvalidArgument):
        route.request_message([], [("spec.mode", number)], None)
