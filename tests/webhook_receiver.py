"""A webhook receiver on 127.0.0.1 (a free port) that verifies each request with the
reference implementation (`standardwebhooks`) and answers as a test scripts it: an HTTP
status, a wait longer than the sender's timeout, or a hold until released."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from google.protobuf import json_format
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from importd.v1 import import_service_pb2 as pb

PATH = "/hooks/importd"


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and whether its signature verified."""

    webhook_id: str
    job: pb.Job
    verified: bool
    answered: int | str  # the status sent back, or "timeout" / "held"


@dataclass
class Receiver:
    """Answers the n-th request with `script[n]` (an HTTP status; "timeout": sleeps past any
    sender's timeout; "hold": waits until `release` is set), then 204 for every later one."""

    secret: str = ""
    script: list[int | str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.add_routes([web.post(PATH, self._hook)])
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        """The hook's URL (through another host name or scheme if given)."""
        return f"{scheme}://{host}:{self.port}{PATH}"

    def delivered_ids(self) -> set[str]:
        """The webhook-ids answered with a 2xx."""
        return {
            r.webhook_id for r in self.received if isinstance(r.answered, int) and r.answered < 300
        }

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            verified = False
        answer = self.script[len(self.received)] if len(self.received) < len(self.script) else 204
        job = json_format.Parse(body, pb.Job())
        self.received.append(Received(request.headers["webhook-id"], job, verified, answer))
        self.arrived.set()
        if answer == "timeout":
            await asyncio.sleep(3600)
        if answer == "hold":
            await self.release.wait()
            answer = 204
        return web.Response(status=int(answer))
