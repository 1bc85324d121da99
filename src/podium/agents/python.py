"""In-process Python agents: plain functions, sync or async.

Async functions are awaited on the engine's loop (no thread hop per step);
sync functions run in threads of their own agent (``_AgentThreads``) so a
blocking agent never stalls the scheduler.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import inspect
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from podium.agents.base import DEFAULT_MAX_RESPONSE_BYTES, AgentBase, HealthReport, Task
from podium.errors import ConfigError

__all__ = ["PythonAgent", "agent", "decorated_agents", "load_callable"]

F = TypeVar("F", bound=Callable[..., Any])

_DECORATED: dict[str, PythonAgent] = {}

# Threads of a sync agent without a max_concurrency: its calls at once beyond this wait.
UNBOUNDED_SYNC_THREADS = 64


class _AgentThreads:
    """The threads that run one sync agent's calls: as many as it may run at once.

    Not asyncio's default executor, for two reasons measured on a 2-core machine:
    that pool has ``cpu_count + 4`` threads (6), so 100 one-second steps allowed
    to run 100 at once took 17.7 s instead of ~10 s, each reporting 2 s; and its
    threads are joined when the loop and the interpreter shut down, so an attempt
    abandoned after its timeout (a thread cannot be stopped) kept a finished
    ``podium run`` alive until the function returned (21.8 s after a run that
    failed on two 1 s timeouts). These threads are daemons: they never hold up
    the exit of a process whose run is over. Threads start on demand and stay.
    """

    __slots__ = ("_idle", "_lock", "_name", "_size", "_started", "_work")

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._work: queue.SimpleQueue[tuple[concurrent.futures.Future[Any],
                                            Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._work.put((fut, fn))
        with self._lock:
            if self._idle == 0 and self._started < self._size:
                self._started += 1
                threading.Thread(target=self._serve, daemon=True,
                                 name=f"podium-agent:{self._name}:{self._started}").start()
            else:
                self._idle -= 1  # one idle thread takes this call
        return fut

    def _serve(self) -> None:
        while True:
            fut, fn = self._work.get()
            if fut.set_running_or_notify_cancel():  # False: cancelled while queued
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting step
                    fut.set_exception(exc)
            del fut, fn  # a finished call's data is not kept alive by an idle thread
            with self._lock:
                self._idle += 1


class PythonAgent(AgentBase):
    """Wraps a function ``f(task) -> output`` as an ``Agent``."""

    transport = "python"

    def __init__(
        self,
        func: Callable[[Task], Any],
        *,
        id: str,
        capabilities: frozenset[str] | set[str] | list[str] | tuple[str, ...] = (),
        max_concurrency: int | None = None,
        weight: float = 1.0,
        region: str | None = None,
        labels: dict[str, str] | None = None,
        health: Callable[[], Any] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(id=id, capabilities=capabilities, max_concurrency=max_concurrency,
                         weight=weight, region=region, labels=labels,
                         max_response_bytes=max_response_bytes)
        self._func = func
        self._health = health
        self._is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None)  # noqa: B004 - an async __call__ counts too
        )
        self._cpu = 0.0  # added to by worker threads, under the lock
        self._cpu_loop = 0.0  # added to by the event loop's thread only: no lock needed
        self._cpu_lock = threading.Lock()
        self._threads: _AgentThreads | None = None  # a sync agent's, made on first call

    @property
    def func(self) -> Callable[[Task], Any]:
        return self._func

    @property
    def cpu_seconds(self) -> float:
        """CPU time spent inside this agent's code so far (its threads and coroutine steps)."""
        return self._cpu + self._cpu_loop

    def _add_loop_cpu(self, seconds: float) -> None:
        self._cpu_loop += seconds

    def _add_cpu(self, seconds: float) -> None:
        with self._cpu_lock:
            self._cpu += seconds

    def _call_in_thread(self, task: Task) -> Any:
        t0 = time.thread_time()
        try:
            return self._func(task)
        finally:
            self._add_cpu(time.thread_time() - t0)

    async def invoke(self, task: Task) -> Any:
        if self._is_async:
            return await _CpuMeter(self._func(task), self._add_loop_cpu)
        threads = self._threads
        if threads is None:
            threads = self._threads = _AgentThreads(
                self._max_concurrency or UNBOUNDED_SYNC_THREADS, self._id)
        # Cancelled (the attempt timed out): a call still queued never runs; one that
        # runs already goes on in its thread, abandoned, and its result is dropped.
        result = await asyncio.wrap_future(threads.submit(lambda: self._call_in_thread(task)))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def health(self) -> HealthReport:
        if self._health is None:
            return HealthReport("healthy")
        result = self._health()
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, HealthReport):
            return result
        return HealthReport(result if result in ("healthy", "degraded", "unhealthy") else "unknown")

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"PythonAgent({self._id!r}, {sorted(self._capabilities)})"


class _CpuMeter:
    """Await a coroutine, adding up the time each of its steps holds the loop.

    The loop thread runs other tasks between steps, so timing the whole await
    would charge the agent for everybody's work; timing each ``send`` is exact.
    A step on the loop thread runs uninterrupted, so its wall time is its CPU
    time (plus any blocking call it makes, which holds the loop all the same);
    ``perf_counter`` reads it for ~60 ns where ``thread_time`` is a system call
    of ~800 ns, paid twice per step of every async agent.
    """

    __slots__ = ("_coro", "_sink")

    def __init__(self, coro: Any, sink: Callable[[float], None]) -> None:
        self._coro = coro
        self._sink = sink

    def __await__(self) -> Any:
        coro = self._coro
        value: Any = None
        error: BaseException | None = None
        clock = time.perf_counter
        while True:
            t0 = clock()
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                self._sink(clock() - t0)
                return stop.value
            except BaseException:
                self._sink(clock() - t0)
                raise
            self._sink(clock() - t0)
            try:
                value = yield yielded
                error = None
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as await does
                value, error = None, exc


def agent(
    capability: str,
    *more: str,
    id: str | None = None,
    max_concurrency: int | None = None,
    weight: float = 1.0,
    region: str | None = None,
) -> Callable[[F], F]:
    """Register a function as an agent for one or more capabilities.

    The function is returned unchanged (it stays callable and testable); the
    agent is kept in a process-wide list that registries load on request.
    """

    def wrap(func: F) -> F:
        agent_id = id or f"{func.__module__}.{func.__qualname__}"
        _DECORATED[agent_id] = PythonAgent(
            func,
            id=agent_id,
            capabilities=(capability, *more),
            max_concurrency=max_concurrency,
            weight=weight,
            region=region,
        )
        func.__podium_agent__ = _DECORATED[agent_id]  # type: ignore[attr-defined]
        return func

    return wrap


def decorated_agents() -> list[PythonAgent]:
    return list(_DECORATED.values())


def _import(module_name: str, base_dir: Path | None) -> Any:
    """Import a module, preferring a file that sits beside the config that names it.

    Two agents files in different folders may both say ``agents:collect``; a
    plain import would hand the second one the first folder's cached module.
    A module file found in ``base_dir`` is therefore loaded from that file, under
    a name unique to its path, unless the cached module already is that file.
    """
    if base_dir is not None:
        rel = Path(*module_name.split("."))
        candidate = base_dir / rel.with_suffix(".py")
        if not candidate.is_file():
            candidate = base_dir / rel / "__init__.py"
        if candidate.is_file():
            cached = sys.modules.get(module_name)
            if (
                cached is not None
                and Path(getattr(cached, "__file__", "") or "").resolve() == candidate.resolve()
            ):
                return cached
            if cached is None:
                if str(base_dir) not in sys.path:
                    sys.path.insert(0, str(base_dir))
                return importlib.import_module(module_name)
            unique = f"_podium_agents_{abs(hash(str(candidate.resolve())))}_{module_name}"
            if unique in sys.modules:
                return sys.modules[unique]
            spec = importlib.util.spec_from_file_location(unique, candidate)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {candidate}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            spec.loader.exec_module(module)
            return module
    return importlib.import_module(module_name)


def load_callable(
    path: str, *, base_dir: Path | None = None, where: str = ""
) -> Callable[..., Any]:
    """Import ``package.module:attr.attr``; ``base_dir`` lets files sit beside their config."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{where}{path!r} is not MODULE:FUNCTION (fix: write e.g. my_pkg.agents:collect)"
        )
    try:
        obj: Any = _import(module_name, base_dir)
    except ImportError as exc:
        raise ConfigError(
            f"{where}cannot import module '{module_name}' for {path!r}: {exc}"
            " (fix: install the package or check the module path)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any error while importing user code is reported
        raise ConfigError(
            f"{where}importing '{module_name}' failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{where}module '{module_name}' has no attribute '{attr}'"
                " (fix: check the name after ':')"
            ) from None
    if not callable(obj):
        raise ConfigError(f"{where}{path!r} is not callable")
    return cast(Callable[..., Any], obj)
