"""The application: built once at start-up from Settings, then started and stopped as a whole.

Nothing here is global, so two servers can run side by side in one process (tests do).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.api.paging import PageTokens
from importd_server.api.servicer import ImportServicer
from importd_server.auth import Authenticator
from importd_server.config import Settings
from importd_server.engine.admission import Admission
from importd_server.engine.housekeeping import Housekeeper
from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.processing import ChunkProcessor
from importd_server.engine.reverts import Reverter
from importd_server.engine.staging import Stager, StagingLimits
from importd_server.engine.uploads import UploadSlots
from importd_server.engine.workers import WorkerPool
from importd_server.http.downloads import LinkDownloads
from importd_server.http.links import DownloadLinks
from importd_server.http.server import HttpServer
from importd_server.metrics import Metrics, MetricsInterceptor
from importd_server.net.guard import AddressGuard
from importd_server.progress.hub import ProgressHub
from importd_server.store.availability import DatabaseMonitor
from importd_server.store.entries import EntryStore
from importd_server.store.jobs import JobStore
from importd_server.store.migrate import migrate
from importd_server.store.pool import create_pool
from importd_server.store.secrets import PAGE_TOKEN_KEY, WEBHOOK_KEY, shared_secret
from importd_server.store.targets import ensure_target_table
from importd_server.store.webhooks import WebhookStore
from importd_server.tracing import Tracing
from importd_server.webhooks.deliverer import DeliveryPolicy, WebhookDeliverer
from importd_server.webhooks.signing import WebhookSigner

log = structlog.get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ImportService"].full_name


class Application:
    """One importd server: its database pool, its stores and its gRPC server."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self._interceptors = tuple(interceptors)
        self.tracing = tracing or Tracing.from_settings(settings)
        self.database_url = database_url
        self.port: int | None = None
        self.http_port: int | None = None
        self.download_links: DownloadLinks | None = None
        self._http: HttpServer | None = None
        self._socket_dir: Path | None = None
        self._pool: asyncpg.Pool | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.workers: WorkerPool | None = None
        self.hub: ProgressHub | None = None
        self.metrics: Metrics | None = None
        self.housekeeper: Housekeeper | None = None
        self.deliverer: WebhookDeliverer | None = None
        self.uploads: UploadSlots | None = None
        self._monitor = DatabaseMonitor(database_url, self._set_serving)

    async def start(self) -> int:
        """Connects (waiting up to `database_wait_seconds` for the database: else
        DatabaseUnreachable), migrates, and starts serving; returns the bound port."""
        settings = self.settings
        import_types = load_import_types(settings.types_dir or default_types_dir())
        # Before connecting: a bad token table stops the start-up at once.
        authenticator = Authenticator.from_settings(settings)
        self._pool = await create_pool(
            self.database_url, settings.db_pool_size, wait_seconds=settings.database_wait_seconds
        )
        await migrate(self._pool)
        page_token_key = (
            settings.page_token_key.encode()
            if settings.page_token_key
            else await shared_secret(self._pool, PAGE_TOKEN_KEY)
        )
        webhook_key = (
            settings.webhook_key.encode()
            if settings.webhook_key
            else await shared_secret(self._pool, WEBHOOK_KEY)
        )
        async with self._pool.acquire() as connection:
            for import_type in import_types.values():
                await ensure_target_table(connection, import_type)
        jobs = JobStore(self._pool)
        entries = EntryStore(self._pool)
        self.metrics = Metrics()
        processor = ChunkProcessor(import_types, jobs, entries, settings.lease_seconds)
        self.workers = WorkerPool(
            self._pool,
            jobs,
            processor,
            self.metrics,
            size=settings.workers,
            lease_seconds=settings.lease_seconds,
            poll_seconds=settings.poll_seconds,
            max_attempts=settings.max_attempts,
            tracing=self.tracing,
        )
        admission = Admission(jobs, settings.max_active_jobs_per_tenant)
        self.uploads = UploadSlots(settings.max_uploads)
        stager = Stager(
            self._pool,
            self.database_url,
            jobs,
            entries,
            StagingLimits(
                settings.max_file_bytes,
                settings.chunk_size,
                heartbeat_seconds=settings.upload_stale_seconds / 4,
            ),
            admission,
            self.uploads,
            self.metrics,
        )
        self.hub = ProgressHub(self.database_url, jobs)
        webhooks = WebhookStore(self._pool)
        signer = WebhookSigner(webhook_key)
        self.deliverer = WebhookDeliverer(
            webhooks,
            signer,
            AddressGuard.from_allow_list(settings.remote_allow_hosts),
            DeliveryPolicy.from_settings(settings),
            self.tracing,
            size=settings.webhook_deliverers,
            replica_id=self.workers.replica_id,
        )
        if not authenticator.enabled:
            log.warning(
                "authentication is off: no tokens are configured; every caller is"
                " the tenant 'default' with every scope"
            )
        if settings.http_port is not None:
            # The gateway calls this server's gRPC service over a socket of its own: private
            # to this user, and reachable whatever the gRPC port's address and TLS.
            self._socket_dir = Path(tempfile.mkdtemp(prefix="importd-"))
            gateway_target = f"unix:{self._socket_dir / 'grpc.sock'}"
            self._http = HttpServer(settings, gateway_target)
            self.http_port = self._http.bind()
            # The page tokens' key, which every replica shares: a link issued by one opens
            # on any (DownloadLinks derives a key of its own from it).
            self.download_links = DownloadLinks(page_token_key, self._public_url(self.http_port))
        servicer = ImportServicer(
            settings,
            import_types,
            jobs,
            entries,
            stager,
            self.hub,
            authenticator,
            admission,
            PageTokens(page_token_key),
            webhooks,
            signer,
            self.tracing,
            self.workers.wake,
            reverter=Reverter(self._pool, jobs, entries, admission, settings.chunk_size),
            download_links=self.download_links,
        )

        limit = settings.max_message_bytes
        self.housekeeper = Housekeeper(
            jobs,
            self.metrics,
            retention_days=settings.retention_days,
            interval=settings.housekeeping_seconds,
            upload_stale_seconds=settings.upload_stale_seconds,
        )
        server = grpc.aio.server(
            interceptors=(
                *self.tracing.interceptors(),  # first: the RPC's span covers the others
                MetricsInterceptor(self.metrics),
                *self._interceptors,
            ),
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Clients ping every 20 s to find dead peers (importd_client does); accept
                # that, and ping quiet clients in turn so abandoned streams are released.
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                ("grpc.http2.max_ping_strikes", 0),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
            ],
        )
        pb_grpc.add_ImportServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{self.settings.host}:{self.settings.port}"
        if settings.tls_cert is not None and settings.tls_key is not None:
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
            )
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot bind {address}")
        if self._http is not None:
            server.add_insecure_port(gateway_target)
        await server.start()
        self._grpc = server
        if self._http is not None and self.download_links is not None:
            await self._http.start(LinkDownloads(self.download_links, jobs, entries))
            log.info("http served", url=self._public_url(self.http_port))
        self.workers.start()
        self.hub.start()
        self.housekeeper.start()
        self.deliverer.start()
        if settings.metrics_port is not None:
            metrics_port = self.metrics.serve(settings.metrics_host, settings.metrics_port)
            log.info("metrics served", url=f"http://{settings.metrics_host}:{metrics_port}/")
        await self._set_serving(True)
        # Health follows the database from now on (NOT_SERVING while it is out of reach).
        self._monitor.start()
        log.info("importd serving", host=self.settings.host, port=self.port)
        return self.port

    def _public_url(self, port: int | None) -> str:
        """Where people reach the HTTP port: the setting, else the address it listens on."""
        settings = self.settings
        if settings.http_public_url:
            return settings.http_public_url.rstrip("/")
        scheme = "https" if settings.tls_cert else "http"
        host = f"[{settings.http_host}]" if ":" in settings.http_host else settings.http_host
        return f"{scheme}://{host}:{port}"

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        # Once shutdown has begun the health servicer ignores this: NOT_SERVING stays.
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)

    async def stop(self, grace: float | None = None) -> None:
        """Stops taking calls, lets running calls finish within the grace period, disconnects."""
        grace = self.settings.grace_seconds if grace is None else grace
        await self._monitor.stop()
        await self._health.enter_graceful_shutdown()
        if self.hub is not None:
            # Open progress streams end now with UNAVAILABLE, so watchers resume elsewhere.
            await self.hub.close()
        if self.housekeeper is not None:
            await self.housekeeper.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()
        if self.workers is not None:
            await self.workers.stop(grace)
        # Together: requests in flight on the HTTP port are calls of the gRPC server.
        await asyncio.gather(self._stop_http(), self._stop_grpc(grace))
        if self.uploads is not None:
            self.uploads.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.tracing.shutdown()
        log.info("importd stopped")

    async def _stop_http(self) -> None:
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    async def _stop_grpc(self, grace: float) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
