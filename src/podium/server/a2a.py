"""``podium a2a serve``: a workflow published as an A2A agent (a2a-sdk 1.x, protocol 1.0).

Any A2A client (another Podium among them, through an ``a2a:`` agent) sends a
message; the workflow runs; the answer is the run's output. The SDK does the
protocol (card, JSON-RPC, streaming, task bookkeeping); this module maps it
onto runs, which are what is durable:

- **A task is a run.** A new task's id is a new run id (the SDK's id generator
  is ours), so ``podium status TASK`` shows the run behind a task. The input is
  the message's first data part, else its text: a JSON object written as text,
  else ``{FIELD: text}`` for the one string field the input schema has (or
  ``text``). A message that the input schema refuses makes the task
  ``rejected``, with the problems in its status message.
- **The task follows the run**: ``working`` while it runs (or waits for a
  timer), ``input-required`` while it waits for an approval or a signal (the
  status message says what it waits for and how to answer), ``completed`` with
  the output as an artifact, ``failed`` with the error, ``canceled``.
- **A blocking send** is answered when the run ends or waits for someone, or
  after ``answer_within`` (``--answer-within``, 30 s) with the task still
  ``working``: the client then polls ``tasks/get`` (or streams). A message to a
  task at work is kept in its history and changes nothing.
- **Answering an input-required task** (a message with the task's id): a data
  part ``{"approved": true|false, "reason": ..., "data": {...}}`` or a text
  ``approve`` / ``reject REASON`` for an approval, ``{"signal": NAME, "data":
  ...}`` (or, when only one signal is awaited, any data) for a signal, delivered
  once as ``podium approve``/``podium signal`` deliver them; the run goes on in
  this process.
- **Cancelling the task cancels the run**, wherever it is: while it runs here,
  and also when the SDK cancels a task parked in ``input-required`` (it then
  only writes ``canceled`` to the task store, which this store turns into the
  run's cancellation).
- **Tasks outlive the server.** The SDK keeps tasks in memory; a task it no
  longer knows (after a restart) is read back from the run store, so a client
  polling ``tasks/get``, or answering an approval, after a restart finds it. The
  runs themselves are resumed as ``podium serve`` resumes them. Only runs of the
  served workflow that no other run started are tasks of this agent.

The server is ``podium serve``'s (``PodiumServer``: takeovers of a dead
process's runs, timers, schedules, ``/metrics``) with the A2A routes beside
``/healthz``; the card is public (``/.well-known/agent-card.json``), every other
route needs the bearer token when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from a2a.helpers import (
    get_data_parts,
    get_message_text,
    new_data_part,
    new_task_from_user_message,
    new_text_part,
)
from a2a.server.agent_execution import (
    AgentExecutor,
    RequestContext,
    SimpleRequestContextBuilder,
)
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.id_generator import IDGenerator, IDGeneratorContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    Artifact,
    HTTPAuthSecurityScheme,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    Task,
    TaskState,
    TaskStatus,
)

from podium.agents.a2a_jsonrpc import json_numbers
from podium.errors import DefinitionError, PodiumError, RunHeld, RunNotFound
from podium.state import TERMINAL_RUN_STATUSES, RunStatus, StepStatus

if TYPE_CHECKING:
    from podium.agents.registry import AgentRegistry
    from podium.definition.models import Workflow
    from podium.engine import Engine
    from podium.httpd import HttpLimits
    from podium.server.app import PodiumServer
    from podium.state import RunRecord

__all__ = ["INPUT_SCHEMA_EXTENSION", "A2AConfig", "create_app", "serve"]

log = logging.getLogger("podium.a2a")

# Where the card carries the workflow's input schema: A2A 1.0 has no field for it,
# and an extension is what the protocol keeps for such additions.
INPUT_SCHEMA_EXTENSION = "https://podium.dev/a2a/input-schema/v1"
_CARD_PATH = "/.well-known/agent-card.json"
_POLL_S = 0.5  # a run executed elsewhere (a worker, a takeover) is read this often
_MAX_TEXT = 1 << 20  # a text message is parsed as JSON up to this size
# What the tasks held in memory (with their message history) may take; older ones are
# made again from their runs when asked, without their history.
TASKS_HELD = 10_000
_HELD_BYTES = 64 << 20
_HISTORY_HELD = 100  # messages of one task's history; the oldest go first
_APPROVE = frozenset({"approve", "approved", "yes", "y", "ok"})
_REJECT = frozenset({"reject", "rejected", "no", "n"})


@dataclass(frozen=True)
class A2AConfig:
    """What ``podium a2a serve`` was given, checked before anything listens."""

    workflow: Workflow
    source: str | None = None  # the workflow file, for messages
    registry: AgentRegistry | None = None
    agents_source: Mapping[str, Any] = field(default_factory=dict)
    db: str | None = None
    alerts_file: Path | None = None
    token: str | None = None
    skill: str | None = None  # the card's one skill (default: the workflow's name)
    public_url: str | None = None  # the URL the card announces (default: the bound one)
    # A blocking send waits this long for the run to end or wait, then answers "working".
    answer_within_s: float = 30.0
    scan_interval_s: float = 5.0
    tasks_held: int = TASKS_HELD  # tasks kept in memory with their history (see above)


def agent_card(cfg: A2AConfig, url: str) -> AgentCard:
    """The card: the workflow's name, description, version and input schema."""

    wf = cfg.workflow
    about = wf.description or f"The Podium workflow '{wf.name}'."
    extensions = []
    if wf.input_schema:
        extensions.append(AgentExtension(
            uri=INPUT_SCHEMA_EXTENSION, required=False,
            params={"input_schema": wf.input_schema},
            description="The JSON Schema of the workflow's input (the message's data part)"))
    card = AgentCard(
        name=wf.name, description=about, version=str(wf.version),
        supported_interfaces=[AgentInterface(url=url.rstrip("/") + "/", protocol_binding="JSONRPC",
                                             protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False,
                                       extensions=extensions),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json", "text/plain"],
        skills=[AgentSkill(id=cfg.skill or wf.name, name=wf.name, description=about,
                           tags=["podium", "workflow"])],
    )
    if cfg.token is not None:
        card.security_schemes["bearer"].CopyFrom(SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="bearer")))
        card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    return card


def input_of(message: Message, workflow: Workflow) -> Any:
    """The run's input from a message: its first data part, else its text (see above)."""


    data = get_data_parts(message.parts)
    if data:
        return json_numbers(data[0])
    text = get_message_text(message)
    if text.lstrip().startswith("{") and len(text) <= _MAX_TEXT:
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, dict):
                return value
    return {_text_field(workflow): text}


def _text_field(workflow: Workflow) -> str:
    """The input field a plain text message fills: the schema's one string field, if so."""
    props = (workflow.input_schema or {}).get("properties")
    if isinstance(props, Mapping):
        strings = [k for k, p in props.items()
                   if isinstance(p, Mapping) and p.get("type") == "string"]
        if len(strings) == 1:
            return str(strings[0])
    return "text"


@dataclass(frozen=True)
class _Ask:
    """One thing a waiting run (or its waiting child) waits for from outside."""

    run_id: str
    step: str
    kind: str  # approval | signal
    signal: str

    def describe(self) -> str:
        if self.kind == "approval":
            return (f"an approval of step '{self.step}' (answer {{\"approved\": true}} or"
                    f" {{\"approved\": false, \"reason\": \"...\"}}, or the text approve /"
                    " reject REASON)")
        return (f"signal '{self.signal}' at step '{self.step}' (answer {{\"signal\":"
                f" \"{self.signal}\", \"data\": ...}})")


class WorkflowExecutor(AgentExecutor):
    """The SDK's ``AgentExecutor`` for one workflow: a task is a run of it."""

    def __init__(self, server: PodiumServer, cfg: A2AConfig, tasks: RunTaskStore) -> None:
        self.server = server
        self.cfg = cfg
        self.workflow = cfg.workflow
        self.tasks = tasks
        self._followers: dict[str, asyncio.Task[None]] = {}  # a task each, until it rests

    @property
    def engine(self) -> Engine:
        engine: Engine = self.server.engine
        return engine

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        current = context.current_task
        task_id = str(context.task_id)
        # A follow-up message may come without the context id: the task's own is the one.
        context_id = current.context_id if current is not None else str(context.context_id)
        updater = TaskUpdater(event_queue, task_id, context_id)
        if message is None:
            return
        if current is None:
            self.tasks.started_here.add(task_id)  # the SDK keeps this task; never remade
            await event_queue.enqueue_event(new_task_from_user_message(message))
            try:
                await self.engine.start(self.workflow, input_of(message, self.workflow),
                                        run_id=task_id, agents_source=self.cfg.agents_source,
                                        source=self.cfg.source)
            except (DefinitionError, PodiumError) as exc:
                await updater.reject(self._say(updater, _problem_text(exc)))
                return
        elif current.status.state in (TaskState.TASK_STATE_INPUT_REQUIRED,
                                      TaskState.TASK_STATE_AUTH_REQUIRED):
            said = await self._answer(task_id, message, context)
            if said is not None:  # nothing delivered: it still waits, and says why
                await updater.requires_input(self._say(updater, said))
                return
        # Also for a message to a task at work: it means nothing to the run, but the SDK
        # records a message in the task's history only with the event that follows it.
        await updater.start_work()
        follower = self._followers.get(task_id)
        if follower is None:
            follower = asyncio.get_running_loop().create_task(
                self._follow(task_id, updater), name=f"podium:a2a:{task_id}")
            self._followers[task_id] = follower
            follower.add_done_callback(lambda _t: self._done_following(task_id))
        # A blocking send is answered when the run ends or waits for someone, or, for a
        # long run, after ``answer_within`` with the task working (then: tasks/get). The
        # follower goes on reporting either way.
        await asyncio.wait({follower}, timeout=self.cfg.answer_within_s)

    def _done_following(self, task_id: str) -> None:
        self._followers.pop(task_id, None)
        self.tasks.started_here.discard(task_id)  # the SDK holds the task by now

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id = str(context.task_id)
        await cancel_run(self.engine, task_id)
        follower = self._followers.pop(task_id, None)
        if follower is not None:
            follower.cancel()
        task = context.current_task
        context_id = task.context_id if task is not None else str(context.context_id)
        with contextlib.suppress(RuntimeError):  # the run's end was reported first
            await TaskUpdater(event_queue, task_id, context_id).cancel()

    async def aclose(self) -> None:
        """Stop reporting (the server stops; the runs are handed back, not ended)."""
        followers = list(self._followers.values())
        for f in followers:
            f.cancel()
        await asyncio.gather(*followers, return_exceptions=True)

    @staticmethod
    def _say(updater: TaskUpdater, text: str) -> Message:
        return updater.new_agent_message([new_text_part(text)])

    async def _follow(self, run_id: str, updater: Any) -> None:
        """Report the run's status until it ends or waits for someone."""
        while True:
            handle = self.engine.handle_of(run_id)
            if handle is not None:
                # Shielded: the SDK cancels this coroutine when the task is cancelled
                # (then ``cancel`` cancels the run) or the server stops (the run is
                # handed back, not ended).
                with contextlib.suppress(Exception):
                    await asyncio.shield(handle.result())
            try:
                run = await self.engine.store.get_run(run_id)
            except RunNotFound:
                await updater.failed(self._say(updater, f"run {run_id} is gone"))
                return
            if run.status in TERMINAL_RUN_STATUSES:
                await _report_end(run, updater)
                return
            if run.status == RunStatus.WAITING:
                asks = await pending_asks(self.engine, run)
                if asks:
                    await updater.requires_input(self._say(updater, _waits_text(run, asks)))
                    return
            if self.engine.handle_of(run_id) is None:
                await asyncio.sleep(_POLL_S)  # a timer, or executed by another process

    async def _answer(self, run_id: str, message: Message,
                      context: RequestContext) -> str | None:
        """Deliver the answer a waiting run asked for; None when delivered, else why not."""


        try:
            run = await self.engine.store.get_run(run_id)
        except RunNotFound:
            return f"run {run_id} is gone"
        asks = await pending_asks(self.engine, run)
        if not asks:
            return None  # it went on meanwhile (answered elsewhere, timed out): say how
        parts = get_data_parts(message.parts)
        data = json_numbers(parts[0]) if parts else None
        text = get_message_text(message).strip()
        picked = _pick(asks, data)
        if isinstance(picked, str):
            return picked
        payload: Any
        if picked.kind == "approval":
            payload = _approval(data, text, _caller(context))
            if isinstance(payload, str):
                return payload
        else:
            payload = data.get("data") if isinstance(data, dict) and "signal" in data else (
                data if data is not None else text)
        try:
            _run, woken = await self.engine.signal(picked.run_id, picked.signal, payload)
        except PodiumError as exc:
            return f"{_problem_text(exc)}; still waiting for: {_waits_text(run, asks)}"
        if woken:
            with contextlib.suppress(RunHeld, RunNotFound):  # else another process goes on
                await self.engine.resume(picked.run_id)
        return None


def _pick(asks: list[_Ask], data: Any) -> _Ask | str:
    if isinstance(data, dict) and isinstance(data.get("signal"), str):
        found = [a for a in asks if a.kind == "signal" and a.signal == data["signal"]]
        return found[0] if found else (
            f"no step waits for signal '{data['signal']}'; waiting for: "
            + "; ".join(a.describe() for a in asks))
    if isinstance(data, dict) and isinstance(data.get("step"), str):
        found = [a for a in asks if a.step == data["step"]]
        return found[0] if found else (
            f"no step '{data['step']}' waits; waiting for: "
            + "; ".join(a.describe() for a in asks))
    if len(asks) == 1:
        return asks[0]
    return ("the run waits for several things; name one with \"step\" or \"signal\": "
            + "; ".join(a.describe() for a in asks))


def _approval(data: Any, text: str, by: str) -> dict[str, Any] | str:
    reason: Any = None
    extra: Any = {}
    if isinstance(data, dict) and isinstance(data.get("approved"), bool):
        approved = data["approved"]
        reason = data.get("reason")
        extra = data.get("data", {})
    elif data is None and text:
        word, _, rest = text.partition(" ")
        if word.lower() in _APPROVE:
            approved = True
        elif word.lower() in _REJECT:
            approved, reason = False, rest.strip() or None
        else:
            return f"'{text[:80]}' is neither approve nor reject (answer approve, or reject REASON)"
    else:
        return ("an approval needs {\"approved\": true|false} (or the text approve / reject"
                " REASON)")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 4096):
        return "\"reason\" must be a text of at most 4,096 characters"
    return {"approved": approved, "by": by, "data": extra,
            **({"reason": reason} if reason else {})}


def _caller(context: RequestContext) -> str:
    user = getattr(context.call_context, "user", None)
    name = getattr(user, "user_name", "") if user is not None else ""
    return f"a2a:{name}" if name else "a2a"


async def pending_asks(engine: Engine, run: RunRecord, depth: int = 0) -> list[_Ask]:
    """What a waiting run waits for from outside, its waiting sub-workflows' included."""
    from podium.definition.loader import workflow_from_dict

    plan = engine.plan(workflow_from_dict(run.definition))
    out: list[_Ask] = []
    for node in plan.nodes:
        rec = run.steps.get(node.id)
        if rec is None or rec.status != StepStatus.WAITING:
            continue
        wait = node.wait
        if wait is not None and wait.signal is not None:
            out.append(_Ask(run.run_id, node.id, "approval" if wait.kind == "approval"
                            else "signal", wait.signal))
        elif wait is None and depth < 8:  # a sub-workflow: its child run may wait
            with contextlib.suppress(RunNotFound):
                child = await engine.store.get_run(f"{run.run_id}.{node.id}")
                if child.status == RunStatus.WAITING:
                    out += await pending_asks(engine, child, depth + 1)
    return out


def _waits_text(run: RunRecord, asks: Iterable[_Ask]) -> str:
    return f"run {run.run_id} waits for " + "; and ".join(
        a.describe() + (f" in its sub-workflow run {a.run_id}" if a.run_id != run.run_id else "")
        for a in asks)


async def _report_end(run: RunRecord, updater: Any) -> None:

    say = WorkflowExecutor._say
    if run.status == RunStatus.SUCCEEDED:
        out = run.output
        part = new_text_part(out) if isinstance(out, str) else new_data_part(out)
        await updater.add_artifact([part], name="output")
        await updater.complete()
    elif run.status == RunStatus.CANCELLED:
        with contextlib.suppress(RuntimeError):  # cancel() reported it already
            await updater.cancel()
    else:
        err = run.error
        what = f"{err.type}: {err.message}" if err is not None else f"the run {run.status}"
        await updater.failed(say(updater, f"run {run.run_id} {run.status}: {what}"))


def _problem_text(exc: BaseException) -> str:
    if isinstance(exc, DefinitionError):
        return "; ".join(p.message + (f" ({p.hint})" if p.hint else "") for p in exc.problems)
    if isinstance(exc, PodiumError):
        return exc.message
    return str(exc)


async def cancel_run(engine: Engine, run_id: str) -> None:
    """Cancel the run behind a task, wherever it is; a run that ended stays as it is."""
    with contextlib.suppress(RunNotFound, RunHeld):
        run = await engine.store.get_run(run_id)
        if run.status not in TERMINAL_RUN_STATUSES:
            await engine.cancel(run_id, "the A2A task was cancelled")


class RunTaskStore(TaskStore):
    """The SDK's in-memory task store, with the run store behind it.

    A task the SDK no longer holds is made from its run; a task saved
    ``canceled`` while its run goes on cancels the run (the SDK cancels a task
    parked in ``input-required`` by writing that state, without calling the
    executor).

    Memory holds the ``held`` tasks last saved, within ``held_bytes``, each with its
    last ``_HISTORY_HELD`` messages: every message a client sends is kept in its task's
    history, so the SDK's store alone grew with every task and every message for as
    long as the server lived. A task let go is made again from its run when asked
    (its state and output, not its history), and is no longer listed.
    """

    def __init__(self, server: PodiumServer, workflow: Workflow, *, held: int = TASKS_HELD,
                 held_bytes: int = _HELD_BYTES) -> None:

        self._memory = InMemoryTaskStore()
        self._server = server
        self._workflow = workflow.name
        # Tasks this process began: the SDK holds them from their start (it asks for one
        # before its first save, when its run exists already but is no task to remake).
        self.started_here: set[str] = set()
        self.held, self.held_bytes = held, held_bytes
        # Task id -> (the context of its last save, which names its owner; its size),
        # oldest save first.
        self._held: OrderedDict[str, tuple[ServerCallContext, int]] = OrderedDict()
        self._bytes = 0

    async def save(self, task: Task, context: ServerCallContext) -> None:

        await self._hold(task, context)
        if task.status.state == TaskState.TASK_STATE_CANCELED:
            await cancel_run(self._server.engine, task.id)

    async def _hold(self, task: Task, context: ServerCallContext) -> None:
        if len(task.history) > _HISTORY_HELD:
            trimmed = Task()
            trimmed.CopyFrom(task)
            del trimmed.history[:len(task.history) - _HISTORY_HELD]
            task = trimmed
        await self._memory.save(task, context)
        size = task.ByteSize()
        before = self._held.pop(task.id, None)
        self._bytes += size - (before[1] if before is not None else 0)
        self._held[task.id] = (context, size)
        while len(self._held) > self.held or (self._bytes > self.held_bytes
                                              and len(self._held) > 1):
            old_id, (old_context, old_size) = self._held.popitem(last=False)
            self._bytes -= old_size
            self.started_here.discard(old_id)  # made from its run from now on
            await self._memory.delete(old_id, old_context)

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        task = await self._memory.get(task_id, context)
        if task is None:
            return await self._from_run(task_id)
        if task.status.state in (TaskState.TASK_STATE_INPUT_REQUIRED,
                                 TaskState.TASK_STATE_AUTH_REQUIRED):
            # Nothing follows a parked task: its run may have gone on meanwhile (approved
            # with podium approve, timed out, cancelled elsewhere). The run says.
            engine: Engine = self._server.engine
            try:
                run = await engine.store.get_run(task_id)
            except (RunNotFound, PodiumError):
                return task
            if run.status != RunStatus.WAITING:
                fresh = await _task_of(engine, run)
                updated = Task()
                updated.CopyFrom(task)
                updated.status.CopyFrom(fresh.status)
                if not updated.artifacts:
                    updated.artifacts.extend(fresh.artifacts)
                await self._hold(updated, context)
                return updated
        return task

    async def list(self, params: ListTasksRequest,
                   context: ServerCallContext) -> ListTasksResponse:
        return await self._memory.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        held = self._held.pop(task_id, None)
        if held is not None:
            self._bytes -= held[1]
        await self._memory.delete(task_id, context)

    async def _from_run(self, task_id: str) -> Task | None:

        if (task_id in self.started_here or not task_id.startswith(TASK_PREFIX)
                or "." in task_id or len(task_id) > 128):
            # The SDK's own (being made); or a run no A2A client started here (a CLI's,
            # the API's, a sub-workflow's): not a task of this agent, to read or to steer.
            return None
        engine: Engine = self._server.engine
        try:
            run = await engine.store.get_run(task_id)
        except (RunNotFound, PodiumError):
            return None
        if run.workflow != self._workflow:
            return None
        return await _task_of(engine, run)


async def _task_of(engine: Engine, run: RunRecord) -> Task:
    """The task a run stands for, as far as the run tells (no history)."""
    state = {
        RunStatus.SUCCEEDED: TaskState.TASK_STATE_COMPLETED,
        RunStatus.CANCELLED: TaskState.TASK_STATE_CANCELED,
        RunStatus.WAITING: TaskState.TASK_STATE_INPUT_REQUIRED,
        RunStatus.PENDING: TaskState.TASK_STATE_SUBMITTED,
        RunStatus.RUNNING: TaskState.TASK_STATE_WORKING,
    }.get(RunStatus(run.status), TaskState.TASK_STATE_FAILED)
    if state == TaskState.TASK_STATE_INPUT_REQUIRED and not await pending_asks(engine, run):
        state = TaskState.TASK_STATE_WORKING  # a timer: nobody needs to answer
    status = TaskStatus(state=state)
    status.timestamp.FromSeconds(int(run.finished_at or run.started_at or run.created_at
                                     or time.time()))
    task = Task(id=run.run_id, context_id=run.run_id, status=status)
    if run.status == RunStatus.SUCCEEDED:
        out = run.output
        task.artifacts.append(Artifact(
            artifact_id=f"{run.run_id}-output", name="output",
            parts=[new_text_part(out) if isinstance(out, str) else new_data_part(out)]))
    return task


TASK_PREFIX = "a2a-"  # a run an A2A client started; no other run is a task of this agent


class _RunIds(IDGenerator):
    """New tasks get new run ids: a task and its run are known by one id."""

    def generate(self, context: IDGeneratorContext) -> str:
        from podium.engine import new_run_id

        return TASK_PREFIX + new_run_id()


class _TaskIds(IDGenerator):
    """A new task's context, when the client names none, is known by the task's id: a
    task read back from its run after a restart has the same context id."""

    def generate(self, context: IDGeneratorContext) -> str:
        from podium.engine import new_run_id

        return context.task_id or new_run_id()


class _BearerGuard:
    """Every route but the card and ``/healthz`` needs ``Authorization: Bearer TOKEN``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in (_CARD_PATH, "/healthz"):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token):
            await self.app(scope, receive, send)
            return
        from podium.httpd import error_body

        body = error_body("missing or wrong bearer token (fix: send Authorization: Bearer"
                          " TOKEN; an a2a agent in the agents file takes token_env: NAME)")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(cfg: A2AConfig, url: str) -> Any:
    """The Starlette app: ``podium serve``'s server with the A2A routes; ``url`` is the
    address the card announces."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from podium.observe.metrics import CONTENT_TYPE
    from podium.server.app import PodiumServer, ServerConfig

    server = PodiumServer(ServerConfig(db=cfg.db, alerts_file=cfg.alerts_file,
                                       registry=cfg.registry,
                                       scan_interval_s=cfg.scan_interval_s))
    card = agent_card(cfg, cfg.public_url or url)
    tasks = RunTaskStore(server, cfg.workflow, held=cfg.tasks_held)
    executor = WorkflowExecutor(server, cfg, tasks)
    handler = DefaultRequestHandler(
        agent_executor=executor, task_store=tasks, agent_card=card,
        request_context_builder=SimpleRequestContextBuilder(task_id_generator=_RunIds(),
                                                            context_id_generator=_TaskIds()))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await executor.aclose()
                await handler.aclose()
            await server.stop()

    async def metrics(_request: Request) -> Response:
        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[*create_agent_card_routes(card),
                            *create_jsonrpc_routes(handler, rpc_url="/"),
                            Route("/metrics", metrics), Route("/healthz", healthz)],
                    lifespan=lifespan)
    app.state.podium = server
    app.state.a2a_handler = handler
    return _BearerGuard(app, cfg.token) if cfg.token is not None else app


def serve(cfg: A2AConfig, host: str = "127.0.0.1", port: int = 8090, *,
          allowed_hosts: Iterable[str] = (), limits: HttpLimits | None = None,
          log_level: str = "info", insecure_no_auth: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; every setup problem is raised before anything listens.

    Without a token, only a loopback address may be bound (``insecure_no_auth`` else).
    """
    from podium.httpd import (
        AllowedHosts,
        BodyLimit,
        HostGuard,
        HttpLimits,
        bind,
        check_allowed_hosts,
        check_host,
        check_log_level,
        check_port,
        url_of,
        uvicorn_config,
    )

    check_port(port, allow_zero=True)
    bare = check_host(host)
    check_log_level(log_level)
    allowed = check_allowed_hosts(allowed_hosts)
    import uvicorn

    from podium.server.app import check_database, is_loopback
    from podium.tuning import tune_gc

    if cfg.token is None and not is_loopback(bare) and not insecure_no_auth:
        from podium.errors import ConfigError

        raise ConfigError(f"--host {host}: no --token-env, so any program that reaches this"
                          " address could start runs (fix: --token-env NAME, or"
                          " --insecure-no-auth behind something that authenticates)")
    check_database(cfg.db)  # an unusable database: exit 3 now, not a traceback later
    limits = limits or HttpLimits()
    sock = bind(host, port)
    try:
        url = url_of(sock)
        app = create_app(cfg, url)
        guarded = HostGuard(BodyLimit(app, limits.max_body_bytes), AllowedHosts(host, sock,
                                                                               allowed))
        config = uvicorn_config(guarded, limits, log_level=log_level, lifespan="on")
        # A blocking send waits up to --answer-within: a stop does not wait for it.
        config.timeout_graceful_shutdown = 5
        server = uvicorn.Server(config)
        if cfg.token is None:
            log.warning("no --token-env, so any program that can reach %s may start runs of"
                        " '%s' (fix: --token-env NAME)", url, cfg.workflow.name)
        log.info("workflow '%s' served as an A2A agent on %s (card %s%s)", cfg.workflow.name,
                 url, url, _CARD_PATH)
        tune_gc()
        server.run(sockets=[sock])
    finally:
        sock.close()
