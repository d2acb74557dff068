"""The composition root: builds the engine's parts from settings and wires them together."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from config import Settings
from engine.acks_first import AcksFirst
from engine.aliases.service import aliases_of
from engine.audit import AuditLog
from engine.auth import AuthService
from engine.automation.service import Automation
from engine.background import cancel_and_wait
from engine.broker import Broker
from engine.broker.memory import MemoryBroker
from engine.catalog import Catalog
from engine.catalog_records import Pack
from engine.crypto import SecretBox, load_or_create_secret_key
from engine.errors import EngineError, PackError, Unavailable
from engine.execution_tokens import ExecutionTokens, api_url
from engine.gate import Gate
from engine.housekeeping import Housekeeper
from engine.inquiries import InquiryService
from engine.keys import KeyStore
from engine.live_output import LiveOutput
from engine.liveness import AliveFile, alive_dir
from engine.metrics import Metrics
from engine.notifications import Notifier
from engine.outbound import OutboundPolicy
from engine.pack_install import store_upload
from engine.packs import PackSpec, discover_packs, load_pack
from engine.policy import Policy
from engine.retries import RetryPolicy
from engine.runners import Runner
from engine.runners.builtin import BuiltinRunner
from engine.service import ExecutionService
from engine.storage import Store, build_store
from engine.storage.inquiries import inquiry_repository
from engine.storage.output import output_repository
from engine.worker import Worker, default_worker_id
from engine.workflows.advancer import WorkflowAdvancer
from engine.workflows.runs import WorkflowRuns

log = logging.getLogger(f"attune.{__name__}")


def build_broker(settings: Settings) -> Broker:
    if settings.amqp_url:
        from engine.broker.amqp import AmqpBroker

        return AmqpBroker(settings.amqp_url, exchange=settings.amqp_exchange)
    return MemoryBroker()


def build_runners(
    settings: Settings, environment: ExecutionTokens | None = None
) -> dict[str, Runner]:
    from engine.runners.process import ProcessRunner

    process = ProcessRunner(
        output_cap_bytes=settings.output_cap_bytes,
        kill_grace_s=settings.kill_grace_s,
        work_dir=settings.data_dir.resolve() / "work",
        environment=environment.environment if environment is not None else None,
    )
    policy = OutboundPolicy.from_ranges(settings.outbound_allow)
    return {"builtin": BuiltinRunner(policy), "shell": process, "python": process}


@dataclass
class Runtime:
    settings: Settings
    store: Store
    broker: Broker
    catalog: Catalog
    service: ExecutionService
    auth: AuthService
    metrics: Metrics
    #: Permission checks, confirmations, idempotency and audit around the service.
    gate: Gate
    audit: AuditLog
    automation: Automation
    #: The key-value store (``/api/v1/keys``).
    keys: KeyStore
    #: Actions' API URL and execution-scoped tokens.
    execution_tokens: ExecutionTokens
    #: Running actions' output: read (API, chat sinks) and written by this process's worker.
    live_output: LiveOutput
    #: Questions runs ask a human (``core.ask``): parked by the worker, answered over the API.
    inquiries: InquiryService
    #: The key that encrypts secrets; callbacks are signed with a key derived from it.
    secret_key: str = ""
    worker: Worker | None = None
    housekeeper: Housekeeper | None = None
    #: Running workflows (engine/workflows/runs.py) and the loop that moves them on (in every
    #: process with a worker or the housekeeping).
    workflow_runs: WorkflowRuns | None = None
    workflow_advancer: WorkflowAdvancer | None = None
    _automation_task: asyncio.Task[None] | None = None
    #: The first admin's password when this start generated it (to be printed once).
    generated_admin_password: str | None = None
    pack_errors: list[str] = field(default_factory=list)
    #: Requests a person waits on (Slack acks); background work steps aside for them.
    acks_first: AcksFirst = field(default_factory=AcksFirst)
    #: Connections beside the database and the broker that ``/health/ready`` reports (Slack's
    #: Socket Mode): name -> whether it is up now. They do not make the server unready.
    links: dict[str, Callable[[], bool]] = field(default_factory=dict)

    async def sync_packs(self) -> list[str]:
        """Register every pack found on disk, actions first, then every pack's triggers and
        rules (so a rule may use another pack's action); a broken pack is reported and
        skipped."""
        loaded: list[PackSpec] = []
        async with self.store.exclusive():
            for path in discover_packs([*self.settings.pack_dirs, self.pack_store]):
                try:
                    spec = load_pack(path)
                    await self.catalog.register(spec, force=True)
                    await aliases_of(self).sync_pack(spec)
                    self.pack_errors.extend(spec.alias_problems)
                    for problem in spec.alias_problems:
                        log.error("pack %s: alias not loaded: %s", spec.ref, problem)
                    loaded.append(spec)
                except EngineError as exc:
                    self.pack_errors.append(exc.message)
                    log.error("pack not loaded: %s", exc.message)
            for spec in loaded:
                for problem in [
                    *await self.automation.register_pack(spec),
                    *await self.register_workflows(spec),
                ]:
                    self.pack_errors.append(problem)
                    log.error("pack %s: %s", spec.ref, problem)
            await self.automation.seal_rule_secrets()  # a parameter may have become secret
        return [spec.ref for spec in loaded]

    @property
    def pack_store(self) -> Path:
        """Where uploaded packs are kept (found again at every start)."""
        return self.settings.data_dir.resolve() / "packs"

    async def register_pack(self, path: Path, *, force: bool = False) -> Pack:
        """Register a pack folder: its actions and aliases, then its triggers and rules. A
        problem in an alias, trigger or rule file is refused with the file at fault (the
        actions and the good aliases stay registered)."""
        spec = load_pack(path)
        record = await self.catalog.register(spec, force=force)
        await aliases_of(self).sync_pack(spec)
        problems = [*spec.alias_problems, *await self.automation.register_pack(spec)]
        problems += await self.register_workflows(spec)
        # Its actions may have new secrets (rules written now were sealed as they were written).
        await self.automation.seal_rule_secrets(pack_ref=spec.ref)
        if problems:
            raise PackError("; ".join(problems))
        return record

    async def register_workflows(self, spec: PackSpec) -> list[str]:
        """Store a pack's workflows (after every pack's actions: a task may run another
        pack's action); the problems of the workflow files left out, each naming its file."""
        from engine.workflows.service import Workflows

        stored = await Workflows(self.store, self.catalog).register_pack(spec.ref, spec.workflows)
        return [*spec.problems, *stored]

    async def install_pack_archive(self, archive: bytes, *, force: bool) -> Pack:
        folder = await asyncio.to_thread(store_upload, archive, self.pack_store, force=force)
        try:
            return await self.register_pack(folder, force=True)
        except EngineError:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise

    async def remove_pack(self, ref: str) -> None:
        """Unregister a pack; an uploaded pack's folder goes with it (a folder on the packs
        path is the operator's and stays)."""
        folder = await self.catalog.delete_pack(ref)
        if folder and Path(folder).resolve().parent == self.pack_store:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def start_worker(
        self, worker_id: str | None = None, *, housekeeping: bool = True
    ) -> Worker:
        """Start a worker; ``housekeeping=False`` for one that only runs this process's own
        submissions (no sweep, no reaping, no crash recovery, no database polling)."""
        s = self.settings
        worker_id = worker_id or default_worker_id()
        runs = await self.start_workflows()
        self.worker = Worker(
            self.service,
            self.catalog,
            self.broker,
            build_runners(s, self.execution_tokens),
            worker_id=worker_id,
            concurrency=s.worker_concurrency,
            sweep_interval_s=s.sweep_interval_s,
            requeue_after_s=s.requeue_after_s,
            heartbeat_interval_s=s.heartbeat_interval_s,
            heartbeat_timeout_s=s.heartbeat_timeout_s,
            db_poll_interval_s=s.db_poll_interval_s,
            requeue_on_start=not s.amqp_url,
            housekeeping=housekeeping,
            acks_first=self.acks_first,
            live_output=self.live_output,
            inquiries=self.inquiries,
            output_flush_interval_s=s.output_flush_interval_s,
            workflows=runs,
            # A long-lived worker's sign of life, for `attune health --worker`.
            alive_file=AliveFile(alive_dir(s.data_dir), worker_id) if housekeeping else None,
        )
        await self.worker.start()
        return self.worker

    def callback_secret(self) -> bytes:
        """Key of the ``X-Attune-Signature`` HMAC on callback deliveries."""
        from engine.callbacks import callback_secret

        if self.settings.callback_secret is not None:
            return self.settings.callback_secret.get_secret_value().encode()
        return callback_secret(self.secret_key)

    async def start_workflows(self) -> WorkflowRuns:
        """Running workflows, and the loop that advances them (started once per process)."""
        if self.workflow_runs is None:
            self.workflow_runs = WorkflowRuns(self.store, self.service, self.catalog)
            self.workflow_advancer = await WorkflowAdvancer(self.workflow_runs, self.broker).start()
        return self.workflow_runs

    def start_housekeeper(self) -> Housekeeper:
        """Housekeeping without a worker (``attune serve --no-worker``): a cluster whose last
        worker died still ends that worker's runs ``abandoned``."""
        s = self.settings
        self.housekeeper = Housekeeper(
            self.service,
            self.broker,
            own_worker_id=None,
            sweep_interval_s=s.sweep_interval_s,
            requeue_after_s=s.requeue_after_s,
            heartbeat_timeout_s=s.heartbeat_timeout_s,
        )
        self.housekeeper.start()
        return self.housekeeper

    def start_automation(self) -> None:
        """Fire due timers every ``timer_poll_s`` (each tick once across processes) and
        finish events whose rule processing was interrupted."""
        self._automation_task = asyncio.create_task(self._automation_loop(), name="timers")

    async def _automation_loop(self) -> None:
        s = self.settings
        last_sweep = 0.0
        while True:
            await asyncio.sleep(s.timer_poll_s)
            try:
                await self.automation.fire_due_timers()
                if time.monotonic() - last_sweep >= s.sweep_interval_s:
                    last_sweep = time.monotonic()
                    await self.automation.finish_unprocessed(s.requeue_after_s)
                    await self.keys.purge_expired()
            except Exception as exc:
                log.warning("timers or event sweep failed: %s", exc)

    async def close(self, grace_s: float | None = None) -> None:
        await cancel_and_wait(self._automation_task)
        await self.automation.drain()
        await self.automation.templates.close()
        if self.housekeeper is not None:
            await self.housekeeper.stop()
        if self.workflow_advancer is not None:
            await self.workflow_advancer.stop()
        if self.worker is not None:
            await self.worker.stop(self.settings.shutdown_grace_s if grace_s is None else grace_s)
        await self.service.drain()
        await self.broker.close()
        await self.store.close()


async def build_runtime(
    settings: Settings, *, migrate: bool = True, sync_packs: bool = True, ensure_admin: bool = True
) -> Runtime:
    """Connect storage and broker, migrate, load packs and make sure an admin exists."""
    store = build_store(settings.database_url, pool_size=settings.database_pool_size)
    try:
        if migrate:
            await store.upgrade()
        key = (
            settings.secret_key.get_secret_value()
            if settings.secret_key
            else load_or_create_secret_key(settings.data_dir)
        )
        broker = build_broker(settings)
        try:
            await broker.start()
        except Unavailable as exc:
            from engine.broker.amqp import AmqpBroker

            if not isinstance(broker, AmqpBroker):
                raise
            # Come up anyway: executions are recorded, workers claim from the database, and
            # the broker is connected (and its consumers started) as soon as it answers.
            log.warning("%s; starting without it and connecting in the background", exc.message)
            broker.start_in_background()
    except BaseException:
        await store.close()
        raise
    metrics = Metrics()
    catalog = Catalog(store, cache_s=settings.action_cache_s)
    box = SecretBox(key)
    service = ExecutionService(
        store,
        broker,
        catalog,
        box,
        metrics,
        default_timeout_s=settings.default_timeout_s,
        notifier=Notifier(),
        retry_policy=RetryPolicy(
            base_s=settings.retry_backoff_base_s, cap_s=settings.retry_backoff_max_s
        ),
    )
    auth = AuthService(
        store,
        token_ttl_s=settings.token_ttl_s,
        refresh_token_ttl_s=settings.refresh_token_ttl_s,
        login_max_failures=settings.login_max_failures,
        login_window_s=settings.login_window_s,
        cache_s=settings.token_cache_s,
        secret_key=key,
    )
    audit = AuditLog(store)
    gate = Gate(
        store,
        service,
        catalog,
        Policy(settings.permissions),
        audit,
        box,
        confirm_ttl_s=settings.confirm_ttl_s,
    )
    runtime = Runtime(
        settings=settings,
        store=store,
        broker=broker,
        catalog=catalog,
        service=service,
        auth=auth,
        metrics=metrics,
        gate=gate,
        audit=audit,
        automation=Automation(
            store,
            service,
            catalog,
            box,
            audit,
            webhook_rate_per_s=settings.webhook_rate_per_s,
            webhook_burst=max(1, int(2 * settings.webhook_rate_per_s)),
            webhook_tolerance_s=settings.webhook_tolerance_s,
            template_workers=settings.template_workers,
            template_timeout_s=settings.template_timeout_s,
        ),
        keys=KeyStore(store, box, audit),
        execution_tokens=ExecutionTokens(
            store,
            key,
            api_url=api_url(settings.http_host, settings.http_port),
            slack_roles=settings.slack_roles,
            slack_default_role=settings.slack_default_role,
        ),
        live_output=LiveOutput(output_repository(store), service),
        inquiries=InquiryService(inquiry_repository(store), service, audit),
        secret_key=key,
    )
    if sync_packs:
        await runtime.sync_packs()
    if ensure_admin:
        password = settings.admin_password.get_secret_value() if settings.admin_password else None
        runtime.generated_admin_password = await auth.ensure_admin(settings.admin_login, password)
    return runtime
