"""``core.http_request``: an HTTP request with the parameters and result of Attune's action
of that name (``status_code, headers, body, json, elapsed_ms, url, success``)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import aiohttp
import yarl

from engine import outbound
from engine.outbound import OutboundPolicy
from engine.runners import RunRequest, RunResult

#: Most of a response body kept in the result.
HTTP_BODY_CAP_BYTES = 1024 * 1024


def _failed(error: str, url: str, started: float) -> RunResult:
    data = {
        "status_code": 0,
        "headers": {},
        "body": "",
        "json": None,
        "elapsed_ms": int((time.monotonic() - started) * 1000),
        "url": url,
        "success": False,
        "error": error,
    }
    return RunResult(outcome="failed", exit_code=1, data=data, error=error)


def _request_options(p: dict[str, Any]) -> dict[str, Any] | str:
    """aiohttp's keyword arguments for the parameters, or what is wrong with them."""
    headers = dict(p.get("headers") or {})
    auth = p.get("auth_type") or "none"
    options: dict[str, Any] = {
        "headers": headers,
        "params": {k: str(v) for k, v in (p.get("query_params") or {}).items()},
        "ssl": bool(p.get("verify_ssl", p.get("verify_tls", True))),
        "allow_redirects": bool(p.get("follow_redirects", True)),
        "max_redirects": int(p.get("max_redirects", 10)),
        "timeout": aiohttp.ClientTimeout(total=float(p.get("timeout", 30))),
    }
    if auth == "basic":
        if "auth_username" not in p:
            return "auth_type basic needs auth_username"
        pair = f"{p['auth_username']}:{p.get('auth_password', '')}".encode()
        headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
    elif auth == "bearer":
        if not p.get("auth_token"):
            return "auth_type bearer needs auth_token"
        headers["Authorization"] = f"Bearer {p['auth_token']}"
    json_body = p.get("json_body", p.get("json"))
    if json_body is not None:
        options["json"] = json_body
    elif "body" in p:
        options["data"] = str(p["body"]).encode()
    return options


async def http_request(request: RunRequest, policy: OutboundPolicy | None = None) -> RunResult:
    """Run the request; destinations ``policy`` refuses (by default loopback, link-local,
    private, multicast and reserved addresses) fail with ``destination not allowed``."""
    policy = policy if policy is not None else OutboundPolicy()
    p = request.parameters
    url = str(p["url"])
    started = time.monotonic()
    if not url.startswith(("http://", "https://")):
        return _failed(f"url must be http or https, got '{url[:200]}'", url, started)
    options = _request_options(p)
    if isinstance(options, str):
        return _failed(options, url, started)
    try:
        policy.check_url(yarl.URL(url))
    except (ValueError, outbound.DestinationNotAllowed) as exc:
        return _failed(outbound.failure_text(exc), url, started)
    try:
        async with (
            outbound.session(policy) as session,
            session.request(str(p.get("method", "GET")), url, **options) as resp,
        ):
            raw = await resp.content.read(HTTP_BODY_CAP_BYTES + 1)
            final_url = str(resp.url)
            status, headers = resp.status, dict(resp.headers)
            is_json = resp.content_type == "application/json"
    except TimeoutError:
        return _failed(f"no answer within {p.get('timeout', 30)} s", url, started)
    except (aiohttp.ClientConnectionError, OSError) as exc:
        return _failed(outbound.failure_text(exc), url, started)
    except (aiohttp.ClientError, ValueError) as exc:
        return _failed(f"request failed: {type(exc).__name__}: {exc}", url, started)
    body = raw[:HTTP_BODY_CAP_BYTES].decode("utf-8", errors="replace")
    parsed: Any = None
    if is_json and len(raw) <= HTTP_BODY_CAP_BYTES:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    expected = p.get("expected_status")
    success = status in expected if expected else 200 <= status < 300
    data = {
        "status_code": status,
        "headers": headers,
        "body": body,
        "json": parsed,
        "elapsed_ms": int((time.monotonic() - started) * 1000),
        "url": final_url,
        "success": success,
    }
    refused = bool(expected) and not success
    return RunResult(
        outcome="failed" if refused else "completed",
        exit_code=1 if refused else 0,
        stdout=body,
        stdout_truncated=len(raw) > HTTP_BODY_CAP_BYTES,
        data=data,
        error=f"HTTP {status} is not in expected_status" if refused else None,
    )
