"""Process roles: ``serve`` (API, Slack app, callback listener and a worker in one process) and
``worker`` (workers alone)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from typing import Any

from aiohttp import web

from bot.handler import CommandHandler
from config import Settings, slack_enabled
from engine import broker as topics
from engine.api.app import build_app
from engine.broker import Envelope
from engine.callbacks import CallbackSink
from engine.errors import CannotStart, Unavailable
from engine.execution_tokens import api_url
from engine.outbound import OutboundPolicy
from engine.outbox import DeliveryFailed, OutboxDrainer, Sink
from engine.runtime import Runtime, build_runtime

log = logging.getLogger("attune")


class SlackOff:
    """Stands in for Slack while it is not configured: its deliveries fail at once, visibly
    (``GET /api/v1/executions/{id}/deliveries``), instead of waiting forever."""

    async def deliver(
        self, delivery: Any, execution: dict[str, Any], route: dict[str, Any]
    ) -> None:
        raise DeliveryFailed(
            "Slack is not configured on this server (set "
            "ATTUNE_SLACK_BOT_TOKEN and a signing secret or app token)",
            permanent=True,
        )


def return_freed_memory() -> None:
    """Have glibc give large freed blocks back to the system at once.

    By default glibc raises its mmap threshold after a large block is freed, so that later
    blocks of that size come from the heap and stay resident once freed: each login's scrypt
    (16 MB, in a worker thread) then left 16 MB of resident memory behind (measured). A fixed
    threshold keeps blocks of 128 KB and more in their own mappings, unmapped when freed.
    Nothing happens on a C library other than glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


#: glibc's mallopt parameter (malloc.h).
_M_MMAP_THRESHOLD = -3


async def _build_runtime(settings: Settings, **options: bool) -> Runtime:
    """:func:`build_runtime`, with a database that cannot be reached said in one line that
    names the setting to change."""
    try:
        return await build_runtime(settings, **options)
    except Unavailable as exc:
        raise CannotStart(f"{exc.message}; check ATTUNE_DATABASE_URL") from exc


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def announce(runtime: Runtime, url: str | None, slack_mode: str | None) -> None:
    s = runtime.settings
    out = sys.stdout
    if url:
        print(f"Attune chat-ops is listening on {url}", file=out)
        print(f"  API:     {url}/api/v1   (OpenAPI: {url}/api/v1/openapi.json)", file=out)
    print(f"  Database: {s.database_url}", file=out)
    print(f"  Broker:   {'RabbitMQ' if s.amqp_url else 'in-process'}", file=out)
    if slack_mode == "http":
        print(f"  Slack:    HTTP mode, request URL {url}/slack/events", file=out)
    elif slack_mode == "socket":
        print("  Slack:    Socket Mode", file=out)
    else:
        print(
            "  Slack:    off (set ATTUNE_SLACK_BOT_TOKEN and ATTUNE_SLACK_SIGNING_SECRET)", file=out
        )
    if runtime.generated_admin_password:
        print(
            f"  Admin login: {s.admin_login}  password: {runtime.generated_admin_password}"
            "  (shown once; set ATTUNE_ADMIN_PASSWORD to choose it)",
            file=out,
        )
    for problem in runtime.pack_errors:
        print(f"  Pack not loaded: {problem}", file=out)
    out.flush()


async def serve(settings: Settings, *, with_worker: bool = True) -> None:
    """Everything in one process until SIGINT/SIGTERM."""
    return_freed_memory()
    stop = _stop_event()
    runtime = await _build_runtime(settings)
    runner: web.AppRunner | None = None
    socket_handler: Any = None
    callbacks = CallbackSink(
        runtime.callback_secret(), policy=OutboundPolicy.from_ranges(settings.outbound_allow)
    )
    sinks: dict[str, Sink] = {"callback": callbacks, "slack": SlackOff()}
    slack_sink: Any = None  # a SlackSink when Slack is configured
    roles: Any = None  # SlackRoles
    drainer = OutboxDrainer(runtime.store, runtime.service, sinks, foreground=runtime.foreground)
    try:
        if with_worker:
            await runtime.start_worker()
        else:
            runtime.start_housekeeper()
        runtime.start_automation()
        routes: list[web.RouteDef] = []
        slack_mode = None
        if slack_enabled(settings):
            # Imported only when Slack is configured (Bolt and slack_sdk weigh 20 MB and 0.2 s).
            from bot.slack_app import build_slack_app, build_web_client, slack_routes
            from bot.slack_roles import SlackRoles
            from bot.slack_sink import SlackSink

            client = build_web_client(settings)
            roles = SlackRoles(settings.slack_roles, settings.slack_default_role)
            roles.start(client)
            slack_app = build_slack_app(settings, CommandHandler(runtime), client, roles)
            slack_sink = SlackSink(client, runtime.service)
            sinks["slack"] = slack_sink
            if settings.slack_app_token is not None:
                from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

                socket_handler = AsyncSocketModeHandler(
                    slack_app, settings.slack_app_token.get_secret_value()
                )
                await socket_handler.connect_async()
                slack_mode = "socket"
            if settings.slack_signing_secret is not None:
                routes = slack_routes(slack_app, settings.slack_signing_secret.get_secret_value())
                slack_mode = slack_mode or "http"

        async def wake(_envelope: Envelope) -> None:
            drainer.wake()

        # Started and completed come from whichever worker ran the execution; a chat card's
        # "created" row is written by this process, which wakes the drainer itself.
        await runtime.broker.consume(None, [topics.STARTED, topics.COMPLETED], wake, prefetch=8)
        runtime.service.on_chat_submitted = drainer.wake
        drainer.start()
        app = build_app(runtime, extra_routes=routes)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        try:
            await site.start()
        except OSError as exc:
            raise CannotStart(
                f"cannot listen on {settings.http_host}:{settings.http_port} "
                f"({os.strerror(exc.errno) if exc.errno else exc}): set ATTUNE_HTTP_PORT "
                "to a free port (or ATTUNE_HTTP_HOST to an address of this machine)"
            ) from exc
        port = runner.addresses[0][1] if runner.addresses else settings.http_port
        runtime.execution_tokens.api_url = api_url(settings.http_host, port)  # for actions
        announce(runtime, f"http://{settings.http_host}:{port}", slack_mode)
        await stop.wait()
        log.info("stopping")
    finally:
        if socket_handler is not None:
            with contextlib.suppress(Exception):
                await socket_handler.close_async()
        if runner is not None:
            await runner.cleanup()
        if runtime.worker is not None:
            await runtime.worker.stop(settings.shutdown_grace_s)
        with contextlib.suppress(Exception):  # a last round for what just finished
            await asyncio.wait_for(drainer.drain_once(), 5)
        await drainer.stop()
        await runtime.close()
        await callbacks.close()
        if roles is not None:
            await roles.stop()
        if slack_sink is not None:
            await slack_sink.close()
            if slack_sink.client.session is not None:
                await slack_sink.client.session.close()


async def worker(settings: Settings) -> None:
    """Workers alone (with the sweep), sharing the database and RabbitMQ with other processes."""
    return_freed_memory()
    stop = _stop_event()
    runtime = await _build_runtime(settings, sync_packs=False, ensure_admin=False)
    try:
        w = await runtime.start_worker()
        print(
            f"Attune worker {w.worker_id} running {settings.worker_concurrency} at a time",
            flush=True,
        )
        await stop.wait()
    finally:
        await runtime.close()
