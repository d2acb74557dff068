"""The execution page in a real headless browser (Debian's chromium and chromedriver), against a
real ``attune serve``: log in through the form, watch a running execution's output grow and its
status turn completed, cancel another, 404 for one the user may not view, signed links (good,
expired, tampered), and the list's filters.

The ticker prints a line every 200 ms for 3 s; the page follows it over the output stream
(``/logs/stdout/stream``) and the change stream (``/api/v1/executions/stream``). Every wait is
an explicit WebDriverWait, bounded. ``ATTUNE_PAGE_SCREENSHOT=path`` saves the completed
ticker's page there (the README's picture).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from config import Settings
from engine.page_links import execution_page_url
from tests.conftest import AMQP_URL
from tests.e2e.conftest import (
    _LISTENING,
    _WORKER_UP,
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    BACKENDS,
    START_TIMEOUT_S,
    Proc,
    _fresh_postgres_database,
    _private_exchange,
    engine_env,
    spawn,
    stop,
    wait_for_line,
)
from tests.ui.pack import PACK, write_pack

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SECRET_KEY = "page-test-secret-key-" + "x" * 30
VIEWER, VIEWER_PASSWORD = "vic", "password-vic-123"
TOKEN = "tok-5ecret-77"
#: Bound on every browser wait.
WAIT_S = 20.0
POLL_S = 0.05


class Site:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token

    async def start(self, action_ref: str, **params: Any) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.base_url}/api/v1/executions/execute",
                json={"action_ref": action_ref, "parameters": params},
                headers={"Authorization": f"Bearer {self.token}"},
            ) as resp,
        ):
            body = await resp.json()
            assert resp.status == 201, body
            return int(body["data"]["id"])

    def signed(self, execution_id: int, now: float | None = None) -> str:
        settings = Settings(public_url="http://unused", secret_key=SECRET_KEY)
        url = execution_page_url(settings, execution_id, now=now)
        assert url is not None
        parts = urlsplit(url)
        return f"{self.base_url}{parts.path}?{parts.query}"


@pytest.fixture(scope="module", params=BACKENDS)
async def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Site]:
    """``attune serve`` alone on SQLite; on PostgreSQL and RabbitMQ, with a separate
    ``attune worker`` (the page then follows a run another process executes)."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt install chromium-driver)")
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"page-{backend}")
    write_pack(tmp / "packs")
    async with contextlib.AsyncExitStack() as stack:
        overrides: dict[str, str] = {}
        if backend == "postgres":
            overrides["ATTUNE_DATABASE_URL"] = await stack.enter_async_context(
                _fresh_postgres_database()
            )
            overrides["ATTUNE_AMQP_URL"] = AMQP_URL
            overrides["ATTUNE_AMQP_EXCHANGE"] = await stack.enter_async_context(_private_exchange())
            # Few connections: the machine's PostgreSQL is shared.
            overrides["ATTUNE_DATABASE_POOL_SIZE"] = "5"
            overrides["ATTUNE_WORKER_CONCURRENCY"] = "4"
        env = engine_env(
            tmp,
            ATTUNE_PACKS_PATH=str(tmp / "packs"),
            ATTUNE_SECRET_KEY=SECRET_KEY,
            ATTUNE_PERMISSIONS='{"viewer": {"view": ["core.*"]}}',
            ATTUNE_ALLOW_REGISTRATION="true",
            **overrides,
        )
        api_only = ["--no-worker"] if backend == "postgres" else []
        procs = [spawn("serve", ["serve", *api_only], env, tmp)]
        try:
            yield await _started(procs, env, tmp, backend)
        finally:
            problems = [p for p in [await stop(proc) for proc in procs] if p]
            assert not problems, "; ".join(problems) + "\n" + procs[0].stderr()[-3000:]


async def _started(procs: list[Proc], env: dict[str, str], tmp: Path, backend: str) -> Site:
    serve = procs[0]
    base_url = (await wait_for_line(serve, _LISTENING, START_TIMEOUT_S)).group(1).rstrip("/")
    if backend == "postgres":
        procs.append(spawn("worker", ["worker"], env, tmp))
        await wait_for_line(procs[1], _WORKER_UP, START_TIMEOUT_S)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base_url}/auth/login", json={"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD}
        ) as resp:
            token = (await resp.json())["data"]["access_token"]
        async with http.post(
            f"{base_url}/auth/register", json={"login": VIEWER, "password": VIEWER_PASSWORD}
        ) as resp:
            assert resp.status in (200, 201), await resp.text()
    return Site(base_url, token)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1300"):
        options.add_argument(arg)
    # Both paths given: selenium-manager never runs (nothing is downloaded).
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    stale = (StaleElementReferenceException,)
    try:
        return WebDriverWait(
            driver, timeout_s, poll_frequency=POLL_S, ignored_exceptions=stale
        ).until(condition)
    except TimeoutException:
        logs = "\n".join(str(entry.get("message")) for entry in driver.get_log("browser"))
        pytest.fail(
            f"waited {timeout_s} s for {what}; at {driver.current_url}; browser console:\n"
            f"{logs or '(empty)'}",
            pytrace=False,
        )


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).get_attribute("textContent"))


def log_in(driver: Any, site: Site, login: str, password: str, path: str) -> None:
    driver.delete_all_cookies()
    driver.get(site.base_url + path)
    wait(driver, lambda d: "/ui/login" in d.current_url, "the login page")
    driver.find_element(By.ID, "username").send_keys(login)
    field = driver.find_element(By.ID, "password")
    field.send_keys(password)
    field.send_keys(Keys.ENTER)  # the keyboard submits the form
    wait(driver, lambda d: urlsplit(d.current_url).path == path, f"{path} after logging in")


async def test_log_in_and_watch_output_grow_until_completed(site: Site, browser: Any) -> None:
    execution_id = await site.start(f"{PACK}.ticker", host="web1.example.com", token=TOKEN)
    page = f"/ui/executions/{execution_id}"
    log_in(browser, site, ADMIN_LOGIN, ADMIN_PASSWORD, page)
    assert f"{PACK}.ticker" in browser.find_element(By.TAG_NAME, "h1").text
    wait(browser, lambda d: text_of(d, "status-text") == "running", "status running")
    first = wait(browser, lambda d: len(text_of(d, "stdout")), "the first output line")
    status_then = text_of(browser, "status-text")
    assert status_then == "running", (
        f"the first output showed only once the run was {status_then}: the page got no live "
        "output (GET /api/v1/executions/{id}/logs/stdout/stream)"
    )
    seen: list[tuple[str, int]] = []

    def grown(d: Any) -> bool:
        seen.append((text_of(d, "status-text"), len(text_of(d, "stdout"))))
        return seen[-1][1] > first and seen[-1][0] == "running"

    wait(browser, grown, f"stdout to grow past {first} characters while running")
    wait(browser, lambda d: text_of(d, "status-text") == "completed", "status completed")
    assert "tick 1\n" in text_of(browser, "stdout")
    assert "tick 15" in text_of(browser, "stdout")
    assert "a warning" in text_of(browser, "stderr")
    assert text_of(browser, "exit-code") == "0"
    assert text_of(browser, "duration").endswith(" s")
    assert (
        not browser.find_elements(By.ID, "cancel")
        or not browser.find_element(By.ID, "cancel").is_displayed()
    )
    assert (
        "hidden (secret)"
        in browser.find_element(By.ID, "params-heading").find_element(By.XPATH, "..").text
    )
    assert TOKEN not in browser.page_source
    assert "web1.example.com" in browser.page_source
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("aria-live") == "polite"
    target = os.environ.get("ATTUNE_PAGE_SCREENSHOT")
    if target:
        browser.execute_script("window.scrollTo(0, 0)")
        shot = Path(target)
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot.with_suffix(".tmp.png")))
        shutil.move(str(shot.with_suffix(".tmp.png")), shot)


async def test_cancel_button(site: Site, browser: Any) -> None:
    execution_id = await site.start(f"{PACK}.sleeper")
    page = f"/ui/executions/{execution_id}"
    log_in(browser, site, ADMIN_LOGIN, ADMIN_PASSWORD, page)
    wait(browser, lambda d: text_of(d, "status-text") == "running", "status running")
    button = browser.find_element(By.ID, "cancel")
    assert button.tag_name == "button"
    button.click()
    wait(
        browser,
        lambda d: text_of(d, "status-text") in ("canceling", "cancelled"),
        "status canceling or cancelled",
    )
    assert "Cancel requested" in text_of(browser, "action-message")
    wait(browser, lambda d: text_of(d, "status-text") == "cancelled", "status cancelled")


async def test_not_viewable_is_404(site: Site, browser: Any) -> None:
    hidden = await site.start(f"{PACK}.sleeper")
    try:
        log_in(browser, site, VIEWER, VIEWER_PASSWORD, "/ui/executions")
        browser.get(f"{site.base_url}/ui/executions/{hidden}")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
        assert PACK not in browser.page_source
        browser.get(f"{site.base_url}/ui/executions/99999999")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    finally:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{site.base_url}/api/v1/executions/{hidden}/cancel",
                headers={"Authorization": f"Bearer {site.token}"},
            ) as resp,
        ):
            assert resp.status == 200


async def test_signed_link_without_login(site: Site, browser: Any) -> None:
    execution_id = await site.start(f"{PACK}.ticker")
    browser.delete_all_cookies()
    browser.get(site.signed(execution_id))
    assert f"{PACK}.ticker" in browser.find_element(By.TAG_NAME, "h1").text
    assert "shared link" in text_of(browser, "link-note")
    assert not browser.find_elements(By.ID, "cancel")
    assert not browser.find_elements(By.ID, "rerun")
    # The page stays live on the link alone: the run ends, the page says so.
    wait(browser, lambda d: text_of(d, "status-text") == "completed", "status completed (link)")
    assert "tick 15" in text_of(browser, "stdout")
    # Its "Log in" link leads back to the page, now with the buttons the user may use.
    browser.find_element(By.LINK_TEXT, "Log in").click()
    wait(browser, lambda d: "/ui/login" in d.current_url, "the login page from the link")
    browser.find_element(By.ID, "username").send_keys(ADMIN_LOGIN)
    browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD, Keys.ENTER)
    page = f"/ui/executions/{execution_id}"
    wait(browser, lambda d: urlsplit(d.current_url).path == page, "the page after logging in")
    assert browser.find_elements(By.ID, "rerun")
    assert not browser.find_elements(By.ID, "link-note")

    for url in (
        site.signed(execution_id, now=time.time() - 3 * 86400),  # expired
        site.signed(execution_id).replace("sig=", "sig=x"),  # tampered
    ):
        browser.delete_all_cookies()
        browser.get(url)
        wait(browser, lambda d: "/ui/login" in d.current_url, "the login page")
        assert browser.find_element(By.ID, "username")


async def test_list_filters(site: Site, browser: Any) -> None:
    done = await site.start("core.echo", message="listed")
    sleeping = await site.start(f"{PACK}.sleeper")
    log_in(browser, site, ADMIN_LOGIN, ADMIN_PASSWORD, "/ui/executions")
    try:
        Select(browser.find_element(By.ID, "f-status")).select_by_value("running")
        browser.find_element(By.ID, "apply-filters").send_keys(Keys.ENTER)
        wait(browser, lambda d: "status=running" in d.current_url, "the filtered list")
        rows = browser.find_element(By.ID, "executions").text
        assert f"#{sleeping}" in rows
        assert f"#{done}" not in rows
        action = browser.find_element(By.ID, "f-action")
        Select(browser.find_element(By.ID, "f-status")).select_by_value("")
        action.send_keys("core.echo", Keys.ENTER)
        wait(browser, lambda d: "action=core.echo" in d.current_url, "the action filter")
        rows = browser.find_element(By.ID, "executions").text
        assert f"#{done}" in rows
        assert f"#{sleeping}" not in rows
        browser.find_element(By.LINK_TEXT, f"#{done}").click()
        wait(browser, lambda d: d.current_url.endswith(f"/ui/executions/{done}"), "the link")
    finally:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{site.base_url}/api/v1/executions/{sleeping}/cancel",
                headers={"Authorization": f"Bearer {site.token}"},
            ) as resp,
        ):
            assert resp.status == 200
