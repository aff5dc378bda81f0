"""The one route that takes no token: a signed link's CSV of a job's not-imported rows (or
of all its rows).

The link is the credential, so this route reads the stores itself, scoped by the tenant the
link was signed for; the gateway's routes all go through the gRPC service instead.
"""

from __future__ import annotations

from urllib.parse import quote

import structlog
from aiohttp import web

from importd_server.api.status import status_of
from importd_server.engine.export import ALL_ROWS, NOT_IMPORTED, export_job
from importd_server.errors import NotFound
from importd_server.http.gateway import status_response
from importd_server.http.links import (
    ALL_ROWS_FILE,
    NOT_IMPORTED_FILE,
    PATH,
    DownloadLinks,
    LinkExpired,
)
from importd_server.store.entries import EntryStore
from importd_server.store.jobs import JobStore

log = structlog.get_logger(__name__)

ROUTE = PATH.replace("{id}", "{id:[^/]+}").replace(
    "{rows}", f"{{rows:{NOT_IMPORTED_FILE}|{ALL_ROWS_FILE}}}"
)


class LinkDownloads:
    """Serves download links: checks the signature, then streams the job's CSV."""

    def __init__(self, links: DownloadLinks, jobs: JobStore, entries: EntryStore) -> None:
        self._links = links
        self._jobs = jobs
        self._entries = entries

    def add_route(self, app: web.Application) -> None:
        """Adds the GET route of download links."""
        app.router.add_get(ROUTE, self._download)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            grant = self._links.check(
                request.match_info["id"],
                query.get("tenant", ""),
                query.get("expires", ""),
                query.get("signature", ""),
                all_rows=request.match_info["rows"] == ALL_ROWS_FILE,
            )
            job = await self._jobs.get_job(grant.job_id, grant.tenant)
            if job is None:
                raise NotFound(f"job {grant.job_id} not found", metadata={"id": str(grant.job_id)})
            rows = ALL_ROWS if grant.all_rows else NOT_IMPORTED
            pieces = aiter(export_job(job, self._jobs, self._entries, rows))
            # The first piece (the header row) is read before answering, so that entries
            # removed by retention are an error status rather than a cut-off file.
            first = await anext(pieces)
        except Exception as error:
            expired = isinstance(error, LinkExpired)
            return status_response(status_of(error, "download link"), 410 if expired else None)
        stem = job.file_name.rsplit(".", 1)[0] or "import"
        name = request.match_info["rows"]
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": (
                    f'attachment; filename="{name}.csv"; '
                    f"filename*=UTF-8''{quote(f'{stem}.{name}.csv')}"
                ),
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        try:
            await response.write(first)
            async for piece in pieces:
                await response.write(piece)
        except ConnectionResetError:
            return response  # the holder left
        except Exception:
            # Too late for a status: the body is cut short, which the client sees as an error.
            log.exception("download cut short", job_id=str(job.id))
            return response
        await response.write_eof()
        return response
