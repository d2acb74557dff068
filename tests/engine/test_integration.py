"""The engine in-process (no HTTP), on every combination of storage and broker.

``sqlite+memory`` is the embedded default, ``postgres+rabbitmq`` the cluster; the mixed
combinations prove that the two seams are independent. PostgreSQL tests share one fresh database
per module (``attune_it_<hex>``, dropped at the end), so every test uses action refs and files of
its own and leaves no execution in ``requested`` behind. RabbitMQ tests use a private exchange.

Everything is observed the way a user would: execution records, the rows in the database, files an
action wrote, the metrics the engine exports. Waits poll with a hard deadline (tests.waiting);
on the in-process broker a wait for messages waits for their handling instead (``settled``).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import RowMapping, make_url

from config import Settings
from engine import housekeeping
from engine.audit import AuditEntry
from engine.broker import REQUESTED, REQUESTED_QUEUE, Envelope
from engine.broker.amqp import AmqpBroker
from engine.broker.memory import MemoryBroker
from engine.errors import Conflict, InvalidRequest, Unavailable
from engine.housekeeping import Housekeeper
from engine.packs import ActionSpec
from engine.params import REDACTED, normalize_schema
from engine.records import Executor
from engine.runtime import Runtime, build_runtime
from engine.status import TERMINAL, ExecutionStatus
from engine.storage.tables import audit, deliveries, executions
from tests.waiting import eventually

WAIT_S = 10.0  # upper bound for anything that should happen "soon"
#: This checkout's packs and the test fixtures' (whatever folder the checkout is in).
_ROOT = Path(__file__).resolve().parents[2]
PACKS_PATH = f"{_ROOT / 'packs'}:{_ROOT / 'tests' / 'fixtures' / 'packs'}"
ALICE = Executor(identity="alice", source="api", channel="#ops")
TERMINAL_VALUES = {s.value for s in TERMINAL}

# An action that appends its execution id to the file named by its ``path`` parameter, after
# sleeping ``delay`` seconds; the file shows how many times the action really ran.
APPEND_SCRIPT = """\
. "$ATTUNE_PARAMETERS_FILE"
sleep "$delay"
printf '%s\\n' "$ATTUNE_EXECUTION_ID" >> "$path"
"""


# -- waiting --------------------------------------------------------------------------------------


async def settled(rt: Runtime) -> None:
    """Wait for the messages this runtime published to be handled: its background publishes,
    then, on the in-process broker, their handlers (``join``). On RabbitMQ the caller polls."""
    await rt.service.drain()
    if isinstance(rt.broker, MemoryBroker):
        await asyncio.wait_for(rt.broker.join(), WAIT_S)


async def wait_status(
    rt: Runtime, execution_id: int, *statuses: str, timeout_s: float = WAIT_S
) -> dict[str, Any]:
    """Wait until the execution is in one of ``statuses``; fail early on another final status."""

    async def probe() -> dict[str, Any]:
        record = await rt.service.get(execution_id)
        if record.status not in statuses and record.status in TERMINAL_VALUES:
            pytest.fail(
                f"execution {execution_id} ended {record['status']}, expected {statuses}: "
                f"{record['result']}"
            )
        return record

    record: dict[str, Any] = await eventually(
        probe,
        f"execution {execution_id} to be one of {statuses}",
        timeout_s,
        done=lambda r: r.status in statuses,
    )
    return record


async def raw_execution(rt: Runtime, execution_id: int) -> RowMapping:
    async with rt.store.read() as conn:
        row = (await conn.execute(select(executions).where(executions.c.id == execution_id))).one()
    return row._mapping


async def delivery_rows(rt: Runtime, execution_ids: list[int]) -> list[RowMapping]:
    async with rt.store.read() as conn:
        rows = (
            await conn.execute(
                select(deliveries)
                .where(deliveries.c.execution_id.in_(execution_ids))
                .order_by(deliveries.c.id)
            )
        ).all()
    return [r._mapping for r in rows]


def transitions(rt: Runtime, status: str, action_ref: str) -> float:
    """The exported ``attune_execution_transitions_total`` counter of this runtime."""
    value = rt.metrics.registry.get_sample_value(
        "attune_execution_transitions_total", {"status": status, "action": action_ref}
    )
    return value or 0.0


def spy_on_execute(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Count, per execution id, the calls of ``rt.worker.take`` that returned (broker
    deliveries and ``execute`` go through it), so a test can wait until duplicates have been
    handled."""
    worker = rt.worker
    assert worker is not None
    handled: Counter[int] = Counter()
    original = worker.take

    async def take(execution_id: int) -> asyncio.Task[None] | None:
        try:
            return await original(execution_id)
        finally:
            handled[execution_id] += 1

    monkeypatch.setattr(worker, "take", take)
    return handled


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def create_append_action(rt: Runtime) -> str:
    name = unique("append")
    spec = ActionSpec(
        ref=f"it.{name}",
        pack_ref="it",
        name=name,
        runner_type="shell",
        script=APPEND_SCRIPT,
        param_schema=normalize_schema(
            {
                "path": {"type": "string", "required": True},
                "delay": {"type": "number", "default": 0},
            }
        ),
        parameter_delivery="file",
        parameter_format="dotenv",
    )
    await rt.catalog.create_action(spec)
    return spec.ref


async def create_noop_action(rt: Runtime) -> str:
    name = unique("noop")
    spec = ActionSpec(
        ref=f"it.{name}", pack_ref="it", name=name, runner_type="builtin", entry_point="noop"
    )
    await rt.catalog.create_action(spec)
    return spec.ref


# -- backends -------------------------------------------------------------------------------------


@dataclass
class PostgresDatabases:
    """One fresh database per module, created on first use and dropped at the end."""

    url: str | None = None

    async def get(self, server_url: str) -> str:
        if self.url is None:
            base = make_url(server_url)
            name = f"attune_it_{uuid.uuid4().hex[:12]}"
            admin = await asyncpg.connect(
                host=base.host or "127.0.0.1",
                port=base.port or 5432,
                user=base.username or "postgres",
                password=base.password,
                database="postgres",
            )
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            self.url = base.set(drivername="postgresql+asyncpg", database=name).render_as_string(
                hide_password=False
            )
        return self.url

    async def drop(self) -> None:
        if self.url is None:
            return
        url = make_url(self.url)
        admin = await asyncpg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            database="postgres",
        )
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="module")
async def pg_databases() -> AsyncIterator[PostgresDatabases]:
    databases = PostgresDatabases()
    yield databases
    await databases.drop()


@dataclass
class Backend:
    name: str
    settings: Settings
    runtimes: list[Runtime] = field(default_factory=list)

    @property
    def rabbitmq(self) -> bool:
        return self.settings.amqp_url is not None

    async def runtime(self, worker_id: str | None = None) -> Runtime:
        """A runtime on this backend; with ``worker_id`` its worker is started."""
        rt = await asyncio.wait_for(build_runtime(self.settings), WAIT_S)
        self.runtimes.append(rt)
        assert rt.pack_errors == [], rt.pack_errors
        if worker_id is not None:
            await rt.start_worker(worker_id)
        return rt

    async def close(self) -> None:
        for rt in self.runtimes:
            await asyncio.wait_for(rt.close(grace_s=2.0), 15.0)
        for rt in self.runtimes:
            if isinstance(rt.broker, AmqpBroker):
                await asyncio.wait_for(rt.broker.delete_topology(), WAIT_S)


@pytest.fixture(
    params=[
        pytest.param(("sqlite", "memory"), id="sqlite+memory"),
        pytest.param(
            ("postgres", "rabbitmq"),
            id="postgres+rabbitmq",
            marks=[pytest.mark.postgres, pytest.mark.rabbitmq],
        ),
        pytest.param(("sqlite", "rabbitmq"), id="sqlite+rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param(("postgres", "memory"), id="postgres+memory", marks=pytest.mark.postgres),
    ]
)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: PostgresDatabases
) -> AsyncIterator[Backend]:
    db, broker = request.param
    if db == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'attune.db'}"
    else:
        database_url = await pg_databases.get(request.getfixturevalue("postgres_url"))
    amqp_url: str | None = None
    exchange = "attune.executions"
    if broker == "rabbitmq":
        amqp_url = request.getfixturevalue("amqp_url")
        exchange = request.getfixturevalue("amqp_exchange")
    settings = Settings(
        database_url=database_url,
        amqp_url=amqp_url,
        amqp_exchange=exchange,
        packs_path=PACKS_PATH,
        data_dir=tmp_path,
        admin_password="x" * 12,
        kill_grace_s=0.5,
        sweep_interval_s=0.2,
        requeue_after_s=0.5,
    )
    b = Backend(name=f"{db}+{broker}", settings=settings)
    try:
        yield b
    finally:
        await b.close()


# -- tests ----------------------------------------------------------------------------------------


async def test_echo_actions_complete(backend: Backend) -> None:
    rt = await backend.runtime(worker_id="worker-1")

    builtin = await rt.service.submit("core.echo", {"message": "hello from chat"}, ALICE)
    script = await rt.service.submit("test_pack.echo", {"message": "hi", "count": "3"}, ALICE)
    assert builtin.status == script.status == "requested"

    done = await wait_status(rt, builtin.id, "completed")
    assert done.result["stdout"] == "hello from chat\n"
    assert done.result["succeeded"] is True
    assert done.result["exit_code"] == 0
    assert done.requester == {"identity": "alice", "source": "api", "channel": "#ops"}
    assert done.created <= done.started_at <= done.finished_at

    done = await wait_status(rt, script.id, "completed")
    assert done.config == {"message": "hi", "count": 3}, "'3' was coerced to the integer 3"
    assert done.result["data"] == {"message": "hi", "repeated": ["hi", "hi", "hi"]}
    assert done.result["succeeded"] is True
    assert (await raw_execution(rt, script.id))["worker"] == "worker-1"


async def test_duplicate_delivery_runs_once(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    handled = spy_on_execute(rt, monkeypatch)
    ref = await create_append_action(rt)
    out = tmp_path / "ran.txt"

    record = await rt.service.submit(ref, {"path": str(out), "delay": 0.3}, ALICE)
    eid = record.id
    doorbell = {"execution_id": eid, "action_ref": ref}
    assert rt.worker is not None
    await asyncio.gather(
        *(rt.broker.publish(REQUESTED, doorbell) for _ in range(5)),
        *(rt.worker.execute(eid) for _ in range(3)),
    )
    done = await wait_status(rt, eid, "completed")
    # The original message, 5 duplicates and 3 direct calls have all been handled.
    await settled(rt)
    await eventually(lambda: _at_least(handled, eid, 9), "9 deliveries of the same execution")

    # Late duplicates, after the run ended, find the row finished.
    await asyncio.gather(
        *(rt.broker.publish(REQUESTED, doorbell) for _ in range(2)), rt.worker.execute(eid)
    )
    await settled(rt)
    await eventually(lambda: _at_least(handled, eid, 12), "3 late deliveries")

    assert out.read_text().splitlines() == [str(eid)], "the action ran exactly once"
    after = await rt.service.get(eid)
    assert after.status == "completed"
    assert after.started_at == done.started_at, "claimed once: started_at never moved"
    assert after.finished_at == done.finished_at
    assert transitions(rt, "running", ref) == 1
    assert transitions(rt, "completed", ref) == 1


async def _at_least(counter: Counter[int], key: int, n: int) -> bool:
    return counter[key] >= n


async def test_two_workers_share_executions(backend: Backend, tmp_path: Path) -> None:
    first = await backend.runtime(worker_id="worker-a")
    second = await backend.runtime(worker_id="worker-b")
    assert second.worker is not None
    ref = await create_append_action(first)
    out = tmp_path / "ran.txt"

    records = await asyncio.gather(
        *(first.service.submit(ref, {"path": str(out)}, ALICE) for _ in range(40))
    )
    ids = [r.id for r in records]
    if not backend.rabbitmq:
        # Each runtime has its own in-process broker: the second worker competes for the same
        # rows by being handed every id directly, as a duplicate delivery would.
        await asyncio.gather(*(second.worker.execute(i) for i in ids))

    async def all_completed() -> bool:
        _, total = await first.service.list(action_ref=ref, status=["completed"], per_page=1)
        return total == 40

    await eventually(all_completed, "40 completed executions", timeout_s=30.0)

    lines = out.read_text().splitlines()
    assert sorted(lines) == sorted(str(i) for i in ids), "each execution ran exactly once"
    async with first.store.read() as conn:
        rows = (
            await conn.execute(
                select(executions.c.worker, executions.c.started_at).where(
                    executions.c.action_ref == ref
                )
            )
        ).all()
    assert len(rows) == 40
    assert all(r.started_at is not None for r in rows)
    workers = Counter(r.worker for r in rows)
    assert set(workers) <= {"worker-a", "worker-b"}
    claims = transitions(first, "running", ref) + transitions(second, "running", ref)
    assert claims == 40, "40 claims in all, none twice"
    if backend.rabbitmq:
        assert set(workers) == {"worker-a", "worker-b"}, f"both workers took some: {workers}"


async def test_lost_message_recovered_by_sweep(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    lost: list[dict[str, Any]] = []
    publish = rt.broker.publish

    async def flaky_publish(routing_key: str, payload: dict[str, Any]) -> None:
        if routing_key == REQUESTED and not lost:
            lost.append(payload)
            raise Unavailable("message broker unavailable: simulated outage")
        await publish(routing_key, payload)

    monkeypatch.setattr(rt.broker, "publish", flaky_publish)

    record = await rt.service.submit("core.echo", {"message": "found again"}, ALICE)
    await rt.service.drain()
    assert [p["execution_id"] for p in lost] == [record.id]
    assert (await rt.service.get(record.id)).status == "requested"

    done = await wait_status(rt, record.id, "completed", timeout_s=5.0)
    assert done.result["stdout"] == "found again\n"
    waited = done.started_at - done.created
    assert waited >= timedelta(seconds=backend.settings.requeue_after_s), (
        "it started only once the sweep found the row"
    )


async def test_the_sweep_rings_again_only_once_the_queue_has_drained(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stale ``requested`` rows whose messages still wait in the queue (a burst the workers
    have not caught up with) are not published again; once the queue is empty they are."""
    rt = await backend.runtime()  # no worker: a stalled consumer holds the queue instead
    release = asyncio.Event()
    held: list[Envelope] = []

    async def stalled(envelope: Envelope) -> None:
        held.append(envelope)
        await release.wait()

    await rt.broker.consume(REQUESTED_QUEUE, [REQUESTED], stalled, prefetch=1)
    ids = [(await rt.service.submit("core.noop", None, ALICE)).id for _ in range(3)]
    await rt.service.drain()
    sweeper = Housekeeper(
        rt.service,
        rt.broker,
        own_worker_id=None,
        sweep_interval_s=60,
        requeue_after_s=0,  # every requested row counts as stale
        heartbeat_timeout_s=60,
    )
    rung: list[int] = []
    publish = rt.broker.publish

    async def counting(routing_key: str, payload: dict[str, Any]) -> None:
        if routing_key == REQUESTED:
            rung.append(payload["execution_id"])
        await publish(routing_key, payload)

    rt.broker.publish = counting  # type: ignore[method-assign]

    def state(taken: int, waiting: int) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return len(held) == taken and await rt.broker.backlog(REQUESTED_QUEUE) == waiting

        return probe

    await eventually(state(1, 2), "one message held, two waiting")
    await sweeper.sweep()
    assert rung == [], "messages still wait in the queue: nothing is published again"
    monkeypatch.setattr(housekeeping, "QUEUED_CAP_S", 0.0)
    await sweeper.sweep()
    assert set(ids) <= set(rung), "past the cap, rows are rung again even with a busy queue"
    duplicates = len(rung)  # (on PostgreSQL, other tests' requested rows are rung too)
    rung.clear()

    release.set()  # the consumer takes the rest without claiming them: all stay requested
    # The three messages, and the duplicates the capped sweep added.
    await settled(rt)
    await eventually(state(3 + duplicates, 0), "every message taken, the queue empty")
    await sweeper.sweep()
    # (On PostgreSQL the module's database may hold other tests' requested rows too.)
    assert set(ids) <= set(rung), "the queue is empty: the stale rows are rung again"


async def test_cancel_before_handoff(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = await backend.runtime()  # no worker takes work yet
    record = await rt.service.submit("core.echo", {"message": "never"}, ALICE)

    cancelled = await rt.service.cancel(record.id, by="bob")
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert cancelled.started_at is None
    assert cancelled.result["succeeded"] is False
    assert "bob" in cancelled.result["error"]
    with pytest.raises(Conflict, match="already cancelled"):
        await rt.service.cancel(record.id, by="bob")

    await rt.start_worker("worker-1")
    handled = spy_on_execute(rt, monkeypatch)
    # The doorbell rings late, as a delayed or redelivered message would.
    await rt.broker.publish(REQUESTED, {"execution_id": record.id, "action_ref": "core.echo"})
    other = await rt.service.submit("core.echo", {"message": "later"}, ALICE)
    await wait_status(rt, other.id, "completed")
    await settled(rt)
    await eventually(lambda: _at_least(handled, record.id, 1), "the late doorbell")

    after = await rt.service.get(record.id)
    assert after.status == "cancelled"
    assert after.started_at is None
    assert after.finished_at == cancelled.finished_at
    assert (await raw_execution(rt, record.id))["worker"] is None


async def test_chat_news_and_audit_commit_with_each_change(backend: Backend) -> None:
    """Cards (created, started, completed), callbacks and the audit entry are written with the
    change they report (on PostgreSQL in the same statement), to the targets the route names."""
    rt = await backend.runtime()  # no worker: this test plays the worker
    entry = AuditEntry(
        actor="alice", source="slack", verb="run", outcome="accepted", target="core.echo"
    )
    slack = await rt.service.submit(
        "core.echo",
        {"message": "x"},
        ALICE,
        chat={"channel": "C1", "team": "T1"},
        callback_url="http://127.0.0.1:9/x",
        audit_entry=entry,
    )
    terminal = await rt.service.submit(
        "core.echo", {"message": "y"}, ALICE, chat={"sink": "terminal", "session": "s1"}
    )
    quiet = [
        await rt.service.submit("core.noop", None, ALICE, chat=chat, callback_url=url)
        for chat, url in (({}, None), (None, ""))
    ]
    sessionless = await rt.service.submit("core.noop", None, ALICE, chat={"sink": "terminal"})
    ids = [slack.id, terminal.id, *(q.id for q in quiet), sessionless.id]
    for execution_id in ids:
        assert await rt.service.claim(execution_id, "w") is not None
        done = await rt.service.finish(execution_id, ExecutionStatus.COMPLETED, {"ok": True})
        assert done is not None
    assert await rt.service.finish(slack.id, ExecutionStatus.FAILED, {}) is None

    rows = await delivery_rows(rt, ids)
    seen = [(r["execution_id"], r["target"], r["event"], r["state"]) for r in rows]
    a, b = slack.id, terminal.id
    assert seen == [
        (a, "slack", "created", "pending"),
        (b, "terminal:s1", "created", "pending"),
        (sessionless.id, "terminal:None", "created", "pending"),
        (a, "slack", "started", "pending"),
        (a, "slack", "completed", "pending"),
        (a, "callback", "completed", "pending"),
        (b, "terminal:s1", "started", "pending"),
        (b, "terminal:s1", "completed", "pending"),
        (sessionless.id, "terminal:None", "started", "pending"),
        (sessionless.id, "terminal:None", "completed", "pending"),
    ]
    async with rt.store.read() as conn:
        entries = (await conn.execute(select(audit).where(audit.c.execution_id.in_(ids)))).all()
    assert [(e.execution_id, e.actor, e.verb, e.target, e.parameters) for e in entries] == [
        (a, "alice", "run", "core.echo", {"message": "x"})
    ]


async def test_a_claim_from_the_database_writes_the_started_news(backend: Backend) -> None:
    """While the broker is down workers claim ``requested`` rows from the database: each is
    ``running`` for that worker, once, with its "started" card to its chat's target."""
    rt = await backend.runtime()  # no worker: this test plays the worker
    chats = [{"channel": "C1"}, {"sink": "terminal", "session": "s1"}, None]
    ids = [
        (await rt.service.submit("core.noop", None, ALICE, chat=c, callback_url="http://x/")).id
        for c in chats
    ]
    claimed = await rt.service.claim_pending("w", 10)
    assert sorted(c.id for c in claimed) == ids
    assert await rt.service.claim_pending("w", 10) == []
    for execution_id in ids:
        raw = await raw_execution(rt, execution_id)
        assert (raw["status"], raw["worker"]) == ("running", "w")
    seen = [(r["execution_id"], r["target"], r["event"]) for r in await delivery_rows(rt, ids)]
    a, b, _ = ids
    assert sorted(seen) == sorted(
        [
            (a, "slack", "created"),
            (b, "terminal:s1", "created"),
            (a, "slack", "started"),
            (b, "terminal:s1", "started"),
        ]
    )


@pytest.mark.parametrize(
    ("action_ref", "parameters"),
    [("core.sleep", {"seconds": 30}), ("examples.wait", {"seconds": 30})],
    ids=["builtin", "shell"],
)
async def test_cancel_while_running(
    backend: Backend, action_ref: str, parameters: dict[str, Any]
) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    record = await rt.service.submit(action_ref, parameters, ALICE)
    await wait_status(rt, record.id, "running")

    canceling = await rt.service.cancel(record.id, by="bob")
    assert canceling.status == "canceling"
    try:  # a second cancel is harmless; it may find the run already ended
        again = (await rt.service.cancel(record.id, by="bob")).status
    except Conflict as exc:
        again = exc.message
    assert again in {"canceling", f"execution {record.id} is already cancelled"}

    done = await wait_status(rt, record.id, "cancelled", timeout_s=5.0)
    assert done.finished_at is not None
    assert done.result["succeeded"] is False
    assert done.result["error"] == "cancelled"
    assert done.finished_at - done.started_at < timedelta(seconds=5)


async def test_timeout(backend: Backend) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    name = unique("slow")
    await rt.catalog.create_action(
        ActionSpec(
            ref=f"it.{name}",
            pack_ref="it",
            name=name,
            runner_type="shell",
            script="sleep 30\n",
            timeout_s=0.5,
        )
    )
    record = await rt.service.submit(f"it.{name}", None, ALICE)

    done = await wait_status(rt, record.id, "timeout", timeout_s=5.0)
    assert done.result["succeeded"] is False
    assert "timed out after 0.5 s" in done.result["error"]
    assert done.finished_at - done.started_at < timedelta(seconds=5)


async def test_secret_parameters_stay_secret(backend: Backend) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    name = unique("login")
    await rt.catalog.create_action(
        ActionSpec(
            ref=f"it.{name}",
            pack_ref="it",
            name=name,
            runner_type="shell",
            script=(
                '. "$ATTUNE_PARAMETERS_FILE"\n'
                'printf "user=%s\\n" "$user"\n'
                "printf 'sha256=%s\\n' \"$(printf '%s' \"$token\" | sha256sum | cut -d' ' -f1)\"\n"
            ),
            param_schema=normalize_schema(
                {
                    "user": {"type": "string", "required": True},
                    "token": {"type": "string", "required": True, "secret": True},
                }
            ),
            parameter_delivery="file",
            parameter_format="dotenv",
        )
    )
    secret = f"s3cr3t-{uuid.uuid4().hex}"

    record = await rt.service.submit(f"it.{name}", {"user": "alice", "token": secret}, ALICE)
    assert record.config == {"user": "alice", "token": REDACTED}
    done = await wait_status(rt, record.id, "completed")

    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert done.result["stdout"].splitlines() == ["user=alice", f"sha256={digest}"], (
        "the action received the real value"
    )
    raw = await raw_execution(rt, record.id)
    assert raw["config"] == {"user": "alice", "token": REDACTED}
    assert raw["secrets"], "the value is kept, encrypted"
    assert secret not in raw["secrets"]
    assert secret not in repr(dict(raw)), "the plaintext is nowhere in the stored row"


async def test_conditional_updates(backend: Backend) -> None:
    rt = await backend.runtime()  # no worker: this test plays the worker
    service = rt.service

    first = await service.submit("core.noop", None, ALICE)
    claimed = await service.claim(first.id, "worker-1")
    assert claimed is not None
    assert claimed.id == first.id
    assert claimed.action_ref == "core.noop"
    assert await service.claim(first.id, "worker-2") is None, "a second claim loses"
    assert (await raw_execution(rt, first.id))["worker"] == "worker-1"

    finished = await service.finish(first.id, ExecutionStatus.COMPLETED, {"succeeded": True})
    assert finished is not None
    assert finished.status == "completed"
    late = await service.finish(first.id, ExecutionStatus.FAILED, {"succeeded": False})
    assert late is None, "a second finish loses"
    after = await service.get(first.id)
    assert after.status == "completed"
    assert after.result == {"succeeded": True}
    assert after.finished_at == finished.finished_at

    second = await service.submit("core.noop", None, ALICE)
    await service.cancel(second.id, by="bob")
    assert await service.finish(second.id, ExecutionStatus.COMPLETED, {"ok": 1}) is None
    assert await service.claim(second.id, "worker-1") is None
    after = await service.get(second.id)
    assert after.status == "cancelled"
    assert after.started_at is None


async def test_list_filters_and_pagination(backend: Backend) -> None:
    rt = await backend.runtime()  # no worker: everything stays requested unless cancelled
    service = rt.service
    a_ref, b_ref = await create_noop_action(rt), await create_noop_action(rt)
    a_ids = [(await service.submit(a_ref, None, ALICE)).id for _ in range(7)]
    b_ids = [(await service.submit(b_ref, None, ALICE)).id for _ in range(3)]
    for i in (a_ids[0], a_ids[3]):
        await service.cancel(i, by="bob")
    newest_first = sorted(a_ids, reverse=True)

    rows, total = await service.list(action_ref=a_ref)
    assert total == 7
    assert [r.id for r in rows] == newest_first
    assert all(r.action_ref == a_ref for r in rows)
    created = [r.created for r in rows]
    assert created == sorted(created, reverse=True), "newest first"

    rows, total = await service.list(action_ref=a_ref, status=["cancelled"])
    assert (total, [r.id for r in rows]) == (2, [a_ids[3], a_ids[0]])
    rows, total = await service.list(action_ref=a_ref, status=["requested"])
    assert total == 5
    assert {r.status for r in rows} == {"requested"}
    _, total = await service.list(action_ref=a_ref, status=["requested", "cancelled"])
    assert total == 7
    assert await service.list(action_ref=b_ref, status=["cancelled"]) == ([], 0)
    rows, _ = await service.list(status=["cancelled"], per_page=100)
    assert {a_ids[0], a_ids[3]} <= {r.id for r in rows}
    assert {r.status for r in rows} == {"cancelled"}

    pages = [await service.list(action_ref=a_ref, page=p, per_page=3) for p in (1, 2, 3, 4)]
    assert [len(rows) for rows, _ in pages] == [3, 3, 1, 0]
    assert {total for _, total in pages} == {7}, "the total does not depend on the page"
    assert [r.id for rows, _ in pages for r in rows] == newest_first

    with pytest.raises(InvalidRequest, match="unknown status 'done'"):
        await service.list(status=["done"])
    for page, per_page in ((0, 10), (1, 0), (1, 101)):
        with pytest.raises(InvalidRequest, match="per_page"):
            await service.list(page=page, per_page=per_page)

    for i in [*a_ids[1:3], *a_ids[4:], *b_ids]:  # leave nothing requested for later tests
        await service.cancel(i, by="cleanup")


async def test_deliveries_outbox(backend: Backend) -> None:
    callback = "http://127.0.0.1:9/x"
    rt = await backend.runtime()
    early = await rt.service.submit("core.echo", {"message": "x"}, ALICE, callback_url=callback)
    await rt.service.cancel(early.id, by="bob")

    await rt.start_worker("worker-1")
    slow = await rt.service.submit("core.sleep", {"seconds": 30}, ALICE, callback_url=callback)
    quick = await rt.service.submit("core.echo", {"message": "y"}, ALICE, callback_url=callback)
    silent = await rt.service.submit("core.echo", {"message": "z"}, ALICE)
    await wait_status(rt, slow.id, "running")
    assert await delivery_rows(rt, [slow.id]) == [], "nothing to deliver while it runs"
    await rt.service.cancel(slow.id, by="bob")
    assert await delivery_rows(rt, [slow.id]) == [], "nor while it is being cancelled"

    await wait_status(rt, slow.id, "cancelled")
    for record in (quick, silent):
        await wait_status(rt, record.id, "completed")
    ids = [early.id, slow.id, quick.id, silent.id]
    rows = await delivery_rows(rt, ids)
    assert sorted(r["execution_id"] for r in rows) == sorted(ids[:3]), (
        "exactly one delivery per execution with a callback_url, none without"
    )
    for row in rows:
        assert (row["target"], row["event"], row["state"]) == ("callback", "completed", "pending")
        assert row["attempts"] == 0
        assert row["delivered_at"] is None
        execution = await raw_execution(rt, row["execution_id"])
        assert execution["status"] in TERMINAL_VALUES
        # Written in the transaction that wrote the final status, with the same clock reading.
        assert row["created"] == execution["updated"]
        assert execution["finished_at"] <= row["created"]


@pytest.mark.parametrize(
    ("action_ref", "parameters"),
    [("core.sleep", {"seconds": 30}), ("examples.wait", {"seconds": 30})],
    ids=["builtin", "shell"],
)
async def test_shutdown_during_a_run_ends_it_abandoned(
    backend: Backend, action_ref: str, parameters: dict[str, Any]
) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    record = await rt.service.submit(action_ref, parameters, ALICE)
    await wait_status(rt, record.id, "running")

    await asyncio.wait_for(rt.close(grace_s=0.2), WAIT_S)

    observer = await backend.runtime()  # another process looking at the database afterwards
    after = await observer.service.get(record.id)
    assert after.status == "abandoned", "a run cut short by shutdown is not left running"
    assert after.finished_at is not None
    assert after.result["succeeded"] is False
