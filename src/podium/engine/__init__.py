"""The HOW: scheduling over the plan, retries, timeouts, cancellation."""

from podium.engine.engine import Engine, EngineConfig, RunHandle, check_agents, new_run_id
from podium.engine.retry import RetryState, backoff_delay, next_delay

__all__ = ["Engine", "EngineConfig", "RetryState", "RunHandle", "backoff_delay", "check_agents",
           "new_run_id", "next_delay"]
