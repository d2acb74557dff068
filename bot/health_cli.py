"""``attune health``: the container health check, for both roles of the image.

``--http`` asks ``GET /health/live`` of the API on this host (``attune serve``); ``--worker``
reads the sign of life a worker keeps in the data dir (engine/liveness.py), because
``attune worker`` serves no HTTP. Without either: the HTTP check, unless nothing listens on the
port at all, in which case this is a worker's container and the worker check decides. Exit 0
when alive, 1 when not, with one line saying why. Cheap: no database, no broker.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from typing import Any

from bot.arguments import add_command, positive_number
from config import Settings
from engine.liveness import Verdict, alive_dir, check_workers

#: Bound on the HTTP probe (Docker's own timeout for the whole check is a few seconds).
HTTP_TIMEOUT_S = 2.0


def add_health_parser(sub: Any) -> None:
    health = add_command(
        sub,
        "health",
        "exit 0 when this host's API (--http) or worker (--worker) is alive",
        details="Otherwise exit 1 with one line saying why. Without --http or --worker: the API,\n"
        "or the worker check when nothing listens on ATTUNE_HTTP_PORT.",
        examples=["attune health --http", "attune health --worker --max-age 30"],
    )
    which = health.add_mutually_exclusive_group()
    which.add_argument(
        "--http", action="store_true", help="the API answers GET /health/live on ATTUNE_HTTP_PORT"
    )
    which.add_argument(
        "--worker",
        action="store_true",
        help="a worker of this host beat recently (it writes into ATTUNE_DATA_DIR/alive)",
    )
    health.add_argument(
        "--max-age",
        type=positive_number,
        default=None,
        metavar="SECONDS",
        help="oldest acceptable worker beat (default: ATTUNE_HEARTBEAT_TIMEOUT_S)",
    )


def _probe_host(host: str) -> str:
    """Where to reach a server listening on ``host`` from this machine."""
    if host in ("", "0.0.0.0"):  # noqa: S104 (a listening address, not one bound here)
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def check_http(settings: Settings) -> Verdict | None:
    """The API's liveness; None when nothing listens on the port (no API on this host)."""
    if settings.http_port == 0:
        return Verdict(False, "ATTUNE_HTTP_PORT is 0 (a random port): cannot tell where to ask")
    url = f"http://{_probe_host(settings.http_host)}:{settings.http_port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return Verdict(False, f"{url} answered {exc.code}")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        return Verdict(False, f"{url} did not answer: {exc.reason}")
    except (TimeoutError, OSError) as exc:
        return Verdict(False, f"{url} did not answer: {exc}")
    if status != 200:
        return Verdict(False, f"{url} answered {status}")
    return Verdict(True, f"{url} answered 200")


def check_worker(settings: Settings, max_age_s: float | None) -> Verdict:
    # The cluster gives up on a silent worker's runs after the heartbeat timeout: the same bound.
    bound = max_age_s or max(settings.heartbeat_timeout_s, 2 * settings.heartbeat_interval_s)
    return check_workers(alive_dir(settings.data_dir), bound)


def run_health(settings: Settings, args: argparse.Namespace) -> int:
    if args.worker:
        verdict = check_worker(settings, args.max_age)
    else:
        http = check_http(settings)
        if http is None and args.http:
            http = Verdict(False, f"nothing listens on {settings.http_host}:{settings.http_port}")
        if http is None:  # no API here: a worker's container
            worker = check_worker(settings, args.max_age)
            where = f"{settings.http_host}:{settings.http_port}"
            http = (
                worker
                if worker.ok
                else Verdict(False, f"nothing listens on {where}, and {worker.message}")
            )
        verdict = http
    if verdict.ok:
        print(f"alive: {verdict.message}")
        return 0
    print(f"attune: not healthy: {verdict.message}", file=sys.stderr)
    return 1
