"""Process roles: ``serve`` (API + worker in one process) and ``worker`` (workers alone)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web

from config import Settings
from engine.api.app import build_app
from engine.runtime import Runtime, build_runtime

log = logging.getLogger("attune")


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def announce(runtime: Runtime, url: str | None) -> None:
    s = runtime.settings
    out = sys.stdout
    if url:
        print(f"Attune chat-ops is listening on {url}", file=out)
        print(f"  API:     {url}/api/v1   (OpenAPI: {url}/api/v1/openapi.json)", file=out)
    print(f"  Database: {s.database_url}", file=out)
    print(f"  Broker:   {'RabbitMQ' if s.amqp_url else 'in-process'}", file=out)
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
    """API, worker and sweep in one process until SIGINT/SIGTERM."""
    stop = _stop_event()
    runtime = await build_runtime(settings)
    runner: web.AppRunner | None = None
    try:
        if with_worker:
            await runtime.start_worker()
        app = build_app(runtime)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.http_port
        announce(runtime, f"http://{settings.http_host}:{port}")
        await stop.wait()
        log.info("stopping")
    finally:
        if runner is not None:
            await runner.cleanup()
        await runtime.close()


async def worker(settings: Settings) -> None:
    """Workers alone (with the sweep), sharing the database and RabbitMQ with other processes."""
    stop = _stop_event()
    runtime = await build_runtime(settings, sync_packs=False, ensure_admin=False)
    try:
        w = await runtime.start_worker()
        print(
            f"Attune worker {w.worker_id} running {settings.worker_concurrency} at a time",
            flush=True,
        )
        await stop.wait()
    finally:
        await runtime.close()
