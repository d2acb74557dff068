"""Serving the bench's bare reference apps (``bench/bare_bolt.py``, ``bench/floor.py``)."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web


async def serve_until_sigterm(app: web.Application) -> None:
    """Serve ``app`` on a free local port, print ``listening on <url>``, stop on SIGTERM."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
