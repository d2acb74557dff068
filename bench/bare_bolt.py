"""A bare Bolt app that only acks ``/attune`` (``process_before_response=True``), served by
aiohttp like ``attune serve``: the baseline of ``bench/slack.py``. Prints its URL."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bench.bare import serve_until_sigterm


async def main() -> None:
    client = AsyncWebClient(token="xoxb-bench", base_url=os.environ["BENCH_SLACK_API_URL"])
    app = AsyncApp(
        client=client,
        signing_secret=os.environ["BENCH_SIGNING_SECRET"],
        process_before_response=True,
    )

    @app.command("/attune")
    async def on_command(ack: Any) -> None:
        await ack(response_type="ephemeral", text="ok")

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    await serve_until_sigterm(web_app)


if __name__ == "__main__":
    asyncio.run(main())
