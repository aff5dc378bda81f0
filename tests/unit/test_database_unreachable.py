"""Telling a database out of reach from a wrong query, and naming a database without its
password."""

from __future__ import annotations

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from importd_server.config import Settings
from importd_server.store.availability import is_connection_error
from importd_server.store.pool import DatabaseUnreachable, database_address

LOST: dict[str, BaseException] = {
    "refused": ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    "reset": ConnectionResetError(104, "Connection reset by peer"),
    "unreachable": DatabaseUnreachable("no answer within 10.0 s"),
    "closed mid-query": asyncpg.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    ),
    "terminated": asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    "crashed": asyncpg.CrashShutdownError("terminating connection because of crash"),
    "starting up": asyncpg.CannotConnectNowError("the database system is starting up"),
    "connection closed": asyncpg.InterfaceError("connection is closed"),
    "proxy on closed connection": asyncpg.InterfaceError(
        "cannot call Transaction.commit(): the underlying connection is closed"
    ),
    "pool closing": asyncpg.InterfaceError("pool is closing"),
}

NOT_LOST: dict[str, BaseException] = {
    "missing file": FileNotFoundError(2, "No such file or directory"),
    "bare timeout": TimeoutError(),
    "misuse": asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    "released proxy": asyncpg.InterfaceError(
        "cannot call Connection.fetch(): the underlying connection has been released back to"
        " the pool"
    ),
    "statement timeout": asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    "unique violation": asyncpg.UniqueViolationError("duplicate key value"),
    "wrong password": asyncpg.InvalidPasswordError("password authentication failed"),
    "bug": ValueError("a bug"),
}


@pytest.mark.parametrize("error", LOST.values(), ids=LOST.keys())
def test_a_lost_or_refused_connection_is_a_connection_error(error: BaseException) -> None:
    assert is_connection_error(error)


@pytest.mark.parametrize("error", NOT_LOST.values(), ids=NOT_LOST.keys())
def test_other_errors_are_not_mistaken_for_an_outage(error: BaseException) -> None:
    assert not is_connection_error(error)


@given(
    lost=st.lists(st.sampled_from(list(LOST.values())), min_size=1, max_size=4),
    other=st.sampled_from([*NOT_LOST.values(), None]),
)
def test_a_group_of_errors_is_an_outage_only_if_each_of_them_is(
    lost: list[Exception], other: Exception | None
) -> None:
    group = ExceptionGroup("tasks failed", lost if other is None else [*lost, other])
    assert is_connection_error(group) == (other is None)
    assert is_connection_error(ExceptionGroup("outer", [group])) == (other is None)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        (
            "postgresql://importd:s3cret@db.internal:6432/orders",
            {"host": "db.internal:6432", "database": "orders"},
        ),
        (
            "postgresql://postgres:@/importd?host=/tmp/embedded",
            {"host": "/tmp/embedded", "database": "importd"},
        ),
        ("postgres://db.internal", {"host": "db.internal", "database": "(the user's)"}),
    ],
    ids=["tcp with a password", "unix socket", "no database"],
)
def test_a_database_is_named_by_host_and_database_never_by_password(
    url: str, address: dict[str, str]
) -> None:
    assert database_address(url) == address


@given(password=st.text())
def test_no_password_reaches_the_address(password: str) -> None:
    address = database_address(f"postgresql://user:{password}@h:5432/db")
    assert address == {"host": "h:5432", "database": "db"}


def test_the_wait_for_the_database_is_a_setting_of_a_minute_by_default() -> None:
    assert Settings.from_env({}).database_wait_seconds == 60.0
    assert Settings.from_env({"IMPORTD_DATABASE_WAIT_SECONDS": "2.5"}).database_wait_seconds == 2.5
    with pytest.raises(ValueError, match="database_wait_seconds must not be negative"):
        Settings(database_wait_seconds=-1)
