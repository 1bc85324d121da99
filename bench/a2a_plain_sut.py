"""A plain a2a-sdk 1.x agent, the baseline for the A2A TCK (bench/a2a_tck.py).

It plays the part of the TCK's reference agents (python-sut/tck_core_agent
in the a2a-tck repository, written for a2a-sdk 0.x, and a2a-java's tck
module) with nothing but the SDK's own server stack: ``DefaultRequestHandler``
over an ``InMemoryTaskStore``, the card and JSON-RPC routes
(``create_agent_card_routes``, ``create_jsonrpc_routes``) in a Starlette app under uvicorn.

Every message (text, data or file parts alike) makes a task. As in the TCK's
reference agent (a2a-java's), ``execute`` enqueues the task (``submitted``),
moves it to ``working`` and returns, so even a blocking ``SendMessage``
answers with the task still ``working`` (a2a-sdk 1.x answers when ``execute``
returns); the TCK's tests of ``tasks/list``, history and cancel need exactly
that. The work goes on in the background and completes the task with a text
artifact ``--seconds`` later (2 s by default; 0: never, as a2a-java's agent).
A message with the task's ``taskId`` while it works is recorded in its history
(the SDK records a message only with the event that follows it, so ``execute``
emits ``working`` again). A message whose ``messageId`` starts with
``test-subscribe-message-id`` waits ``$RESUBSCRIBE_TIMEOUT_MS`` (3000) before
``working``, as a2a-java's agent does. ``tasks/get`` (with ``historyLength``),
``tasks/list`` and ``tasks/cancel`` are the SDK's. The card names ``localhost``
(the TCK fails a public card that names 127.0.0.1).

    python bench/a2a_plain_sut.py --port 9999                  # card says streaming
    python bench/a2a_plain_sut.py --port 9999 --no-streaming   # card says no streaming
    python bench/a2a_plain_sut.py --port 9999 --seconds 0      # tasks work until cancelled

Needs the ``a2a`` extra (a2a-sdk with its HTTP server, uvicorn).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

import uvicorn
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from starlette.applications import Starlette

SUBSCRIBE_PREFIX = "test-subscribe-message-id"


class PlainExecutor(AgentExecutor):
    """Answers every message with a task that is working when the answer goes out.

    ``execute`` makes the task (``submitted``), moves it to ``working`` and
    returns, as the TCK's reference agent (a2a-java's) does: a blocking
    ``SendMessage`` then answers with the task still working, and the TCK's
    tests of ``tasks/list``, ``tasks/get`` and ``tasks/cancel`` find it so. The
    work goes on in the background and completes the task with a text artifact
    ``seconds`` later (never, if ``seconds`` is 0).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running: dict[str, asyncio.Task[None]] = {}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        msg = context.message
        assert msg is not None
        task_id = str(context.task_id)
        if context.current_task is None:
            await event_queue.enqueue_event(new_task_from_user_message(msg))
        if msg.message_id.startswith(SUBSCRIBE_PREFIX):  # a2a-java's TCK agent waits so too
            await asyncio.sleep(float(os.environ.get("RESUBSCRIBE_TIMEOUT_MS", "3000")) / 1000)
        # A follow-up naming only the task gets a fresh context_id from the SDK:
        # the task's own is the one its events must carry.
        current = context.current_task
        context_id = current.context_id if current is not None else str(context.context_id)
        updater = TaskUpdater(event_queue, task_id, context_id)
        # Also for a second message to a task still working: the SDK puts a
        # message in the task's history only with the event that follows it.
        await updater.start_work()
        if self.seconds > 0 and task_id not in self.running:
            text = get_message_text(msg, delimiter=" ") or "(no text)"
            work = asyncio.create_task(self._finish(updater, text))
            self.running[task_id] = work
            work.add_done_callback(lambda _: self.running.pop(task_id, None))

    async def _finish(self, updater: TaskUpdater, text: str) -> None:
        await asyncio.sleep(self.seconds)
        with contextlib.suppress(Exception):  # cancelled or gone meanwhile
            await updater.add_artifact([new_text_part(f"Hello World! You said: {text!r}")],
                                       name="response")
            await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        work = self.running.pop(str(context.task_id), None)
        if work is not None:
            work.cancel()
        current = context.current_task
        context_id = current.context_id if current is not None else str(context.context_id)
        await TaskUpdater(event_queue, str(context.task_id), context_id).cancel()


def card(url: str, *, streaming: bool) -> AgentCard:
    return AgentCard(
        name="Plain A2A agent",
        description="A plain a2a-sdk agent: the baseline for the A2A TCK.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url + "/", protocol_binding="JSONRPC", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=streaming, push_notifications=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="Echo", description="Answers what it was told.",
                           tags=["tck"], examples=["hello"])],
    )


def app(url: str, *, streaming: bool = True, seconds: float = 2.0) -> Starlette:
    the_card = card(url, streaming=streaming)
    handler = DefaultRequestHandler(agent_executor=PlainExecutor(seconds),
                                    task_store=InMemoryTaskStore(), agent_card=the_card)
    return Starlette(routes=[*create_agent_card_routes(the_card),
                             *create_jsonrpc_routes(handler, rpc_url="/")])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=9999)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--no-streaming", action="store_true",
                   help="declare capabilities.streaming false on the card")
    p.add_argument("--seconds", type=float, default=2.0,
                   help="how long a task takes from submitted to completed")
    p.add_argument("--card-host", default="localhost",
                   help="host in the card's interface URL (the TCK fails a card naming 127.0.0.1)")
    a = p.parse_args()
    url = f"http://{a.card_host}:{a.port}"
    uvicorn.run(app(url, streaming=not a.no_streaming, seconds=a.seconds),
                host=a.host, port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
