"""Settings: one frozen object built at start-up from `IMPORTD_*` variables and flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from importd_server.engine.shapes import fallback_list
from importd_server.net.guard import AddressGuard

LOG_FORMATS = ("auto", "json", "console")
SWITCHES = ("on", "off")
# A shorter HMAC key could be guessed; 32 characters of a password manager are plenty.
MIN_KEY_CHARS = 32


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data when no folder is configured."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "importd"


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told at start-up.

    Each field is read from `IMPORTD_<FIELD>` and overridden by `--<field>`; the database
    URL is also read from the conventional `DATABASE_URL`.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    database_url: str | None = None
    database_wait_seconds: float = 60.0
    data_dir: Path = Path()
    log_format: str = "auto"
    log_level: str = "info"
    grace_seconds: float = 10.0
    db_pool_size: int = 10
    types_dir: Path | None = None
    source_dir: Path | None = None
    remote_allow_hosts: str | None = None
    remote_connect_seconds: float = 10.0
    remote_read_seconds: float = 60.0
    remote_total_seconds: float = 3600.0
    s3_buckets: str | None = None
    workers: int = 2
    chunk_size: int = 5000
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    max_attempts: int = 5
    max_file_bytes: int = 10 * 1024**3
    # Tried in order for a text file that is not UTF-8 when the caller names no encoding
    # (comma-separated; "off": none, such a file fails).
    fallback_encodings: str | None = "windows-1252"
    max_rows: int = 20_000_000
    max_active_jobs_per_tenant: int = 20
    max_streams_per_tenant: int = 200
    max_message_bytes: int = 4 * 1024**2
    # Files this replica receives at once (uploads and source_uri imports), each holding a
    # database connection and two threads of its own; beyond it, UNAVAILABLE.
    max_uploads: int = 8
    # An upload whose heartbeat is older than this (its replica died) is failed.
    upload_stale_seconds: float = 60.0
    auth_static_tokens: Path | None = None
    auth_hs256_secrets: str | None = None
    auth_rs256_public_keys: str | None = None
    auth_issuer: str | None = None
    auth_audience: str = "importd"
    # Signs page tokens; unset, the replicas share a random key kept in the database.
    page_token_key: str | None = field(default=None, repr=False)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464
    http_host: str = "127.0.0.1"
    http_port: int | None = 8080
    # The address people reach the HTTP port at, for download links (e.g. behind a proxy).
    http_public_url: str | None = None
    retention_days: float = 30.0
    housekeeping_seconds: float = 300.0
    # Derives each tenant's webhook secret; unset, the replicas share a random key kept in
    # the database.
    webhook_key: str | None = field(default=None, repr=False)
    webhook_deliverers: int = 2
    webhook_timeout_seconds: float = 10.0
    webhook_lease_seconds: float = 60.0
    webhook_poll_seconds: float = 1.0
    webhook_initial_backoff_seconds: float = 5.0
    webhook_max_backoff_seconds: float = 3600.0
    webhook_retry_seconds: float = 86400.0
    # OpenTelemetry tracing, exported over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT.
    otel: str = "off"

    def __post_init__(self) -> None:
        if self.data_dir == Path():
            object.__setattr__(self, "data_dir", default_data_dir())
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        for name in ("port", "http_port"):
            if not 0 <= (getattr(self, name) or 0) <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535")
        if self.database_wait_seconds < 0:
            raise ValueError("database_wait_seconds must not be negative")
        if self.workers < 0:
            raise ValueError("workers must not be negative (0: this replica only serves the API)")
        for key in ("page_token_key", "webhook_key"):
            value = getattr(self, key)
            if value is not None and len(value) < MIN_KEY_CHARS:
                raise ValueError(f"{key} must have at least {MIN_KEY_CHARS} characters")
        if self.otel not in SWITCHES:
            raise ValueError("otel must be on or off")
        if self.webhook_deliverers < 0:
            raise ValueError("webhook_deliverers must not be negative")
        webhook_times = (
            "webhook_timeout_seconds",
            "webhook_poll_seconds",
            "webhook_initial_backoff_seconds",
            "webhook_max_backoff_seconds",
            "webhook_retry_seconds",
        )
        remote_times = ("remote_connect_seconds", "remote_read_seconds", "remote_total_seconds")
        for name in (*remote_times, *webhook_times):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be more than 0")
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            # A lease shorter than an attempt would let a second replica post the same event
            # while the first still waits for the receiver.
            raise ValueError("webhook_lease_seconds must be more than webhook_timeout_seconds")
        AddressGuard.from_allow_list(self.remote_allow_hosts)  # a typo fails the start-up
        fallback_list(self.fallback_encodings)  # so does an unknown encoding
        if self.upload_stale_seconds <= 0:
            raise ValueError("upload_stale_seconds must be more than 0")
        limits = (
            "max_active_jobs_per_tenant",
            "max_streams_per_tenant",
            "max_message_bytes",
            "max_uploads",
        )
        for name in ("chunk_size", "max_attempts", "max_file_bytes", "max_rows", *limits):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if env.get("DATABASE_URL"):
            values["database_url"] = env["DATABASE_URL"]
        for f in fields(cls):
            raw = env.get(f"IMPORTD_{f.name.upper()}")
            if raw:
                values[f.name] = _parse(f.name, raw)
        return cls(**values)

    def with_flags(self, args: argparse.Namespace) -> Settings:
        """These settings with every flag that was given on the command line applied."""
        given = {
            f.name: _parse(f.name, str(getattr(args, f.name)))
            for f in fields(self)
            if getattr(args, f.name, None) is not None
        }
        return replace(self, **given)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one `--<field>` flag per setting, each defaulting to 'not given'."""
    for f in fields(Settings):
        env_name = f"IMPORTD_{f.name.upper()}"
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            default=None,
            help=f"(env {env_name}; default {f.default!s})",
        )


def _parse(name: str, raw: str) -> Any:
    declared = str({f.name: f.type for f in fields(Settings)}[name])
    if declared.endswith(" | None") and raw.lower() in ("off", "none"):
        return None  # e.g. IMPORTD_METRICS_PORT=off
    kind = declared.removesuffix(" | None")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw).expanduser()
    except ValueError as error:
        raise ValueError(f"setting {name}: {raw!r} is not a valid {kind}") from error
    return raw
