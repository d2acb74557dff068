"""Process roles: ``serve`` (API, Slack app, callback listener and a worker in one process) and
``worker`` (workers alone)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from bot.handler import CommandHandler
from config import Settings, slack_enabled
from engine import broker as topics
from engine.api.app import build_app
from engine.broker import Envelope
from engine.callbacks import CallbackSink
from engine.errors import CannotStart, Unavailable
from engine.exec_schedules import ScheduleFiring, schedules_of
from engine.execution_tokens import api_url
from engine.inquiries import SWEEP_INTERVAL_S, InquirySweep, inquiries_of
from engine.outbound import OutboundPolicy
from engine.outbox import DeliveryFailed, OutboxDrainer, Sink
from engine.records import Delivery, Execution, Route
from engine.retries import Retries, RetrySweep
from engine.runtime import Runtime, build_runtime

#: How long the rest of a refused request body is read and dropped before the connection closes.
LINGER_S = 2.0

log = logging.getLogger(f"attune.{__name__}")


class SlackOff:
    """Stands in for Slack while it is not configured: its deliveries fail at once, visibly
    (``GET /api/v1/executions/{id}/deliveries``), instead of waiting forever."""

    async def deliver(self, delivery: Delivery, execution: Execution, route: Route) -> None:
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


#: Time the HTTP server gives requests in flight when stopping (open WebSockets are closed).
HTTP_SHUTDOWN_S = 3.0
#: How long the start-up banner waits for Socket Mode's first attempt.
SOCKET_BANNER_WAIT_S = 5.0
#: Beyond the configured graces, time stopping may take before the process dumps every
#: thread's stack to stderr and exits 1 (a hang is never silent, and never forever).
STOP_WATCHDOG_S = 30.0
#: A step of stopping slower than this is logged.
SLOW_STEP_S = 1.0
#: Beyond the graces for running executions, the time all other steps of stopping share.
STOP_BUDGET_S = 10.0
#: What a step gets once that budget is spent (to close its connections).
MIN_STEP_S = 0.5


def stop_budget_s(settings: Settings) -> float:
    """How long stopping may take: the graces of running executions, then STOP_BUDGET_S."""
    return settings.shutdown_grace_s + settings.kill_grace_s + STOP_BUDGET_S


class Stopping:
    """The steps of stopping, each bounded: a step that overruns or fails is logged by name and
    the rest still run. A watchdog (faulthandler) ends the process, with every thread's stack
    on stderr, if stopping as a whole hangs anyway (say, in a thread asyncio waits for)."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        #: Time for all the steps together: once spent, each step left gets MIN_STEP_S.
        self.deadline = self.started + budget_s
        faulthandler.dump_traceback_later(budget_s + STOP_WATCHDOG_S, exit=True)

    async def run(self, name: str, work: Awaitable[Any], bound_s: float) -> None:
        began = time.monotonic()
        bound_s = max(min(bound_s, self.deadline - began), MIN_STEP_S)
        try:
            await asyncio.wait_for(work, bound_s)
        except TimeoutError:
            log.warning("stopping: %s did not finish within %.3g s; going on", name, bound_s)
        except Exception as exc:
            log.warning("stopping: %s failed (%s: %s); going on", name, type(exc).__name__, exc)
        else:
            spent = time.monotonic() - began
            if spent > SLOW_STEP_S:
                log.info("stopping: %s took %.1f s", name, spent)

    def done(self, signalled: bool) -> None:
        """Say how long stopping took, after a stop signal (a start-up that failed has said
        why in one line, and only that)."""
        if signalled:
            log.info("stopped in %.1f s", time.monotonic() - self.started)


async def _first_of(stop: asyncio.Event, work: Awaitable[None]) -> None:
    """``work``, unless a stop signal comes first."""
    waiter = asyncio.ensure_future(stop.wait())
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (waiter, task):
            t.cancel()


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
        print("  Slack:    Socket Mode, connected", file=out)
    elif slack_mode is not None and slack_mode.startswith("socket-down:"):
        why = slack_mode.removeprefix("socket-down:")
        print(
            f"  Slack:    Socket Mode, NOT connected ({why}); retrying in the background",
            file=out,
        )
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
    socket_link: Any = None  # a SocketModeLink in Socket Mode
    callbacks = CallbackSink(
        runtime.callback_secret(), policy=OutboundPolicy.from_ranges(settings.outbound_allow)
    )
    sinks: dict[str, Sink] = {"callback": callbacks, "slack": SlackOff()}
    slack_sink: Any = None  # a SlackSink when Slack is configured
    live: Any = None  # its LiveUpdater
    roles: Any = None  # SlackRoles
    poster: Any = None  # its InquiryPoster
    drainer = OutboxDrainer(runtime.service, sinks, acks_first=runtime.acks_first)
    firing = ScheduleFiring(schedules_of(runtime), settings.timer_poll_s)
    # Overdue inquiries end timeout; a cancelled waiting run ends its inquiry.
    inquiry_sweep = InquirySweep(inquiries_of(runtime), SWEEP_INTERVAL_S, runtime.broker)
    # Runs that ended abandoned or timeout are run again while their action allows.
    retry_sweep = RetrySweep(
        Retries(runtime.service, runtime.service.retry_marks), settings.retry_poll_s
    )
    try:
        if with_worker:
            await runtime.start_worker()
        else:
            runtime.start_housekeeper()
            await runtime.start_workflows()  # a worker's start does it otherwise
        runtime.start_automation()
        firing.start()
        await inquiry_sweep.start()
        retry_sweep.start()
        routes: list[web.RouteDef] = []
        slack_mode = None
        if slack_enabled(settings):
            # Imported only when Slack is configured (Bolt and slack_sdk weigh 20 MB and 0.2 s).
            from slack_sdk.web.async_client import AsyncWebClient

            from bot import render_workflow
            from bot.alias_chat import alias_result
            from bot.slack_app import build_slack_app, build_web_client, slack_routes
            from bot.slack_live import LiveUpdater
            from bot.slack_roles import SlackRoles
            from bot.slack_sink import SlackSink
            from bot.slack_workflow_cards import WorkflowCards
            from engine.page_links import execution_page_url
            from engine.storage.chat_messages import chat_messages_repository
            from engine.workflows.run_tree import workflow_trees

            client = build_web_client(settings)
            roles = SlackRoles(settings.slack_roles, settings.slack_default_role)
            roles.start(client)
            slack_app = build_slack_app(settings, CommandHandler(runtime), client, roles)
            chat_messages = chat_messages_repository(runtime.store)
            # Live messages run in their own tasks, beside the outbox drainer, never in it,
            # with a client of their own that does not sleep on a 429 (they pause instead).
            live_client = AsyncWebClient(
                session=client.session,
                token=client.token,
                base_url=client.base_url,
                timeout=client.timeout,
            )
            live = LiveUpdater(live_client, chat_messages, runtime.live_output, runtime.service)
            secret_key = runtime.secret_key

            def page_url(execution_id: int) -> str | None:
                return execution_page_url(settings, execution_id, secret_key=secret_key)

            # A workflow run's card shows its tasks, edited as they move (paced per channel).
            trees = workflow_trees(runtime)
            cards = WorkflowCards(
                live_client,
                chat_messages,
                trees,
                runtime.service,
                lambda tree: render_workflow.card(tree, page_url=page_url(tree.execution.id)),
            )
            slack_sink = SlackSink(
                client,
                chat_messages,
                owners=runtime.automation.rules.owners_of_enforcement,
                page_url=page_url,
                live=live,
                alias_result=functools.partial(alias_result, runtime, slack=True),
                workflows=trees,
                cards=cards,
            )
            sinks["slack"] = slack_sink
            live.start()
            cards.start()
            from bot.slack_inquiries import InquiryPoster

            poster = InquiryPoster(
                inquiries_of(runtime), client, chat_messages, card_of=trees.card_of
            ).start()
            if settings.slack_app_token is not None:
                from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

                from bot.slack_socket import SocketModeLink

                socket_link = SocketModeLink(
                    AsyncSocketModeHandler(slack_app, settings.slack_app_token.get_secret_value())
                )
                socket_link.start()  # in the background: Slack being down stops nothing
                runtime.links["slack"] = socket_link.up
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
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=HTTP_SHUTDOWN_S,
            # Bounds the wait for a request's line and headers (a slow client's trickle).
            keepalive_timeout=settings.http_header_timeout_s,
            # After an early answer (408, 413), the rest of a body is read and dropped for at
            # most this long so the client sees the answer; then the connection closes.
            lingering_time=LINGER_S,
        )
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        try:
            await site.start()
        except OSError as exc:
            raise CannotStart(
                f"cannot listen on {settings.http_host}:{settings.http_port} "
                f"({os.strerror(exc.errno) if exc.errno else exc}): set ATTUNE_HTTP_PORT "
                "(or --port) to a free port (or ATTUNE_HTTP_HOST, --host, to an address of this "
                "machine)"
            ) from exc
        port = runner.addresses[0][1] if runner.addresses else settings.http_port
        runtime.execution_tokens.api_url = api_url(settings.http_host, port)  # for actions
        if socket_link is not None:  # the banner says how the first attempt went
            await _first_of(stop, socket_link.first_attempt(SOCKET_BANNER_WAIT_S))
            if not socket_link.up():
                slack_mode = f"socket-down:{socket_link.last_error or 'connecting'}"
        announce(runtime, f"http://{settings.http_host}:{port}", slack_mode)
        await stop.wait()
        log.info("stopping")
    finally:
        steps = Stopping(stop_budget_s(settings))
        await steps.run("schedules", firing.stop(), 2)
        await steps.run("inquiries", inquiry_sweep.stop(), 2)
        await steps.run("retries", retry_sweep.stop(), 2)
        if socket_link is not None:
            await steps.run("Slack Socket Mode", socket_link.close(), 3)
        if runner is not None:
            await steps.run("the HTTP server", runner.cleanup(), HTTP_SHUTDOWN_S + 2)
        if runtime.worker is not None:
            grace = settings.shutdown_grace_s
            bound = grace + settings.kill_grace_s + 5
            await steps.run("the worker", runtime.worker.stop(grace), bound)
        if poster is not None:
            await steps.run("Slack inquiries", poster.stop(), 2)
        if live is not None:  # its messages stay; the end of each run replaces its own
            await steps.run("Slack live messages", live.stop(), 3)
        if slack_sink is not None and slack_sink.cards is not None:
            await steps.run("Slack workflow cards", slack_sink.cards.stop(), 2)
        # A last round for what just finished, then the drainer hands back what it holds.
        await steps.run("the last deliveries", drainer.drain_once(), 5)
        await steps.run("the outbox", drainer.stop(), 5)
        await steps.run("the engine", runtime.close(), 10)
        await steps.run("callbacks", callbacks.close(), 2)
        if roles is not None:
            await steps.run("Slack roles", roles.stop(), 2)
        if slack_sink is not None:
            await steps.run("Slack", slack_sink.close(), 3)
            if slack_sink.client.session is not None:
                await steps.run("Slack's session", slack_sink.client.session.close(), 2)
        steps.done(stop.is_set())


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
        log.info("stopping")
    finally:
        steps = Stopping(stop_budget_s(settings))
        await steps.run("the worker and the engine", runtime.close(), stop_budget_s(settings))
        steps.done(stop.is_set())
