"""Settings from IMPORTD_* variables, DATABASE_URL and flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from importd_server.config import Settings, add_flags


def parse_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(argv)


def test_defaults_listen_on_localhost_50051_with_the_embedded_database() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.database_url) == ("127.0.0.1", 50051, None)


def test_environment_variables_are_typed() -> None:
    settings = Settings.from_env(
        {
            "IMPORTD_PORT": "6000",
            "IMPORTD_GRACE_SECONDS": "2.5",
            "IMPORTD_DATA_DIR": "/srv/importd",
            "DATABASE_URL": "postgresql://db/importd",
        }
    )
    assert settings.port == 6000
    assert settings.grace_seconds == 2.5
    assert settings.data_dir == Path("/srv/importd")
    assert settings.database_url == "postgresql://db/importd"


def test_flags_override_the_environment() -> None:
    settings = Settings.from_env({"IMPORTD_PORT": "6000", "IMPORTD_HOST": "0.0.0.0"})
    settings = settings.with_flags(parse_flags("--port", "7000"))
    assert (settings.host, settings.port) == ("0.0.0.0", 7000)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IMPORTD_PORT": "http"}, "setting port: 'http' is not a valid int"),
        ({"IMPORTD_PORT": "70000"}, "port must be between 0 and 65535"),
        ({"IMPORTD_HTTP_PORT": "70000"}, "http_port must be between 0 and 65535"),
        ({"IMPORTD_LOG_FORMAT": "xml"}, "log_format must be one of auto, json, console"),
    ],
)
def test_bad_settings_are_refused_with_a_precise_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_optional_settings_can_be_turned_off() -> None:
    assert Settings.from_env({"IMPORTD_METRICS_PORT": "off"}).metrics_port is None
    assert Settings.from_env({"IMPORTD_METRICS_PORT": "9100"}).metrics_port == 9100
    assert Settings.from_env({}).metrics_port == 9464
    assert Settings.from_env({"IMPORTD_HTTP_PORT": "off"}).http_port is None
    assert Settings.from_env({}).http_port == 8080
